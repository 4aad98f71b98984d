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


# jax.random.normal maps a float32 uniform through erfinv: its largest |z| is about 5.4.
# A spread of 8 standard deviations is what a normal draw must fit in its dtype.
_NORMAL_TAIL = 8.0


def _check_range(spread: float, dtype: np.dtype, what: str) -> None:
    """Raises ValueError if weights of magnitude ``spread`` overflow ``dtype`` to inf."""
    top = float(jnp.finfo(dtype).max)
    if not spread <= top:
        raise ValueError(f"{what}: weights up to {spread:.3g} overflow {np.dtype(dtype).name} "
                         f"(max {top:.3g}); use a wider dtype or a smaller {what}")


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
        std = math.sqrt(variance)
        # uniform: jax.random.uniform computes min + (max - min) u, so 2 bounds must fit
        _check_range(std * {"uniform": 2 * math.sqrt(3.0), "normal": _NORMAL_TAIL,
                            "truncated_normal": 2.0 / _TRUNCATED_STD}[distribution], dtype,
                     "scale" if mode != "none" else "scale (sigma)")
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


def glorot_normal(**axes):
    """N(0, sqrt(2 / (fan_in + fan_out))), untruncated: ``torch.nn.init.xavier_normal_``.

    Glorot & Bengio (2010), eq. 12: the compromise between keeping the forward
    (1 / fan_in) and the backward (1 / fan_out) variance. ``jax.nn.initializers.glorot_normal``
    is truncated at two standard deviations.
    """
    return variance_scaling(1.0, "fan_avg", "normal", **axes)


def glorot_uniform(**axes):
    """U(+-sqrt(6 / (fan_in + fan_out))): ``torch.nn.init.xavier_uniform_``."""
    return variance_scaling(1.0, "fan_avg", "uniform", **axes)


def gain_normal(activation, **axes):
    """N(0, gain / sqrt(fan_in)) with the exact gain of ``activation`` (see ``activations``).

    ``Var[w] = 1 / (fan_in E[f(z)^2])`` keeps unit pre-activation variance through
    ``activation`` at infinite width; for ReLU it is :func:`he_normal`.
    """
    from winit_jax.activations import second_moment

    return variance_scaling(1.0 / second_moment(activation), "fan_in", "normal", **axes)


def gain_uniform(activation, **axes):
    """U(+-gain sqrt(3 / fan_in)): :func:`gain_normal`'s variance, uniformly."""
    from winit_jax.activations import second_moment

    return variance_scaling(1.0 / second_moment(activation), "fan_in", "uniform", **axes)


def orthogonal(gain: float = 1.0, *, column_axis: int = -1):
    """A (semi-)orthogonal kernel times ``gain``: ``torch.nn.init.orthogonal_``.

    The kernel is viewed as a matrix with ``shape[column_axis]`` columns and the
    product of the other axes as rows (Flax's (in, out) kernel: rows = in, columns = out;
    pass ``column_axis=-2`` for a torch (out, in) weight). Its rows are orthonormal when
    there are fewer rows than columns, else its columns: W^T W = gain^2 I for a Flax
    kernel with in >= out. Haar-distributed: the QR of a Gaussian matrix with the signs
    of R's diagonal moved into Q (Mezzadri 2007), as torch does. Each entry has variance
    gain^2 / max(rows, columns).

    Raises:
      ValueError: for a non-positive or non-finite gain, a rank < 2 shape, or a column
        axis out of range.
    """
    gain = check_sigma(gain, "gain")

    def init(key, shape: Sequence[int], dtype=jnp.float32) -> jax.Array:
        dtype = _check_dtype(dtype)
        shape = tuple(int(d) for d in shape)
        _check_range(gain, dtype, "gain")  # |entries of an orthogonal matrix| <= 1
        if len(shape) < 2:
            raise ValueError(f"orthogonal needs a kernel of rank >= 2, got shape {shape}")
        (col,) = _axes(column_axis, len(shape), "column_axis", shape)
        if math.prod(shape) == 0:
            return jnp.zeros(shape, dtype)
        n_cols = shape[col]
        n_rows = math.prod(shape) // n_cols
        work = dtype if dtype.itemsize >= 4 else np.dtype(jnp.float32)
        a = jax.random.normal(key, (max(n_rows, n_cols), min(n_rows, n_cols)), work)
        q, r = jnp.linalg.qr(a)
        q = q * jnp.sign(jnp.diagonal(r))
        if n_rows < n_cols:
            q = q.T
        rest = shape[:col] + shape[col + 1:]
        w = jnp.moveaxis(q.reshape(rest + (n_cols,)), -1, col)
        return (w * jnp.asarray(gain, work)).astype(dtype)

    return init


# torch.nn.Linear.reset_parameters: kaiming_uniform_(w, a=sqrt(5)) has gain
# sqrt(2 / (1 + a^2)) = sqrt(1/3) and bound gain * sqrt(3 / fan_in) = 1 / sqrt(fan_in),
# i.e. Var[w] = 1 / (3 fan_in); the bias is U(+-1 / sqrt(fan_in)) with the weight's fan_in.
def torch_linear_kernel(**axes):
    """U(+-1 / sqrt(fan_in)): the weights of a freshly constructed ``torch.nn.Linear``.

    Pair it with :func:`torch_linear_bias` for torch's bias; for example
    ``nnx.Linear(n_in, n_out, kernel_init=torch_linear_kernel(),
    bias_init=torch_linear_bias(n_in), rngs=rngs)``.
    """
    return variance_scaling(1.0 / 3.0, "fan_in", "uniform", **axes)


def torch_linear_bias(fan_in: int):
    """U(+-1 / sqrt(fan_in)) for a bias of any shape: ``torch.nn.Linear``'s default bias.

    A bias init sees only the bias shape, so the kernel's ``fan_in`` (the layer's number
    of inputs) is an argument. torch uses a bound of 0 for ``fan_in = 0``; here that is an
    error, as it is almost surely a mistake.

    Raises:
      ValueError: if ``fan_in`` is not a positive integer.
    """
    if isinstance(fan_in, bool) or not isinstance(fan_in, (int, np.integer)) or fan_in < 1:
        raise ValueError(f"fan_in must be a positive integer, got {fan_in!r}")
    bound = 1.0 / math.sqrt(int(fan_in))

    def init(key, shape: Sequence[int], dtype=jnp.float32) -> jax.Array:
        dtype = _check_dtype(dtype)
        shape = tuple(int(d) for d in shape)
        work = dtype if dtype.itemsize >= 4 else np.dtype(jnp.float32)
        return jax.random.uniform(key, shape, work, -bound, bound).astype(dtype)

    return init
