"""Initialise any ``flax.nnx`` model exactly as PyTorch would.

``init(model, key)`` walks the model and redraws, in place, every parameter and batch
statistic of every layer it knows, as the ``reset_parameters()`` of the matching torch
layer draws them: same distribution, same fans, same bounds. Flax's defaults are not
torch's (flax issues #3125, #3019, #4091): a ported model trained from Flax's defaults is a
different experiment.

torch's rules (from each layer's ``reset_parameters``), in Flax's layouts:

==========================  ===================================================================
torch layer                 torch's draw, and the fan it uses
==========================  ===================================================================
Linear(in, out)             weight and bias U(+-1/sqrt(in)) (``kaiming_uniform_(a=sqrt(5))``)
Conv{1,2,3}d, groups g      weight and bias U(+-1/sqrt(fan)), fan = in/g x prod(kernel)
ConvTranspose{1,2,3}d       weight and bias U(+-1/sqrt(fan)), fan = out/g x prod(kernel): torch
                            takes the fan from dim 1 of its (in, out/g, *k) weight
Embedding                   N(0, 1); a ``padding_idx`` row is 0
LayerNorm, GroupNorm        weight 1, bias 0
RMSNorm                     weight 1
BatchNorm                   weight 1, bias 0, running mean 0, running var 1
MultiheadAttention(E)       in_proj (3E, E): ``xavier_uniform_`` of the packed matrix, so
                            Var = 2 / (E + 3E); biases 0; out_proj: the Linear default
LSTM / GRU (hidden h)       every weight and bias U(+-1/sqrt(h)); torch adds b_ih + b_hh
==========================  ===================================================================

What Flax's cells cannot hold: Flax's LSTM cells and the GRU's r and z gates have one bias
where torch adds two, so that bias is drawn as the sum of two U(+-1/sqrt(h)) (a triangular
law: the bias the gate effectively adds). The GRU's n gate computes
tanh(W_in x + b_in + r * (W_hn h + b_hn)) in torch and tanh(W_in x + b_in + r * W_hn h) in
``nnx.GRUCell``: b_hn has no place in Flax's cell, so b_in alone is drawn and b_hn is absent
(a port must add it to match torch's computation, not only its init).

Every rule is a plain ``init(key, shape, dtype)`` on the ``variance_scaling`` core (or a
constant), usable as ``kernel_init=`` too; a recipe (torchvision's ResNet, ViT, ConvNeXt)
is data: ``overrides`` keyed by layer type or path.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import logging
import math
import zlib
from collections.abc import Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from winit_jax.initializers import (_prepare, _variance_scaling, check_sigma, torch_linear_bias,
                                    torch_linear_kernel, variance_scaling)

log = logging.getLogger(__name__)

Initializer = Callable  # (key, shape, dtype) -> jax.Array


# --- plain initialisers ---------------------------------------------------------------

def constant(value: float):
    """``torch.nn.init.constant_``: every entry ``value`` (ones/zeros of the norms)."""
    def init(key, shape, dtype=None, out_sharding=None):
        shape, dtype, _ = _prepare(shape, dtype)
        return jnp.full(shape, value, dtype)
    return init


def trunc_normal(std: float = 1.0, a: float = -2.0, b: float = 2.0, mean: float = 0.0,
                 dtype=None):
    """``torch.nn.init.trunc_normal_(w, mean, std, a, b)``: N(mean, std^2) cut at the
    **absolute** bounds [a, b] (flax #4091), not at a number of standard deviations.

    With ViT's ``std=0.02`` and torch's default ``a=-2, b=2`` the cut is at 100 standard
    deviations, i.e. no cut at all; ``jax.nn.initializers.truncated_normal(0.02)`` cuts at
    2 standard deviations (+-0.04) and then has a smaller variance. The returned weights'
    std is that of the cut law, as in torch (not rescaled to ``std``).

    Examples:
      >>> import jax
      >>> w = trunc_normal(0.02)(jax.random.key(0), (256, 256))
      >>> bool(abs(float(w.std()) - 0.02) < 0.001)
      True
    """
    std = check_sigma(std, "std")
    if not (math.isfinite(a) and math.isfinite(b) and a < b):
        raise ValueError(f"trunc_normal needs finite bounds a < b, got a={a!r}, b={b!r}")

    def init(key, shape, dtype=dtype, out_sharding=None):
        shape, dtype, work = _prepare(shape, dtype, allow_complex=False)
        z = jax.random.truncated_normal(key, (a - mean) / std, (b - mean) / std, shape, work)
        return (z * jnp.asarray(std, work) + jnp.asarray(mean, work)).astype(dtype)
    return init


def kaiming_normal(mode: str = "fan_in", nonlinearity_gain_sq: float = 2.0,
                   in_axis=-2, out_axis=-1, batch_axis=(), dtype=None):
    """``torch.nn.init.kaiming_normal_(w, mode=mode)``, **untruncated**, in Flax's layout
    (``jax.nn.initializers.he_normal`` is truncated). ``nonlinearity_gain_sq`` is the
    square of torch's ``calculate_gain``: 2 for ReLU."""
    if mode not in ("fan_in", "fan_out"):
        raise ValueError(f"mode must be 'fan_in' or 'fan_out', got {mode!r}")
    return variance_scaling(nonlinearity_gain_sq, mode, "normal", in_axis, out_axis, batch_axis,
                            dtype)


def packed_xavier_uniform(n_packed: int = 3, in_axis=-3, out_axis=(-2, -1), dtype=None):
    """``xavier_uniform_`` of torch's packed (n E, E) in-projection, for one Flax
    projection kernel (E, heads, head_dim): Var = 2 / (E + n E), not 2 / (E + E).

    For a kernel with fans (f_in, f_out) the packed matrix has (f_in, n f_out), so the
    variance is 2 / (f_in + n f_out) = scale / ((f_in + f_out) / 2) with
    scale = (f_in + f_out) / (f_in + n f_out).
    """
    def init(key, shape, dtype=dtype, out_sharding=None):
        from winit_jax.initializers import compute_fans
        f_in, f_out = compute_fans(shape, in_axis, out_axis)
        scale = (f_in + f_out) / (f_in + n_packed * f_out)
        return variance_scaling(scale, "fan_avg", "uniform", in_axis, out_axis)(
            key, shape, dtype, out_sharding)
    return init


def uniform_sum(bound: float, terms: int = 2, dtype=None):
    """The sum of ``terms`` independent U(-bound, bound): torch's b_ih + b_hh, for a Flax
    cell that holds one bias where torch adds two (Var = terms bound^2 / 3)."""
    bound = check_sigma(bound, "bound")

    def init(key, shape, dtype=dtype, out_sharding=None):
        keys = jax.random.split(key, terms)
        one = _variance_scaling(bound * bound / 3, "none", "uniform", -2, -1, (), dtype,
                                allow_complex=False)
        return sum(one(k, shape) for k in keys)
    return init


def _rnn_uniform(hidden: int):
    """U(+-1/sqrt(hidden)): every weight of torch's RNN, LSTM and GRU."""
    return _variance_scaling(1.0 / (3.0 * hidden), "none", "uniform", -2, -1, (), None,
                             allow_complex=False)


# --- the rules: layer -> {variable path inside the layer: initialiser} -------------------

def _linear(layer):
    fan_in = int(np.prod(_shape(layer.kernel)[:-1]))
    out = {"kernel": torch_linear_kernel()}
    if layer.bias is not None:
        out["bias"] = torch_linear_bias(fan_in)
    return out


def _conv(layer):
    # Flax (*k, in/g, out): default axes give fan_in = prod(k) in/g, torch's.
    return _linear(layer)


def _conv_transpose(layer):
    shape = _shape(layer.kernel)
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


def _embed(layer):
    return {"embedding": variance_scaling(1.0, "none", "normal")}


def _norm(layer):
    out = {}
    if getattr(layer, "scale", None) is not None:
        out["scale"] = constant(1.0)
    if getattr(layer, "bias", None) is not None:
        out["bias"] = constant(0.0)
    return out


def _batch_norm(layer):
    return {**_norm(layer), "mean": constant(0.0), "var": constant(1.0)}


def _attention(layer):
    same = all(getattr(layer, n).in_features == layer.query.in_features
               for n in ("key", "value"))
    # one packed (3E, E) matrix when q, k, v take the same width; else three (E, d) ones
    proj = packed_xavier_uniform(3 if same else 1, in_axis=0, out_axis=(1, 2))
    out = {}
    for name in ("query", "key", "value"):
        out[f"{name}/kernel"] = proj
        if getattr(layer, name).bias is not None:
            out[f"{name}/bias"] = constant(0.0)
    # out_proj: the Linear default on (H, D, E_out): fan_in = H D
    out["out/kernel"] = torch_linear_kernel(in_axis=(0, 1), out_axis=2)
    if layer.out.bias is not None:
        out["out/bias"] = constant(0.0)
    return out


def _lstm(layer):
    h = layer.hidden_features
    out = {}
    for path, sub in _linears(layer):
        out[f"{path}/kernel"] = _rnn_uniform(h)
        if sub.bias is not None:  # the bias torch splits in two: b_ih + b_hh
            out[f"{path}/bias"] = uniform_sum(1 / math.sqrt(h))
    return out


def _gru(layer):
    h = layer.hidden_features
    out = {"dense_i/kernel": _rnn_uniform(h), "dense_h/kernel": _rnn_uniform(h)}
    if layer.dense_i.bias is not None:
        out["dense_i/bias"] = _gru_bias(h)
    return out


def _gru_bias(hidden: int):
    """dense_i's (3h,) bias: r and z are b_i + b_h (two uniforms), n is b_in alone."""
    two, one = uniform_sum(1 / math.sqrt(hidden)), _rnn_uniform(hidden)

    def init(key, shape, dtype=None, out_sharding=None):
        k1, k2 = jax.random.split(key)
        rz = two(k1, (2 * hidden,), dtype)
        n = one(k2, (hidden,), dtype)
        return jnp.concatenate([rz, n]).reshape(shape)
    return init


RULES: dict[type, Callable] = {
    nnx.Linear: _linear,
    nnx.Conv: _conv,
    nnx.ConvTranspose: _conv_transpose,
    nnx.Embed: _embed,
    nnx.LayerNorm: _norm,
    nnx.GroupNorm: _norm,
    nnx.RMSNorm: _norm,
    nnx.BatchNorm: _batch_norm,
    nnx.MultiHeadAttention: _attention,
    nnx.LSTMCell: _lstm,
    nnx.OptimizedLSTMCell: _lstm,
    nnx.GRUCell: _gru,
}
# Composite layers: their rule covers their submodules.
COMPOSITE = (nnx.MultiHeadAttention, nnx.LSTMCell, nnx.OptimizedLSTMCell, nnx.GRUCell)


# --- recipes: data for ``init(..., overrides=...)`` ---------------------------------------

def resnet_recipe(*, zero_init_residual: bool = False) -> dict:
    """torchvision's ResNet: ``kaiming_normal_(mode="fan_out", nonlinearity="relu")`` on every
    convolution (untruncated), BatchNorm weight 1 and bias 0 (the rule's default), fc the
    Linear default; ``zero_init_residual`` zeroes each block's last BatchNorm weight
    (``bn2``, or ``bn3`` in a Bottleneck)."""
    recipe: dict = {nnx.Conv: {"kernel": kaiming_normal("fan_out")}}
    if zero_init_residual:
        recipe["*/bn2"] = recipe["*/bn3"] = {"scale": constant(0.0), "bias": constant(0.0),
                                             "mean": constant(0.0), "var": constant(1.0)}
    return recipe


def vit_recipe(head: str = "head*") -> dict:
    """ViT (timm / torchvision style): Linear weights ``trunc_normal_(std=0.02)`` with
    torch's absolute bounds (+-2: no cut in practice), biases 0, LayerNorm 1/0, the
    classification head (modules matching ``head``) all zero."""
    return {nnx.Linear: {"kernel": trunc_normal(0.02), "bias": constant(0.0)},
            head: {"kernel": constant(0.0), "bias": constant(0.0)}}


def convnext_recipe() -> dict:
    """torchvision's ConvNeXt: Conv and Linear weights ``trunc_normal_(std=0.02)``, biases 0."""
    rule = {"kernel": trunc_normal(0.02), "bias": constant(0.0)}
    return {nnx.Conv: rule, nnx.Linear: rule}


# --- the walker ------------------------------------------------------------------------

def _shape(var):
    return tuple(var.get_value().shape)


def _linears(layer):
    return [("/".join(map(str, p)), m) for p, m in nnx.iter_modules(layer)
            if p and isinstance(m, nnx.Linear)]


def _own_variables(module) -> dict[str, nnx.Variable]:
    """The Variables a module holds itself (not through submodules)."""
    return {k: v for k, v in vars(module).items() if isinstance(v, nnx.Variable)}


def _rule_for(module) -> Callable | None:
    for cls in type(module).__mro__:
        if cls in RULES:
            return RULES[cls]
    return None


def _lookup(tree, path: str):
    obj = tree
    for part in path.split("/"):
        obj = obj[int(part)] if isinstance(obj, (list, tuple, nnx.List)) else getattr(obj, part)
    return obj


@dataclasses.dataclass(frozen=True)
class Skipped:
    """A parametrised module ``init`` left as it was (``strict=False``)."""

    path: str
    type: str


def _path(parts) -> str:
    return "/".join(map(str, parts))


def _override_for(overrides, path: str, module) -> Mapping | None:
    """Path patterns (fnmatch) first, then the nearest class in the module's MRO."""
    for sel, rule in overrides.items():
        if isinstance(sel, str) and fnmatch.fnmatchcase(path, sel):
            return rule
    for cls in type(module).__mro__:
        if cls in overrides:
            return overrides[cls]
    return None


def plan(model: nnx.Module, *, overrides: Mapping | None = None,
         padding_idx: Mapping[str, int] | None = None, strict: bool = True):
    """What ``init`` will draw: ``(draws, skipped)`` with ``draws`` a list of
    ``(path, variable, initialiser)``. Nothing is changed.

    Raises:
      ValueError: with ``strict``, for the first module with parameters that no rule (nor
        override) covers, naming its path and type.
    """
    overrides = dict(overrides or {})
    modules = list(nnx.iter_modules(model))
    paths = {_path(p) for p, _ in modules}
    for path in padding_idx or {}:
        if path not in paths:
            raise ValueError(f"padding_idx: the model has no module {path!r}")
    covered = set()
    for path, m in modules:  # a composite's rule covers its submodules
        if isinstance(m, COMPOSITE):
            covered |= {id(s) for p, s in nnx.iter_modules(m) if p}
    draws, skipped = [], []
    for parts, m in sorted(modules, key=lambda pm: _path(pm[0])):
        path = _path(parts)
        if id(m) in covered:
            continue
        own = _own_variables(m)
        rule = _rule_for(m)
        if not own and (rule is None or not isinstance(m, COMPOSITE)):
            continue
        spec = None
        override = _override_for(overrides, path, m)
        if rule is not None:
            spec = dict(rule(m))
        if override is not None:
            spec = {**(spec or {}), **override}
        if spec is not None and isinstance(m, COMPOSITE):  # overrides of its submodules
            for sub_parts, sub in nnx.iter_modules(m):
                sub_override = _override_for(overrides, _path(parts + sub_parts), sub)
                if sub_parts and sub_override:
                    spec.update({f"{_path(sub_parts)}/{k}": fn for k, fn in sub_override.items()})
        if spec is None:
            if strict:
                raise ValueError(f"torch_like.init: no torch rule for {path or '<root>'} "
                                 f"({type(m).__name__}, parameters {sorted(own)}); pass "
                                 "overrides={...} for it or strict=False")
            skipped.append(Skipped(path, type(m).__name__))
            continue
        if padding_idx and path in padding_idx:
            if "embedding" not in spec:
                raise ValueError(f"padding_idx: {path} is not an embedding")
            spec["embedding"] = _zero_row(spec["embedding"], padding_idx[path],
                                          _shape(m.embedding)[0])
        for name, fn in spec.items():
            try:
                var = _lookup(m, name)
            except (AttributeError, IndexError, ValueError):
                var = False
            if var is None:  # e.g. a recipe's bias on a layer built with use_bias=False
                continue
            if not isinstance(var, nnx.Variable):
                raise ValueError(f"torch_like.init: {path or '<root>'} ({type(m).__name__}) has "
                                 f"no variable {name!r}")
            draws.append((f"{path}/{name}" if path else name, var, fn))
    return draws, skipped


def _zero_row(fn, row: int, rows: int):
    """torch's ``padding_idx``: the embedding's row ``row`` is zero."""
    if not -rows <= row < rows:
        raise ValueError(f"padding_idx {row} is out of range for {rows} embeddings")

    def init(key, shape, dtype=None, out_sharding=None):
        return fn(key, shape, dtype).at[row].set(0)
    return init


def _key_of(key) -> jax.Array:
    if isinstance(key, nnx.Rngs):
        return key.params()
    key = jnp.asarray(key) if not isinstance(key, jax.Array) else key
    if not jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        if key.shape == (2,) and key.dtype == jnp.uint32:  # a legacy PRNGKey
            return jax.random.wrap_key_data(key)
        raise TypeError(f"key must be a jax.random.key, a PRNGKey or an nnx.Rngs, got {key!r}")
    return key


def init(model: nnx.Module, key, *, overrides: Mapping | None = None,
         padding_idx: Mapping[str, int] | None = None, strict: bool = True) -> nnx.Module:
    """Redraws, in place, every parameter and batch statistic of ``model`` as torch would.

    Each variable's draw uses ``fold_in(key, crc32(path))``, so a variable's values do not
    depend on which other layers the model has. Works on an abstract model from
    ``nnx.eval_shape`` (each variable is created from its shape and dtype) and under
    ``nnx.jit``; dtypes are kept.

    Args:
      model: any ``nnx.Module``.
      key: a ``jax.random.key``, a legacy ``PRNGKey`` or an ``nnx.Rngs`` (its params stream).
      overrides: a recipe: ``{layer type or path pattern: {variable: initialiser}}``, e.g.
        ``{nnx.Conv: {"kernel": kaiming_normal("fan_out")}}``; a path pattern (fnmatch,
        ``"head/*"``) wins over a type.
      padding_idx: ``{embedding path: row}``: torch's ``padding_idx`` (that row is zero).
      strict: raise on a parametrised module no rule covers (nothing is changed then);
        with False such modules are left as they are and their paths logged (``plan``
        returns them).

    Returns:
      ``model``.

    Raises:
      ValueError: ``strict`` and a module without a rule; a bad override.

    Examples:
      >>> import jax, winit_jax.torch_like as tl
      >>> from flax import nnx
      >>> layer = tl.init(nnx.Linear(784, 512, rngs=nnx.Rngs(0)), jax.random.key(1))
      >>> bool(abs(layer.kernel[...]).max() <= 1 / 28)
      True
    """
    draws, skipped = plan(model, overrides=overrides, padding_idx=padding_idx, strict=strict)
    for s in skipped:
        log.info("torch_like.init: left %s (%s) as it was: no torch rule", s.path, s.type)
    key = _key_of(key)
    new = []
    for path, var, fn in draws:
        value = var.get_value()
        k = jax.random.fold_in(key, zlib.crc32(path.encode()))
        new.append(fn(k, tuple(value.shape), value.dtype))  # all drawn before any is set
    for (_, var, _), value in zip(draws, new):
        var.set_value(value)
    return model


def unsupported(model: nnx.Module) -> list[Skipped]:
    """The parametrised modules of ``model`` that no rule covers."""
    return plan(model, strict=False)[1]


__all__ = ["RULES", "Skipped", "constant", "convnext_recipe", "init", "kaiming_normal",
           "packed_xavier_uniform", "plan", "resnet_recipe", "trunc_normal", "uniform_sum",
           "unsupported", "vit_recipe"]
