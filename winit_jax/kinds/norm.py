"""Normalisations: LayerNorm, GroupNorm, RMSNorm, BatchNorm.

torch weight -> Flax scale, bias -> bias, running_mean/var -> mean/var (BatchNorm's
``num_batches_tracked`` has no Flax twin and is left alone). torch draws weight 1, bias 0,
running mean 0 and running var 1. nnx keeps BatchNorm statistics in float32 whatever
its ``param_dtype``.
"""

from __future__ import annotations

from flax import nnx

from winit_jax.kinds._base import Kind, channels_first, np_copy, register, value
from winit_jax.torch_draws import constant

_NAMES = (("weight", "scale"), ("bias", "bias"), ("running_mean", "mean"), ("running_var", "var"))


def _to_flax(t, f):
    # every tensor torch has; the pairing's fit check refuses a tensor only one side holds
    return {fn: np_copy(getattr(t, tn)) for tn, fn in _NAMES if getattr(t, tn, None) is not None}


def _to_torch(f, t):
    return {tn: value(getattr(f, fn)) for tn, fn in _NAMES if getattr(f, fn, None) is not None}


def _affine(layer):
    out = {}
    if getattr(layer, "scale", None) is not None:
        out["scale"] = constant(1.0)
    if getattr(layer, "bias", None) is not None:
        out["bias"] = constant(0.0)
    return out


def _batch_norm_init(layer):
    return {**_affine(layer), "mean": constant(0.0), "var": constant(1.0)}


def _settings(t, f) -> str:
    """The two layers' own epsilon and variance settings, as a hint reads them."""
    torch_eps = getattr(t, "eps", getattr(t, "variance_epsilon", None))
    port_eps = getattr(f, "epsilon", None)
    text = f"epsilon (torch's {torch_eps!r}, the port's {port_eps!r})"
    if getattr(f, "use_fast_variance", False):
        text += ", use_fast_variance=False (the port's is True: a one-pass variance)"
    return text


def _hint(more: str):
    def hint(t, f):
        return f"{_settings(t, f)}, {more}"
    return hint


def _batch_norm_hint(t, f):
    torch_m, port_m = getattr(t, "momentum", None), getattr(f, "momentum", None)
    return (f"{_settings(t, f)}, momentum (torch's {torch_m!r} is Flax's "
            f"{None if torch_m is None else round(1 - torch_m, 6)!r}; the port's {port_m!r}), "
            "train/eval mode")


_HINT = _hint("the normalised axes")
LAYER_NORM = register(Kind("LayerNorm", ("torch.nn.LayerNorm",), (nnx.LayerNorm,), _to_flax,
                           _to_torch, init=_affine, hint=_HINT))
GROUP_NORM = register(Kind("GroupNorm", ("torch.nn.GroupNorm",), (nnx.GroupNorm,), _to_flax,
                           _to_torch, init=_affine, activation_to_torch=channels_first,
                           hint=_hint("num_groups, the normalised axes")))
# HF's own RMSNorm classes compute torch.nn.RMSNorm's x / sqrt(mean(x^2) + eps) * weight (in
# float32, cast back), eps as ``variance_epsilon``; matched once transformers has imported
# them. Gemma's (x * (1 + weight)) is another function and is not listed.
_HF_RMS_NORMS = tuple(f"?transformers.models.{m}.modeling_{m}.{c}RMSNorm" for m, c in (
    ("llama", "Llama"), ("mistral", "Mistral"), ("qwen2", "Qwen2"), ("qwen3", "Qwen3")))
RMS_NORM = register(Kind("RMSNorm", ("torch.nn.RMSNorm", *_HF_RMS_NORMS), (nnx.RMSNorm,),
                         _to_flax, _to_torch, init=_affine,
                         hint=_hint("the statistics' dtype (torch's default epsilon None is "
                                    "the dtype's eps)")))
BATCH_NORM = register(Kind(
    "BatchNorm", ("torch.nn.BatchNorm1d", "torch.nn.BatchNorm2d", "torch.nn.BatchNorm3d"),
    (nnx.BatchNorm,), _to_flax, _to_torch, init=_batch_norm_init,
    activation_to_torch=channels_first, batch_stats={"running_mean": "mean", "running_var": "var"},
    hint=_batch_norm_hint))
