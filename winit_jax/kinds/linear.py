"""Linear maps: Linear, LinearGeneral, Conv, ConvTranspose, Embedding.

Layouts (torch -> Flax):

- Linear: weight (out, in) -> kernel (in, out).
- LinearGeneral (a porter's multi-head projection written as one torch Linear): weight
  (prod(out), prod(in)) -> kernel (*in, *out), bias (prod(out),) -> (*out); no batch axes.
- Einsum (``"...d,dhk->...hk"``, the same projection as an einsum): torch's weight, its
  output features the einsum's output axes in the output's order and its input features
  the contracted axes in the input's order, laid out as the kernel's letters say.
- Conv{1,2,3}d, groups g: (out, in/g, *k) -> (*k, in/g, out); both cross-correlate, no flip.
- ConvTranspose{1,2,3}d: (in, out, *k) -> (*k, out, in) for ``transpose_kernel=True`` (Flax
  flips and swaps itself), or, for the default ``transpose_kernel=False``, the spatially
  flipped (*k, in, out): torch's transposed convolution is the gradient of a convolution.
- Embedding: weight -> embedding, same layout.

torch's draws (``reset_parameters``): Linear and Conv weight and bias U(+-1/sqrt(fan_in))
(``kaiming_uniform_(a=sqrt(5))``: gain sqrt(1/3), bound gain sqrt(3/fan_in)), fan_in =
in/g x prod(kernel) for a convolution; ConvTranspose the same with torch's fan from dim 1 of
its (in, out/g, *k) weight, i.e. out/g x prod(kernel); Embedding N(0, 1).
"""

from __future__ import annotations

import math

import numpy as np
from flax import nnx

from winit_jax.initializers import variance_scaling
from winit_jax.kinds._base import (
    Kind,
    ParityError,
    channels_first,
    contiguous,
    np_copy,
    register,
    value,
)
from winit_jax.torch_draws import constant, torch_linear_bias, torch_linear_kernel


def _bias(out, source):
    """``out`` with the source layer's bias (torch's or nnx's), if it has one."""
    if getattr(source, "bias", None) is not None:
        b = source.bias
        out["bias"] = np_copy(b) if hasattr(b, "detach") else value(b)
    return out


# --- HF transformers' Conv1D: a Linear whose weight is already (in, out) ---------------------

def _conv1d_to_flax(t, f):
    return _bias({"kernel": np_copy(t.weight)}, t)


def _conv1d_to_torch(f, t):
    return _bias({"weight": value(f.kernel)}, f)


def _conv1d_init(layer):
    """``Conv1D.__init__``: the weight N(0, 0.02), the bias zero (transformers'
    pytorch_utils.Conv1D)."""
    out = {"kernel": variance_scaling(0.02 ** 2, "none", "normal")}
    if layer.bias is not None:
        out["bias"] = constant(0.0)
    return out


# Matched only once transformers is imported (the class path is optional: nothing imports
# transformers for it), so GPT-2-style ports pair with no registration. Registered before
# Linear, so that where only an nnx.Linear is known (torch_like.init without a torch
# module) Linear's rule, the later built-in, comes first.
CONV1D = register(Kind(
    "Conv1D", ("?transformers.pytorch_utils.Conv1D",), (nnx.Linear,), _conv1d_to_flax,
    _conv1d_to_torch, init=_conv1d_init, linear_map=True,
    hint="HF's Conv1D holds its weight as (in, out), already Flax's layout: no transpose"))


# --- Linear ---------------------------------------------------------------------------------

def _linear_to_flax(t, f):
    return _bias({"kernel": np_copy(t.weight).T}, t)


def _linear_to_torch(f, t):
    return _bias({"weight": value(f.kernel).T}, f)


def _linear_init(layer):
    fan_in = int(np.prod(layer.kernel.get_value().shape[:-1]))
    out = {"kernel": torch_linear_kernel()}
    if layer.bias is not None:
        out["bias"] = torch_linear_bias(fan_in)
    return out


LINEAR = register(Kind(
    "Linear", ("torch.nn.Linear",), (nnx.Linear,), _linear_to_flax, _linear_to_torch,
    init=_linear_init, linear_map=True,
    hint='the weight transposed (torch (out, in), Flax (in, out)), the bias'))


# --- LinearGeneral: one torch Linear as an (*in) -> (*out) kernel ----------------------------

def _general_axes(f):
    if f.batch_axis:
        raise ParityError("LinearGeneral with batch_axis has no torch Linear twin")
    return len(f.in_features), len(f.out_features)


