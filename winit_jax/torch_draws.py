"""torch's own draws in Flax's layouts, on the core of :mod:`winit_jax.initializers`: the
defaults of ``torch.nn.Linear`` and the ``torch.nn.init`` draws torch's layers make in
``reset_parameters`` (``constant_``, ``trunc_normal_`` with absolute bounds, untruncated
``kaiming_normal_``, ``xavier_uniform_`` of a packed in-projection, a sum of two uniform
biases). The layer-kind registry (``winit_jax.kinds``) and ``torch_like``'s recipes use
them; each returns ``init(key, shape, dtype=..., out_sharding=None)`` as the initialisers
do.
"""

from __future__ import annotations

import math

import jax
import numpy as np

from winit_jax import sampling
from winit_jax.initializers import (
    Axes,
    _place,
    _prepare,
    _variance_scaling,
    check_sigma,
    compute_fans,
    variance_scaling,
)


# torch.nn.Linear.reset_parameters: kaiming_uniform_(w, a=sqrt(5)) has gain
# sqrt(2 / (1 + a^2)) = sqrt(1/3) and bound gain * sqrt(3 / fan_in) = 1 / sqrt(fan_in),
# i.e. Var[w] = 1 / (3 fan_in); the bias is U(+-1 / sqrt(fan_in)) with the weight's fan_in.
# torch draws no complex default, so neither do these.
def torch_linear_kernel(in_axis: Axes = -2, out_axis: Axes = -1, batch_axis: Axes = (),
                        dtype=None):
    """U(+-1 / sqrt(fan_in)): the weights of a freshly constructed ``torch.nn.Linear``.

    Pair it with :func:`torch_linear_bias` for torch's bias; for example
    ``nnx.Linear(n_in, n_out, kernel_init=torch_linear_kernel(),
    bias_init=torch_linear_bias(n_in), rngs=rngs)``.
    """
    return _variance_scaling(1.0 / 3.0, "fan_in", "uniform", in_axis, out_axis, batch_axis,
                             dtype, allow_complex=False)


def torch_linear_bias(fan_in: int, dtype=None):
    """U(+-1 / sqrt(fan_in)) for a bias of any shape: ``torch.nn.Linear``'s default bias.

    A bias init sees only the bias shape, so the kernel's ``fan_in`` (the layer's number
    of inputs) is an argument. torch uses a bound of 0 for ``fan_in = 0``; here that is an
    error, as it is almost surely a mistake.

    Raises:
      ValueError: if ``fan_in`` is not a positive integer.
    """
    if isinstance(fan_in, bool) or not isinstance(fan_in, (int, np.integer)) or fan_in < 1:
        raise ValueError(f"fan_in must be a positive integer, got {fan_in!r}")
    # U(-b, b) with b = 1 / sqrt(fan_in) has variance 1 / (3 fan_in), whatever the shape
    return _variance_scaling(1.0 / (3.0 * int(fan_in)), "none", "uniform", -2, -1, (), dtype,
                             allow_complex=False, scale_name="fan_in")


# --- torch.nn.init's other named draws -----------------------------------------------------
# Hyperparameters are keyword-only, as in optax and flax.

def constant(value: float):
    """``torch.nn.init.constant_``: every entry ``value`` (the norms' ones and zeros)."""
    def init(key, shape, dtype=None, out_sharding=None):
        shape, dtype, _ = _prepare(shape, dtype)
        # made on the host and put on the device: jnp.full (and jnp.asarray) would compile
        # a program for every shape
        return _place(jax.device_put(np.full(shape, value, dtype)), out_sharding)
    return init


def trunc_normal(*, std: float = 1.0, a: float = -2.0, b: float = 2.0, mean: float = 0.0,
                 dtype=None):
    """``torch.nn.init.trunc_normal_(w, mean=mean, std=std, a=a, b=b)``: N(mean, std^2) cut
    at the **absolute** bounds [a, b] (flax #4091), not at a number of standard deviations.

    With ViT's ``std=0.02`` and torch's default ``a=-2, b=2`` the cut is at 100 standard
    deviations, i.e. no cut at all; ``jax.nn.initializers.truncated_normal(0.02)`` cuts at
    2 standard deviations (+-0.04) and then has a smaller variance. The returned weights'
    std is that of the cut law, as in torch (not rescaled to ``std``).

    Examples:
      >>> import jax
      >>> w = trunc_normal(std=0.02)(jax.random.key(0), (256, 256))
      >>> bool(abs(float(w.std()) - 0.02) < 0.001)
      True
    """
    std = check_sigma(std, "std")
    if not (math.isfinite(a) and math.isfinite(b) and a < b):
        raise ValueError(f"trunc_normal needs finite bounds a < b, got a={a!r}, b={b!r}")

    def init(key, shape, dtype=dtype, out_sharding=None):
        shape, dtype, work = _prepare(shape, dtype, allow_complex=False)
        z = sampling.truncated_normal(key, (a - mean) / std, (b - mean) / std, shape, work,
                                      scale=std, shift=mean)
        return _place(z.astype(dtype), out_sharding)
    return init


def kaiming_normal(*, mode: str = "fan_in", nonlinearity_gain_sq: float = 2.0,
                   in_axis: Axes = -2, out_axis: Axes = -1, batch_axis: Axes = (), dtype=None):
    """``torch.nn.init.kaiming_normal_(w, mode=mode)``, **untruncated**, in Flax's layout
    (``jax.nn.initializers.he_normal`` is truncated). ``nonlinearity_gain_sq`` is the
    square of torch's ``calculate_gain``: 2 for ReLU."""
    if mode not in ("fan_in", "fan_out"):
        raise ValueError(f"mode must be 'fan_in' or 'fan_out', got {mode!r}")
    return variance_scaling(nonlinearity_gain_sq, mode, "normal", in_axis, out_axis, batch_axis,
                            dtype)


def packed_xavier_uniform(*, n_packed: int = 3, in_axis: Axes = -3, out_axis: Axes = (-2, -1),
                          dtype=None):
    """``xavier_uniform_`` of torch's packed (n E, E) in-projection, for one Flax
    projection kernel (E, heads, head_dim): Var = 2 / (E + n E), not 2 / (E + E).

    For a kernel with fans (f_in, f_out) the packed matrix has (f_in, n f_out), so the
    variance is 2 / (f_in + n f_out) = scale / ((f_in + f_out) / 2) with
    scale = (f_in + f_out) / (f_in + n f_out).
    """
    def init(key, shape, dtype=dtype, out_sharding=None):
        f_in, f_out = compute_fans(shape, in_axis, out_axis)
        scale = (f_in + f_out) / (f_in + n_packed * f_out)
        return variance_scaling(scale, "fan_avg", "uniform", in_axis, out_axis)(
            key, shape, dtype, out_sharding)
    return init


def uniform_sum(*, bound: float, terms: int = 2, dtype=None):
    """The sum of ``terms`` independent U(-bound, bound): torch's b_ih + b_hh, for a Flax
    cell that holds one bias where torch adds two (Var = terms bound^2 / 3)."""
    bound = check_sigma(bound, "bound")

    def init(key, shape, dtype=dtype, out_sharding=None):
        keys = jax.random.split(key, terms)
        one = _variance_scaling(bound * bound / 3, "none", "uniform", -2, -1, (), dtype,
                                allow_complex=False)
        return _place(sum(one(k, shape) for k in keys), out_sharding)
    return init


__all__ = ["constant", "kaiming_normal", "packed_xavier_uniform", "torch_linear_bias",
           "torch_linear_kernel", "trunc_normal", "uniform_sum"]
