"""Weight initialisers with the ``jax.nn.initializers`` calling convention.

Every named scheme is one call of :func:`variance_scaling`, which draws weights
with variance ``scale / fan``. Each factory has the signature of its
``jax.nn.initializers`` namesake, keyword for keyword (``in_axis``, ``out_axis``,
``batch_axis``, ``dtype``), and returns ``init(key, shape, dtype=<factory dtype>,
out_sharding=None)``, so it drops into ``flax.nnx.Linear(kernel_init=...)``,
``flax.linen.Dense(kernel_init=...)`` or code written for ``jax.nn.initializers``.
Kernels are laid out ``(..., in, out)`` as Flax lays them out; a PyTorch weight is
``(out, in)``: pass ``in_axis=-1, out_axis=-2`` for that layout.

Where this differs from ``jax.nn.initializers`` (on purpose):

- ``distribution="normal"`` and the named normal schemes are untruncated (as torch and
  the notebooks); jax's ``he_normal``, ``lecun_normal`` and ``glorot_normal`` truncate at
  2 standard deviations. ``variance_scaling(..., "truncated_normal")`` is jax's.
- A complex truncated normal has E[|w|^2] equal to the asked variance here; jax divides
  by 0.953 where the modulus-truncated complex normal's standard deviation is 0.962, so
  its E[|w|^2] is 1.0187 times the asked variance (measured: 1.018 over 2e6 draws).
- float16/bfloat16 weights are drawn in float32 and rounded; a float64 dtype without
  ``jax_enable_x64`` is refused instead of silently returning float32; a scale whose
  weights would overflow the dtype is refused instead of returning inf.
- ``mode="none"`` (variance ``scale``, whatever the shape) is an addition.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import jax
import jax.numpy as jnp
import numpy as np

from winit_jax import sampling

Mode = Literal["fan_in", "fan_out", "fan_avg", "fan_geo_avg", "none"]
Distribution = Literal["normal", "truncated_normal", "uniform"]
Axes = int | Sequence[int]

_MODES = ("fan_in", "fan_out", "fan_avg", "fan_geo_avg", "none")
_DISTRIBUTIONS = ("normal", "truncated_normal", "uniform")

# Standard deviation of a unit normal truncated to [-2, 2]:
# sqrt(1 - 4 phi(2) / (Phi(2) - Phi(-2))) with phi, Phi the unit normal pdf, cdf.
# Dividing by it makes the truncated draw have exactly the asked variance
# (the same constant as jax.nn.initializers and TF's VarianceScaling).
_TRUNCATED_STD = 0.87962566103423978
# A complex normal with E|z|^2 = 1 has |z|^2 ~ Exp(1); cut at |z| <= 2 its second moment is
# E[X | X <= 4] = (1 - 5 e^-4) / (1 - e^-4); this is its square root.
_COMPLEX_TRUNCATED_STD = math.sqrt((1 - 5 * math.exp(-4)) / (1 - math.exp(-4)))  # 0.96196
_COMPLEX_CUT = 2.0


def check_sigma(sigma: object, name: str = "sigma") -> float:
    """Returns ``sigma`` as a float, or raises ValueError unless finite and > 0."""
    if isinstance(sigma, bool) or not isinstance(sigma, (int, float, np.number)):
        raise ValueError(f"{name} must be a finite positive number, got {sigma!r}")
    value = float(sigma)
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a finite positive number, got {sigma!r}")
    return value


def _default_float() -> np.dtype:
    """jax's default float: float32, or float64 under ``jax_enable_x64``."""
    return np.dtype(jax.dtypes.canonicalize_dtype(np.float64))


def _check_dtype(dtype, *, allow_complex: bool) -> np.dtype:
    dtype = _default_float() if dtype is None else np.dtype(dtype)
    kinds = "floating or complex" if allow_complex else "floating"
    if not (jnp.issubdtype(dtype, jnp.floating)
            or (allow_complex and jnp.issubdtype(dtype, jnp.complexfloating))):
        raise TypeError(f"dtype must be a {kinds} dtype, got {dtype}")
    if jax.dtypes.canonicalize_dtype(dtype) != dtype:
        raise TypeError(f"dtype {dtype} needs jax_enable_x64=True; "
                        "without it JAX would silently return a narrower dtype")
    return dtype