def _reshaped(a, shape):
    """``a`` in ``shape``, or as it is when the sizes differ (the fit check names the shapes)."""
    return a.reshape(shape) if a.size == math.prod(shape) else a


def _general_to_flax(t, f):
    _general_axes(f)
    out = {"kernel": _reshaped(np_copy(t.weight).T, tuple(f.in_features) + tuple(f.out_features))}
    if t.bias is not None:
        out["bias"] = _reshaped(np_copy(t.bias), tuple(f.out_features))
    return out


def _general_to_torch(f, t):
    n_in, _ = _general_axes(f)
    k = value(f.kernel)
    out = {"weight": k.reshape(math.prod(k.shape[:n_in]), -1).T}
    if f.bias is not None:
        out["bias"] = value(f.bias).reshape(-1)
    return out


def _general_init(layer):
    n_in, n_out = _general_axes(layer)
    ins, outs = tuple(range(n_in)), tuple(range(n_in, n_in + n_out))
    out = {"kernel": torch_linear_kernel(in_axis=ins, out_axis=outs)}
    if layer.bias is not None:
        out["bias"] = torch_linear_bias(math.prod(layer.in_features))
    return out


def _general_activation(x, layer, which):
    """(..., *features) -> (..., prod(features)), as torch's Linear sees it."""
    n = len(layer.in_features if which == "input" else layer.out_features)
    x = np.asarray(x)
    return x.reshape(x.shape[:x.ndim - n] + (-1,))


LINEAR_GENERAL = register(Kind(
    "LinearGeneral", ("torch.nn.Linear",), (nnx.LinearGeneral,), _general_to_flax,
    _general_to_torch, init=_general_init, linear_map=True,
    activation_to_torch=_general_activation,
    hint='the axes split ((in) -> (heads, head_dim)) and their order'))


# --- Einsum: one torch Linear as a kernel the einsum contracts -------------------------------

def _einsum_axes(f):
    """(kernel letters, contracted letters in the input's order, output letters in the
    output's order, sizes): the Linear the kernel is. Refuses a kernel with batch letters."""
    if not f.einsum_str:
        raise ParityError("Einsum without einsum_str (given per call) has no fixed torch twin")
    lhs, rhs = f.einsum_str.replace(" ", "").split("->")
    inp, ker = lhs.split(",")
    ins = [c for c in inp if c in ker and c not in rhs]
    outs = [c for c in rhs if c in ker]
    if sorted(ins + outs) != sorted(ker):
        raise ParityError(f"Einsum {f.einsum_str!r}: a kernel letter is neither contracted nor "
                          "an output axis; no torch Linear computes it")
    sizes = dict(zip(ker, f.kernel.get_value().shape))
    return ker, ins, outs, sizes


def _einsum_to_flax(t, f):
    ker, ins, outs, sizes = _einsum_axes(f)
    w = np_copy(t.weight)  # (prod out, prod in)
    grouped = (tuple(sizes[c] for c in outs), tuple(sizes[c] for c in ins))
    if w.shape != (math.prod(grouped[0]), math.prod(grouped[1])):
        return {"kernel": w}  # the fit check names the shapes
    w = w.reshape(grouped[0] + grouped[1])
    order = outs + ins
    out = {"kernel": contiguous(w.transpose([order.index(c) for c in ker]))}
    if t.bias is not None:
        b = np_copy(t.bias)
        shape = tuple(f.bias.get_value().shape) if f.bias is not None else b.shape
        out["bias"] = _reshaped(b, shape)
    return out


def _einsum_to_torch(f, t):
    ker, ins, outs, sizes = _einsum_axes(f)
    k = value(f.kernel).transpose([ker.index(c) for c in outs + ins])
    out = {"weight": k.reshape(math.prod(sizes[c] for c in outs), -1)}
    if f.bias is not None:
        out["bias"] = value(f.bias).reshape(-1)
    return out


def _einsum_init(layer):
    ker, ins, outs, sizes = _einsum_axes(layer)
    out = {"kernel": torch_linear_kernel(in_axis=tuple(ker.index(c) for c in ins),
                                         out_axis=tuple(ker.index(c) for c in outs))}
    if layer.bias is not None:
        out["bias"] = torch_linear_bias(math.prod(sizes[c] for c in ins))
    return out


def _einsum_activation(x, layer, which):
    """The trailing contracted (input) or output axes flattened, as torch's Linear sees them."""
    _, ins, outs, _ = _einsum_axes(layer)
    n = len(ins if which == "input" else outs)
    x = np.asarray(x)
    return x.reshape(x.shape[:x.ndim - n] + (-1,))


