"""Per-layer statistics of an MLP at init, and the closed forms they should follow.

Notebook A's derivation: for ``y^l = x^l W^l + b^l`` with zero biases and i.i.d.
zero-mean weights, ``Var[y^l] = n_l Var[w^l] E[(x^l)^2]`` (``n_l`` = fan_in);
after a ReLU of a symmetric ``y``, ``E[(x^{l+1})^2] = Var[y^l] / 2``. So one step
predicts each layer from its measured input, and the chain predicts the whole
net from the data: ``Var[y^L] = Var[y^1] prod_{l=2..L} n_l Var[w^l] / 2``.

Variances span hundreds of decades over 50 layers, so they are kept as natural
logarithms, computed on activations scaled by an exact power of two (so finite
float32 activations never overflow when squared). A layer whose float32 activations
overflowed (inf/NaN) or underflowed (products x w below the smallest normal float) is
flagged in ``status`` rather than reported as a number.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from winit_jax.forward import layer_io
from winit_jax.schemes import get_scheme

OK, UNDERFLOW, OVERFLOW = 0, 1, 2
RELU_SECOND_MOMENT = 0.5  # E[relu(y)^2] = Var[y] / 2 for y symmetric about 0 (notebook A)


class LayerStats(NamedTuple):
    """Statistics over the batch and the units, one entry per linear layer (last axis).

    Attributes:
      in_mean: mean of the layer's input x^l.
      in_log_var: log Var[x^l].
      in_log_sq: log E[(x^l)^2].
      pre_mean: mean of the pre-activation y^l.
      pre_log_var: log Var[y^l] (population variance, as ``jnp.var``).
      pre_log_sq: log E[(y^l)^2]: what the closed forms predict (they take E[y] = 0, true
        in expectation over the weights; one net's few output units have a mean of their own).
      status: OK, UNDERFLOW or OVERFLOW of y^l in its dtype.
    """

    in_mean: jax.Array
    in_log_var: jax.Array
    in_log_sq: jax.Array
    pre_mean: jax.Array
    pre_log_var: jax.Array
    pre_log_sq: jax.Array
    status: jax.Array


def _moments(a):
    """(mean, log var, log E[a^2]) of ``a``, without squaring values near the float limits.

    ``a`` is scaled by an exact power of two, 2^-e with 2^e > max|a| (``ldexp``): dividing
    by max|a| instead would let XLA multiply by its reciprocal, which is subnormal (and
    flushed to zero) once max|a| > 2^126.
    """
    _, e = jnp.frexp(jnp.max(jnp.abs(a)))
    u = jnp.ldexp(a, -e)
    log_scale = 2 * math.log(2) * e.astype(u.dtype)
    return (jnp.ldexp(jnp.mean(u), e),
            jnp.log(jnp.var(u)) + log_scale, jnp.log(jnp.mean(u * u)) + log_scale)


def log_sq_floor(tiny: float, fan_in: int) -> float:
    """The log E[y^2] below which a layer is UNDERFLOW: there the typical product x w in the
    matmul, RMS(y) / sqrt(fan_in), is below ``tiny``, the smallest normal float (CPUs flush
    such products to 0). The torch twin applies the same rule."""
    return 2 * math.log(tiny) + math.log(fan_in)


def _status(y, log_sq, fan_in):
    """OVERFLOW if any entry of y is inf/NaN; UNDERFLOW below ``log_sq_floor``."""
    under = log_sq < log_sq_floor(float(jnp.finfo(y.dtype).tiny), fan_in)
    return jnp.where(~jnp.all(jnp.isfinite(y)), OVERFLOW, jnp.where(under, UNDERFLOW, OK))


def layer_row(x, y, fan_in: int | None = None) -> tuple:
    """One layer's entries of ``LayerStats`` from its input ``x`` and pre-activation ``y``
    (``fan_in``: products summed per output, default the input's last axis)."""
    y_mean, y_log_var, y_log_sq = _moments(y)
    fan_in = x.shape[-1] if fan_in is None else fan_in
    return (*_moments(x), y_mean, y_log_var, y_log_sq, _status(y, y_log_sq, fan_in))


def forward_stats(model, x) -> LayerStats:
    """Runs ``model`` (any ``nnx`` model) on ``x`` once and returns the statistics of each
    Linear/Conv layer call, in call order (``winit_jax.forward.layer_io``).

    Pure and traceable: use under ``jax.jit`` and ``jax.vmap`` (see ``layer_stats``).
    """
    _, calls = layer_io(model, x)
    if not calls:
        raise ValueError(f"{type(model).__name__} calls no Linear or Conv layer")
    rows = [layer_row(c.input, c.output) for c in calls]
    return LayerStats(*(jnp.stack(col) for col in zip(*rows)))


@functools.partial(jax.jit, static_argnames=("graphdef",))
def _stats_jit(graphdef, state, x):
    return forward_stats(nnx.merge(graphdef, state), x)


def layer_stats(model, x) -> LayerStats:
    """Jitted ``forward_stats`` of any ``nnx`` model on a batch ``x``.

    Examples:
      >>> import jax.numpy as jnp, winit_jax as wj
      >>> from flax import nnx
      >>> mlp = wj.MLP((784, 50, 1), kernel_init=wj.lecun_normal(), rngs=nnx.Rngs(0))
      >>> layer_stats(mlp, jnp.ones((8, 784))).pre_mean.shape
      (2,)
    """
    graphdef, state = nnx.split(model)
    return _stats_jit(graphdef, state, x)


def one_step_prediction(stats: LayerStats, scheme: str, sizes: Sequence[int]) -> np.ndarray:
    """log E[(y^l)^2] predicted from each layer's own measured E[(x^l)^2]:
    n_l Var[w^l] E[x^2] + Var[b^l] (``Scheme.var_y``; a calibrated scheme's target)."""
    s = get_scheme(scheme)
    in_log_sq = np.asarray(stats.in_log_sq, np.float64)
    fans = list(zip(sizes[:-1], sizes[1:]))

    def predict(log_e_x2, layer):
        n, m = fans[layer]
        # var_y is linear in E[x^2]: evaluate it at E[x^2] = 1 and add log E[x^2] to the
        # weights' part, so that E[x^2] of 1e-300 or 1e300 never leaves the log domain.
        bias = s.var_y(n, m, 0.0)
        weights = s.var_y(n, m, 1.0) - bias
        with np.errstate(divide="ignore"):
            return np.logaddexp(np.log(weights) + log_e_x2, np.log(bias))

    out = np.empty_like(in_log_sq)
    for layer in range(in_log_sq.shape[-1]):
        out[..., layer] = predict(in_log_sq[..., layer], layer)
    return out


def chained_prediction(log_sq_input: float, scheme: str, sizes: Sequence[int],
                       *, second_moment: float = RELU_SECOND_MOMENT,
                       log_sq_first: float | None = None) -> np.ndarray:
    """log E[(y^l)^2] for every layer, from the data's log E[x^2] alone.

    ``Var[y^1] = n_1 Var[w^1] E[x^2] + Var[b^1]`` (or ``log_sq_first``, a measured
    value) and ``Var[y^l] = n_l Var[w^l] second_moment Var[y^{l-1}] + Var[b^l]``
    (``second_moment`` = E[f(y)^2] / Var[y]: 1/2 for ReLU), each step ``Scheme.var_y``.
    """
    s = get_scheme(scheme)
    out = []
    for layer, (n, m) in enumerate(zip(sizes[:-1], sizes[1:])):
        bias = s.var_y(n, m, 0.0)
        with np.errstate(divide="ignore"):
            log_w, log_b = np.log(s.var_y(n, m, 1.0) - bias), np.log(bias)
        if layer == 0:
            y = np.logaddexp(log_w + log_sq_input, log_b) if log_sq_first is None else log_sq_first
        else:
            y = np.logaddexp(log_w + math.log(second_moment) + y, log_b)
        out.append(float(y))
    return np.asarray(out)