def _prepare(shape, dtype, *, allow_complex: bool = True):
    """The checks every ``init`` starts with: ``(shape, dtype, work)``, ``work`` being the
    dtype to draw in (at least float32: drawing directly in float16 or bfloat16 keeps only
    7-10 random mantissa bits, which biases a uniform's mean by about -bound/128)."""
    dtype = _check_dtype(dtype, allow_complex=allow_complex)
    shape = tuple(int(d) for d in shape)
    work = dtype if dtype.itemsize >= 4 else np.dtype(jnp.float32)
    return shape, dtype, work


def _place(w, out_sharding):
    """jax's ``out_sharding``: the returned array's sharding, if one is asked for."""
    return w if out_sharding is None else jax.lax.with_sharding_constraint(w, out_sharding)


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
    axes = (axes,) if isinstance(axes, (int, np.integer)) else tuple(axes)
    for a in axes:
        if isinstance(a, bool) or not isinstance(a, (int, np.integer)):
            raise TypeError(f"{name} must be an integer or a sequence of integers, got {a!r}")
        if not -rank <= a < rank:
            raise ValueError(f"{name}={a} is out of range for shape {tuple(shape)}")
    return tuple(int(a) % rank for a in axes)


def compute_fans(shape: Sequence[int], in_axis: Axes = -2, out_axis: Axes = -1,
                 batch_axis: Axes = ()) -> tuple[int, int]:
    """Returns ``(fan_in, fan_out)`` of a kernel.

    Axes that are neither in, out nor batch axes form the receptive field (the
    spatial axes of a convolution) and multiply both fans: a ``(3, 3, 16, 32)``
    kernel has ``fan_in = 3 * 3 * 16 = 144``.

    Raises:
      ValueError: for a shape of rank < 2, or an axis out of range.

    Examples:
      >>> compute_fans((3, 3, 16, 32))
      (144, 288)
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


def _fan(mode: str, shape, in_axis, out_axis, batch_axis) -> float:
    if mode == "none":
        return 1.0
    fan_in, fan_out = compute_fans(shape, in_axis, out_axis, batch_axis)
    return {"fan_in": fan_in, "fan_out": fan_out, "fan_avg": (fan_in + fan_out) / 2,
            "fan_geo_avg": math.sqrt(fan_in * fan_out)}[mode]


def _complex(key, shape, work, distribution):
    """Unit-variance complex draws (E|z|^2 = 1), as jax.nn.initializers draws them: normal
    (real and imaginary parts each of variance 1/2), uniform on the disk of radius sqrt(2),
    or a normal whose modulus is cut at 2 and then rescaled to E|z|^2 = 1."""
    real = np.dtype(np.array(0, work).real.dtype)
    if distribution == "normal":
        return jax.random.normal(key, shape, work)
    k_r, k_theta = jax.random.split(key)
    u = jax.random.uniform(k_r, shape, real)
    if distribution == "uniform":
        r2 = 2 * u                              # P(|z|^2 <= t) = t / 2 on the disk
    else:                                       # |z|^2 ~ Exp(1) cut at 4, by its inverse CDF
        r2 = -jnp.log1p(-(1 - math.exp(-_COMPLEX_CUT ** 2)) * u) / _COMPLEX_TRUNCATED_STD ** 2
    theta = 2 * math.pi * jax.random.uniform(k_theta, shape, real)
    r = jnp.sqrt(r2)
    return jax.lax.complex(r * jnp.cos(theta), r * jnp.sin(theta)).astype(work)


def _variance_scaling(scale, mode, distribution, in_axis, out_axis, batch_axis, dtype, *,
                      allow_complex: bool = True, scale_name: str = "scale"):
    scale = check_sigma(scale, scale_name)
    if mode not in _MODES:
        raise ValueError(f"mode must be one of {_MODES}, got {mode!r}")
    if distribution not in _DISTRIBUTIONS:
        raise ValueError(f"distribution must be one of {_DISTRIBUTIONS}, got {distribution!r}")
    if dtype is not None:
        _check_dtype(dtype, allow_complex=allow_complex)  # fail at construction, too

    def init(key, shape: Sequence[int], dtype=dtype, out_sharding=None) -> jax.Array:
        shape, dtype, work = _prepare(shape, dtype, allow_complex=allow_complex)
        n = _fan(mode, shape, in_axis, out_axis, batch_axis)
        if math.prod(shape) == 0:
            return _place(jnp.zeros(shape, dtype), out_sharding)
        std = math.sqrt(scale / n)
        # uniform: jax.random.uniform computes min + (max - min) u, so 2 bounds must fit
        _check_range(std * {"uniform": 2 * math.sqrt(3.0), "normal": _NORMAL_TAIL,
                            "truncated_normal": 2.0 / _TRUNCATED_STD}[distribution],
                     np.dtype(np.array(0, dtype).real.dtype), scale_name)
        if jnp.issubdtype(work, jnp.complexfloating):
            w = _complex(key, shape, work, distribution) * jnp.asarray(std, work)
        elif distribution == "uniform":
            bound = math.sqrt(3.0) * std  # Var[U(-b, b)] = b^2 / 3
            w = sampling.uniform(key, shape, work, -bound, bound)
        elif distribution == "normal":
            w = sampling.normal(key, shape, work, scale=std)
        else:
            w = sampling.truncated_normal(key, -2.0, 2.0, shape, work,
                                          scale=std / _TRUNCATED_STD)
        return _place(w.astype(dtype), out_sharding)

    return init


def variance_scaling(scale: float, mode: Mode, distribution: Distribution,
                     in_axis: Axes = -2, out_axis: Axes = -1, batch_axis: Axes = (),
                     dtype=None):
    """The core: weights of mean 0 and variance ``scale / n``.

    ``n`` is ``fan_in``, ``fan_out``, their arithmetic mean (``fan_avg``), their geometric
    mean (``fan_geo_avg``), or 1 (``none``, for schemes that ignore the shape, such as
    U(-sigma, sigma)). The signature is ``jax.nn.initializers.variance_scaling``'s.

    Args:
      scale: variance multiplier, finite and > 0.
      mode: one of "fan_in", "fan_out", "fan_avg", "fan_geo_avg", "none".
      distribution: "normal" (untruncated, as ``torch.nn.init.normal_``),
        "truncated_normal" (cut at 2 standard deviations, then rescaled, as
        ``jax.nn.initializers.variance_scaling``), or "uniform" on
        ``[-sqrt(3 scale / n), sqrt(3 scale / n))``. Complex dtypes draw complex weights
        with E[|w|^2] = scale / n (see the module docstring).
      in_axis: the kernel's input axes; see ``compute_fans``.
      out_axis: its output axes.
      batch_axis: its batch axes (neither fan).
      dtype: the default dtype of the weights (None: float32, or float64 under x64).

    Returns:
      ``init(key, shape, dtype=dtype, out_sharding=None)``, usable under ``jax.jit``
      (shape and dtype static) and ``jax.vmap`` over keys.

    Raises:
      ValueError: a bad scale, mode or distribution (at once), or a shape, axis or scale
        the weights cannot have (when called).
      TypeError: a dtype that is neither floating nor complex.

    Examples:
      >>> import jax
      >>> init = variance_scaling(2.0, "fan_in", "normal")
      >>> init(jax.random.key(0), (784, 512)).shape
      (784, 512)
    """
    return _variance_scaling(scale, mode, distribution, in_axis, out_axis, batch_axis, dtype)


def symmetric_uniform(sigma: float = 0.01, dtype=None):
    """U(-sigma, sigma), whatever the shape: notebook A's ``init_layer_uniform(sigma)``.

    Not ``jax.nn.initializers.uniform(scale)``, which samples ``[0, scale)``
    and so has a non-zero mean.

    Raises:
      ValueError: if ``sigma`` is not a finite positive number.
    """
    sigma = check_sigma(sigma)
    if not math.isfinite(sigma * sigma):
        raise ValueError(f"sigma={sigma!r}: its variance sigma^2 / 3 overflows float64")
    return _variance_scaling(sigma * sigma / 3.0, "none", "uniform", -2, -1, (), dtype,
                             scale_name="sigma")


# The named schemes: jax.nn.initializers' signatures, one line each on the core.
def he_normal(in_axis: Axes = -2, out_axis: Axes = -1, batch_axis: Axes = (), dtype=None):
    """N(0, sqrt(2 / fan_in)), untruncated: notebook A's ``init_layer_norm_gauss``.

    He et al. (2015), eq. 10: Var[w] = 2 / n_l keeps Var[y] through ReLU layers.
    ``jax.nn.initializers.he_normal`` draws a *truncated* normal (no value beyond
    two standard deviations); this one matches ``torch.nn.init.kaiming_normal_``.
    """
    return variance_scaling(2.0, "fan_in", "normal", in_axis, out_axis, batch_axis, dtype)


def he_uniform(in_axis: Axes = -2, out_axis: Axes = -1, batch_axis: Axes = (), dtype=None):
    """U(+-sqrt(6 / fan_in)): notebook A's ``init_layer_norm_uniform``.

    Same variance 2 / fan_in as :func:`he_normal`; equals
    ``torch.nn.init.kaiming_uniform_(w, nonlinearity="relu")`` and
    ``jax.nn.initializers.he_uniform``.
    """
    return variance_scaling(2.0, "fan_in", "uniform", in_axis, out_axis, batch_axis, dtype)


def lecun_normal(in_axis: Axes = -2, out_axis: Axes = -1, batch_axis: Axes = (), dtype=None):
    """N(0, 1 / sqrt(fan_in)), untruncated: notebook B's ``randn(m, nh) / sqrt(m)``.

    ``jax.nn.initializers.lecun_normal`` is truncated at two standard deviations.
    """
    return variance_scaling(1.0, "fan_in", "normal", in_axis, out_axis, batch_axis, dtype)


def lecun_uniform(in_axis: Axes = -2, out_axis: Axes = -1, batch_axis: Axes = (), dtype=None):
    """U(+-sqrt(3 / fan_in)): ``jax.nn.initializers.lecun_uniform``."""
    return variance_scaling(1.0, "fan_in", "uniform", in_axis, out_axis, batch_axis, dtype)


def glorot_normal(in_axis: Axes = -2, out_axis: Axes = -1, batch_axis: Axes = (), dtype=None):
    """N(0, sqrt(2 / (fan_in + fan_out))), untruncated: ``torch.nn.init.xavier_normal_``.

    Glorot & Bengio (2010), eq. 12: the compromise between keeping the forward
    (1 / fan_in) and the backward (1 / fan_out) variance. ``jax.nn.initializers.glorot_normal``
    is truncated at two standard deviations.
    """
    return variance_scaling(1.0, "fan_avg", "normal", in_axis, out_axis, batch_axis, dtype)


def glorot_uniform(in_axis: Axes = -2, out_axis: Axes = -1, batch_axis: Axes = (), dtype=None):
    """U(+-sqrt(6 / (fan_in + fan_out))): ``torch.nn.init.xavier_uniform_`` and
    ``jax.nn.initializers.glorot_uniform``."""
    return variance_scaling(1.0, "fan_avg", "uniform", in_axis, out_axis, batch_axis, dtype)


def standard_normal(dtype=None):
    """N(0, 1), whatever the shape: notebook B's first attempt, ``randn(m, nh)``."""
    return variance_scaling(1.0, "none", "normal", dtype=dtype)


