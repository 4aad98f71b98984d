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

from winit_jax.registry import get_scheme

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


def layer_row(x, y) -> tuple:
    """One layer's entries of ``LayerStats`` from its input ``x`` and pre-activation ``y``."""
    y_mean, y_log_var, y_log_sq = _moments(y)
    return (*_moments(x), y_mean, y_log_var, y_log_sq, _status(y, y_log_sq, x.shape[-1]))


def forward_stats(model, x) -> LayerStats:
    """Runs ``model`` (an ``MLP``) on ``x`` and returns each linear layer's statistics.

    Pure and traceable: use under ``jax.jit`` and ``jax.vmap`` (see ``layer_stats``).
    """
    rows = []
    layers = list(model.layers)
    for i, layer in enumerate(layers):
        y = layer(x)
        rows.append(layer_row(x, y))
        if i < len(layers) - 1:
            x = model.activation(y)
    return LayerStats(*(jnp.stack(col) for col in zip(*rows)))


@functools.partial(jax.jit, static_argnames=("graphdef",))
def _stats_jit(graphdef, state, x):
    return forward_stats(nnx.merge(graphdef, state), x)


def layer_stats(model, x) -> LayerStats:
    """Jitted ``forward_stats`` of an ``MLP`` on a batch ``x`` of shape (N, sizes[0]).

    Examples:
      >>> import jax.numpy as jnp, winit_jax as wj
      >>> from flax import nnx
      >>> mlp = wj.MLP((784, 50, 1), kernel_init=wj.lecun_normal(), rngs=nnx.Rngs(0))
      >>> layer_stats(mlp, jnp.ones((8, 784))).pre_mean.shape
      (2,)
    """
    graphdef, state = nnx.split(model)
    return _stats_jit(graphdef, state, x)


def scheme_log_var_w(scheme: str, sizes: Sequence[int]) -> np.ndarray:
    """log Var[w^l] of every layer of an MLP with ``sizes``, from the registry."""
    s = get_scheme(scheme)
    return np.log([s.var_w(n, m) for n, m in zip(sizes[:-1], sizes[1:])])


def scheme_log_var_b(scheme: str, sizes: Sequence[int]) -> np.ndarray:
    """log Var[b^l] of every layer (-inf for zero biases), from the registry."""
    s = get_scheme(scheme)
    with np.errstate(divide="ignore"):
        return np.log(np.asarray([s.var_b(n) for n in sizes[:-1]], np.float64))


def one_step_prediction(stats: LayerStats, scheme: str, sizes: Sequence[int]) -> np.ndarray:
    """log E[(y^l)^2] predicted from each layer's own measured E[(x^l)^2]:
    n_l Var[w^l] E[x^2] + Var[b^l]."""
    if get_scheme(scheme).lsuv:  # LSUV's target: Var(y^l) = 1 on its batch
        return np.zeros_like(np.asarray(stats.in_log_sq, np.float64))
    fan_in = np.log(np.asarray(sizes[:-1], np.float64))
    weights = fan_in + scheme_log_var_w(scheme, sizes) + np.asarray(stats.in_log_sq, np.float64)
    return np.logaddexp(weights, scheme_log_var_b(scheme, sizes))


def chained_prediction(log_sq_input: float, scheme: str, sizes: Sequence[int],
                       *, second_moment: float = RELU_SECOND_MOMENT,
                       log_sq_first: float | None = None) -> np.ndarray:
    """log E[(y^l)^2] for every layer, from the data's log E[x^2] alone.

    ``Var[y^1] = n_1 Var[w^1] E[x^2] + Var[b^1]`` (or ``log_sq_first``, a measured
    value) and ``Var[y^l] = n_l Var[w^l] second_moment Var[y^{l-1}] + Var[b^l]``
    (``second_moment`` = E[f(y)^2] / Var[y]: 1/2 for ReLU).
    """
    if get_scheme(scheme).lsuv:
        return np.zeros(len(sizes) - 1)
    gain = np.log(np.asarray(sizes[:-1], np.float64)) + scheme_log_var_w(scheme, sizes)
    log_var_b = scheme_log_var_b(scheme, sizes)
    out = []
    for layer, (g, b) in enumerate(zip(gain, log_var_b)):
        if layer == 0:
            y = np.logaddexp(g + log_sq_input, b) if log_sq_first is None else log_sq_first
        else:
            y = np.logaddexp(g + math.log(second_moment) + y, b)
        out.append(float(y))
    return np.asarray(out)
