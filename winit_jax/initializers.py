"""Weight initialisers with the ``jax.nn.initializers`` calling convention.

Every named scheme is one call of :func:`variance_scaling`, which draws weights
with variance ``scale / fan``. Each returns ``init(key, shape, dtype=jnp.float32)``
and so drops into ``flax.nnx.Linear(kernel_init=...)`` or
``flax.linen.Dense(kernel_init=...)``. Kernels are laid out ``(..., in, out)``
as Flax lays them out; a PyTorch weight is ``(out, in)``: pass
``in_axis=-1, out_axis=-2`` for that layout.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import jax
import jax.numpy as jnp
import numpy as np

Mode = Literal["fan_in", "fan_out", "fan_avg", "none"]
Distribution = Literal["normal", "truncated_normal", "uniform"]
Axes = int | Sequence[int]

_MODES = ("fan_in", "fan_out", "fan_avg", "none")
_DISTRIBUTIONS = ("normal", "truncated_normal", "uniform")

# Standard deviation of a unit normal truncated to [-2, 2]:
# sqrt(1 - 4 phi(2) / (Phi(2) - Phi(-2))) with phi, Phi the unit normal pdf, cdf.
# Dividing by it makes the truncated draw have exactly the asked variance
# (the same constant as jax.nn.initializers and TF's VarianceScaling).
_TRUNCATED_STD = 0.87962566103423978


def check_sigma(sigma: object, name: str = "sigma") -> float:
    """Returns ``sigma`` as a float, or raises ValueError unless finite and > 0."""
    if isinstance(sigma, bool) or not isinstance(sigma, (int, float, np.number)):
        raise ValueError(f"{name} must be a finite positive number, got {sigma!r}")
    value = float(sigma)
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a finite positive number, got {sigma!r}")
    return value


def _check_dtype(dtype) -> np.dtype:
    dtype = np.dtype(dtype)
    if not jnp.issubdtype(dtype, jnp.floating):
        raise TypeError(
            f"dtype must be a floating dtype (float16, bfloat16, float32, float64), got {dtype}")
    if jax.dtypes.canonicalize_dtype(dtype) != dtype:
        raise TypeError(f"dtype {dtype} needs jax_enable_x64=True; "
                        "without it JAX would silently return float32")
    return dtype


def _axes(axes: Axes, rank: int, name: str, shape) -> tuple[int, ...]:
    axes = (axes,) if isinstance(axes, int) else tuple(axes)
    for a in axes:
        if not -rank <= a < rank:
            raise ValueError(f"{name}={a} is out of range for shape {tuple(shape)}")
    return tuple(a % rank for a in axes)


def compute_fans(shape: Sequence[int], in_axis: Axes = -2, out_axis: Axes = -1,
                 batch_axis: Axes = ()) -> tuple[int, int]:
    """Returns ``(fan_in, fan_out)`` of a kernel.

    Axes that are neither in, out nor batch axes form the receptive field (the
    spatial axes of a convolution) and multiply both fans: a ``(3, 3, 16, 32)``
    kernel has ``fan_in = 3 * 3 * 16 = 144``.

    Raises:
      ValueError: for a shape of rank < 2, or an axis out of range.
    """
    shape = tuple(int(d) for d in shape)
    if len(shape) < 2:
        raise ValueError(f"fan-based initialisers need a kernel of rank >= 2, got shape {shape}")
    ins = _axes(in_axis, len(shape), "in_axis", shape)
    outs = _axes(out_axis, len(shape), "out_axis", shape)
    batch = _axes(batch_axis, len(shape), "batch_axis", shape)
    used = ins + outs + batch
    if len(set(used)) != len(used):
        raise ValueError(f"in_axis, out_axis and batch_axis overlap for shape {shape}")
    receptive = math.prod(d for i, d in enumerate(shape) if i not in used)
    fan_in = math.prod(shape[i] for i in ins) * receptive
    fan_out = math.prod(shape[i] for i in outs) * receptive
    return fan_in, fan_out


def variance_scaling(scale: float, mode: Mode, distribution: Distribution, *,
                     in_axis: Axes = -2, out_axis: Axes = -1, batch_axis: Axes = ()):
    """The core: weights of mean 0 and variance ``scale / n``.

    ``n`` is ``fan_in``, ``fan_out``, their mean (``fan_avg``), or 1 (``none``,
    for schemes that ignore the shape, such as U(-sigma, sigma)).

    Args:
      scale: variance multiplier, finite and > 0.
      mode: one of "fan_in", "fan_out", "fan_avg", "none".
      distribution: "normal" (untruncated, as ``torch.nn.init.normal_``),
        "truncated_normal" (cut at 2 standard deviations, then rescaled, as
        ``jax.nn.initializers.variance_scaling``), or "uniform" on
        ``[-sqrt(3 scale / n), sqrt(3 scale / n))``.
      in_axis, out_axis, batch_axis: kernel axes; see :func:`compute_fans`.

    Returns:
      ``init(key, shape, dtype=jnp.float32)``, usable under ``jax.jit`` (shape
      and dtype static) and ``jax.vmap`` over keys.

    Examples:
      >>> import jax
      >>> init = variance_scaling(2.0, "fan_in", "normal")
      >>> init(jax.random.key(0), (784, 512)).shape
      (784, 512)
    """
    scale = check_sigma(scale, "scale")
    if mode not in _MODES:
        raise ValueError(f"mode must be one of {_MODES}, got {mode!r}")
    if distribution not in _DISTRIBUTIONS:
        raise ValueError(f"distribution must be one of {_DISTRIBUTIONS}, got {distribution!r}")

    def init(key, shape: Sequence[int], dtype=jnp.float32) -> jax.Array:
        dtype = _check_dtype(dtype)
        shape = tuple(int(d) for d in shape)
        if mode == "none":
            n = 1
        else:
            fan_in, fan_out = compute_fans(shape, in_axis, out_axis, batch_axis)
            n = {"fan_in": fan_in, "fan_out": fan_out,
                 "fan_avg": (fan_in + fan_out) / 2}[mode]
        if math.prod(shape) == 0:
            return jnp.zeros(shape, dtype)
        # Sample in at least float32, then round: drawing directly in float16 or
        # bfloat16 keeps only 7-10 random mantissa bits, which biases a uniform's
        # mean by about -bound/128 and clips a normal's tails.
        work = dtype if dtype.itemsize >= 4 else np.dtype(jnp.float32)
        variance = scale / n
        if distribution == "uniform":
            bound = math.sqrt(3.0 * variance)  # Var[U(-b, b)] = b^2 / 3
            w = jax.random.uniform(key, shape, work, -bound, bound)
        elif distribution == "normal":
            w = jax.random.normal(key, shape, work) * jnp.asarray(math.sqrt(variance), work)
        else:
            std = math.sqrt(variance) / _TRUNCATED_STD
            w = jax.random.truncated_normal(key, -2.0, 2.0, shape, work) * jnp.asarray(std, work)
        return w.astype(dtype)

    return init


def symmetric_uniform(sigma: float = 0.01):
    """U(-sigma, sigma), whatever the shape: notebook A's ``init_layer_uniform(sigma)``.

    Not ``jax.nn.initializers.uniform(scale)``, which samples ``[0, scale)``
    and so has a non-zero mean.

    Raises:
      ValueError: if ``sigma`` is not a finite positive number.
    """
    sigma = check_sigma(sigma)
    return variance_scaling(sigma * sigma / 3.0, "none", "uniform")


def he_normal(**axes):
    """N(0, sqrt(2 / fan_in)), untruncated: notebook A's ``init_layer_norm_gauss``.

    He et al. (2015), eq. 10: Var[w] = 2 / n_l keeps Var[y] through ReLU layers.
    ``jax.nn.initializers.he_normal`` draws a *truncated* normal (no value beyond
    two standard deviations); this one matches ``torch.nn.init.kaiming_normal_``.
    """
    return variance_scaling(2.0, "fan_in", "normal", **axes)


def he_uniform(**axes):
    """U(+-sqrt(6 / fan_in)): notebook A's ``init_layer_norm_uniform``.

    Same variance 2 / fan_in as :func:`he_normal`; equals
    ``torch.nn.init.kaiming_uniform_(w, nonlinearity="relu")``.
    """
    return variance_scaling(2.0, "fan_in", "uniform", **axes)


def lecun_normal(**axes):
    """N(0, 1 / sqrt(fan_in)), untruncated: notebook B's ``randn(m, nh) / sqrt(m)``.

    ``jax.nn.initializers.lecun_normal`` is truncated at two standard deviations.
    """
    return variance_scaling(1.0, "fan_in", "normal", **axes)


def standard_normal():
    """N(0, 1), whatever the shape: notebook B's first attempt, ``randn(m, nh)``."""
    return variance_scaling(1.0, "none", "normal")