def gain_normal(activation, in_axis: Axes = -2, out_axis: Axes = -1, batch_axis: Axes = (),
                dtype=None):
    """N(0, gain / sqrt(fan_in)) with the exact gain of ``activation`` (see ``activations``).

    ``Var[w] = 1 / (fan_in E[f(z)^2])`` keeps unit pre-activation variance through
    ``activation`` at infinite width; for ReLU it is :func:`he_normal`.
    """
    from winit_jax.activations import second_moment

    return variance_scaling(1.0 / second_moment(activation), "fan_in", "normal", in_axis,
                            out_axis, batch_axis, dtype)


def gain_uniform(activation, in_axis: Axes = -2, out_axis: Axes = -1, batch_axis: Axes = (),
                 dtype=None):
    """U(+-gain sqrt(3 / fan_in)): :func:`gain_normal`'s variance, uniformly."""
    from winit_jax.activations import second_moment

    return variance_scaling(1.0 / second_moment(activation), "fan_in", "uniform", in_axis,
                            out_axis, batch_axis, dtype)


def orthogonal(scale: float = 1.0, column_axis: int = -1, dtype=None):
    """A (semi-)orthogonal kernel times ``scale``: ``torch.nn.init.orthogonal_(w, gain=scale)``
    and ``jax.nn.initializers.orthogonal(scale, column_axis, dtype)``.

    The kernel is viewed as a matrix with ``shape[column_axis]`` columns and the
    product of the other axes as rows (Flax's (in, out) kernel: rows = in, columns = out;
    pass ``column_axis=-2`` for a torch (out, in) weight). Its rows are orthonormal when
    there are fewer rows than columns, else its columns: W^T W = scale^2 I for a Flax
    kernel with in >= out. Haar-distributed: the QR of a Gaussian matrix with the phases
    of R's diagonal moved into Q (Mezzadri 2007), as torch does; complex dtypes give a
    unitary-Haar kernel. Each entry has E[|w|^2] = scale^2 / max(rows, columns).

    Raises:
      ValueError: for a non-positive or non-finite scale, a rank < 2 shape, or a column
        axis out of range.
      TypeError: for a column axis that is not an integer, or a non-float dtype.
    """
    scale = check_sigma(scale, "scale")
    if isinstance(column_axis, bool) or not isinstance(column_axis, (int, np.integer)):
        raise TypeError(f"column_axis must be an integer, got {column_axis!r}")
    if dtype is not None:
        _check_dtype(dtype, allow_complex=True)

    def init(key, shape: Sequence[int], dtype=dtype, out_sharding=None) -> jax.Array:
        shape, dtype, work = _prepare(shape, dtype)
        _check_range(scale, np.dtype(np.array(0, dtype).real.dtype), "scale")  # |w| <= scale
        if len(shape) < 2:
            raise ValueError(f"orthogonal needs a kernel of rank >= 2, got shape {shape}")
        (col,) = _axes(column_axis, len(shape), "column_axis", shape)
        if math.prod(shape) == 0:
            return _place(jnp.zeros(shape, dtype), out_sharding)
        n_cols = shape[col]
        n_rows = math.prod(shape) // n_cols
        draw = jax.random.normal if jnp.issubdtype(work, jnp.complexfloating) else sampling.normal
        a = draw(key, (max(n_rows, n_cols), min(n_rows, n_cols)), work)
        q, r = jnp.linalg.qr(a)
        d = jnp.diagonal(r)
        q = q * (d / jnp.abs(d).astype(d.dtype))  # the phase (sign, if real) of diag(R)
        if n_rows < n_cols:
            q = q.T
        rest = shape[:col] + shape[col + 1:]
        w = jnp.moveaxis(q.reshape(rest + (n_cols,)), -1, col)
        return _place((w * jnp.asarray(scale, work)).astype(dtype), out_sharding)

    return init



# torch's own draws moved to ``winit_jax.torch_draws`` (this module is their core, below
# them): importing one from here fails saying where it went.
_MOVED = ("constant", "kaiming_normal", "packed_xavier_uniform", "torch_linear_bias",
          "torch_linear_kernel", "trunc_normal", "uniform_sum")


def __getattr__(name: str):
    if name in _MOVED:
        raise ImportError(f"winit_jax.initializers.{name} moved to winit_jax.torch_draws: "
                          f"from winit_jax.torch_draws import {name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