EINSUM = register(Kind(
    "Einsum", ("torch.nn.Linear",), (nnx.Einsum,), _einsum_to_flax, _einsum_to_torch,
    init=_einsum_init, linear_map=True, activation_to_torch=_einsum_activation,
    hint='the einsum string and which axes it contracts'))


# --- Conv -----------------------------------------------------------------------------------

def _conv_perm(nd):
    return tuple(range(2, 2 + nd)) + (1, 0)  # (out, in, *k) -> (*k, in, out)


def _conv_to_flax(t, f):
    if getattr(t, "padding_mode", "zeros") != "zeros":
        raise ParityError(f"{t.__class__.__name__}(padding_mode={t.padding_mode!r}): nnx.Conv pads "
                          "with zeros only; pad the input explicitly in the port (jnp.pad "
                          "mode='reflect'/'edge'/'wrap') and use padding='VALID'")
    w = np_copy(t.weight)
    return _bias({"kernel": w.transpose(_conv_perm(w.ndim - 2))}, t)


def _conv_to_torch(f, t):
    k = value(f.kernel)
    nd = k.ndim - 2
    return _bias({"weight": k.transpose((nd + 1, nd) + tuple(range(nd)))}, f)


CONV = register(Kind(
    "Conv", ("torch.nn.Conv1d", "torch.nn.Conv2d", "torch.nn.Conv3d"), (nnx.Conv,),
    _conv_to_flax, _conv_to_torch,
    # Flax (*k, in/g, out): default axes give fan_in = prod(k) in/g, torch's
    init=_linear_init, linear_map=True, activation_to_torch=channels_first,
    hint='padding (torch pads explicitly; Flax "SAME" pads an even size asymmetrically), strides, dilation, feature_group_count, the kernel transposed'))


# --- ConvTranspose --------------------------------------------------------------------------

def _convt_to_flax(t, f):
    if getattr(t, "padding_mode", "zeros") != "zeros":
        raise ParityError(f"{t.__class__.__name__}(padding_mode={t.padding_mode!r}) is not supported")
    w = np_copy(t.weight)  # (in, out, *k)
    nd = w.ndim - 2
    if f.transpose_kernel:  # Flax flips and swaps: (*k, out, in), as torch stores it
        k = w.transpose(_conv_perm(nd))
    else:  # (*k, in, out), spatially flipped
        k = np.flip(w, axis=tuple(range(2, 2 + nd))).transpose(tuple(range(2, 2 + nd)) + (0, 1))
    return _bias({"kernel": contiguous(k)}, t)


def _convt_to_torch(f, t):
    if f.transpose_kernel:  # the inverse of _conv_perm, as for a convolution
        return _conv_to_torch(f, t)
    k = value(f.kernel)
    nd = k.ndim - 2
    w = np.flip(k.transpose((nd, nd + 1) + tuple(range(nd))), axis=tuple(range(2, 2 + nd)))
    return _bias({"weight": contiguous(w)}, f)


def _convt_init(layer):
    shape = layer.kernel.get_value().shape
    # torch's fan: out/g x prod(k), from dim 1 of its (in, out/g, *k) weight. Flax's kernel is
    # (*k, in, out), or (*k, out, in) with transpose_kernel.
    out_axis_flax = -2 if layer.transpose_kernel else -1
    fan = int(np.prod(shape[:-2])) * shape[out_axis_flax]
    kernel = (torch_linear_kernel(in_axis=-2, out_axis=-1) if layer.transpose_kernel
              else torch_linear_kernel(in_axis=-1, out_axis=-2))
    out = {"kernel": kernel}
    if layer.bias is not None:
        out["bias"] = torch_linear_bias(fan)
    return out


CONV_TRANSPOSE = register(Kind(
    "ConvTranspose", ("torch.nn.ConvTranspose1d", "torch.nn.ConvTranspose2d",
                      "torch.nn.ConvTranspose3d"), (nnx.ConvTranspose,),
    _convt_to_flax, _convt_to_torch, init=_convt_init, linear_map=True,
    activation_to_torch=channels_first,
    hint='padding, output_padding, transpose_kernel and the spatial flip'))


# --- Embedding ------------------------------------------------------------------------------

EMBEDDING = register(Kind(
    "Embedding", ("torch.nn.Embedding",), (nnx.Embed,),
    lambda t, f: {"embedding": np_copy(t.weight)},
    lambda f, t: {"weight": value(f.embedding)},
    init=lambda layer: {"embedding": variance_scaling(1.0, "none", "normal")}))
