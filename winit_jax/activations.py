"""Exact activation-aware gains: E[f(z)^2] for z ~ N(0, 1), by Gauss-Hermite quadrature.

Notebook A's derivation, ``Var[y^l] = n_l Var[w^l] E[f(y^{l-1})^2]``, keeps unit
pre-activation variance through depth when ``Var[w] = 1 / (n_l E[f(z)^2])``: ReLU's
E[f(z)^2] = 1/2 gives He's 2 / n_l. ``second_moment`` computes E[f(sqrt(q) z)^2] for
any JAX-traceable ``f`` with probabilists' Gauss-Hermite nodes (float64), or from a
closed form where the table below has one. ``gain = 1 / sqrt(E[f(z)^2])``, so that
``std(w) = gain / sqrt(fan_in)`` as in ``torch.nn.init``.

Gauss-Hermite is exact for polynomials of degree < 2 * nodes and converges
geometrically for smooth activations (tanh, GELU, SiLU, Mish at q = 1: < 1e-14 with 200
nodes; tanh at q = 4, whose poles are nearer the real axis: 1.6e-8).
Where f^2 has a kink at 0 (ELU, SELU) it converges only like nodes^-2 (about 2e-5 with
200 nodes), so those use their closed forms; a symmetric rule still gets ReLU and
leaky ReLU exactly, as the odd part integrates to zero.

Where this differs from ``torch.nn.init.calculate_gain``: torch's tanh gain 5/3 and
SELU gain 3/4 are rules of thumb (5/3 keeps tanh nets away from saturation; 3/4 was
picked for self-normalising nets), not 1/sqrt(E[f(z)^2]) (1.593 and 1.0); torch has no
entry for GELU, SiLU or Mish and falls back to "linear" (1.0) only if asked so.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from numpy.polynomial.hermite_e import hermegauss

NODES = 200  # hermegauss is accurate to about 300 nodes in float64; 200 is ample here
LEAKY_SLOPE = 0.01  # torch.nn.LeakyReLU and jax.nn.leaky_relu defaults
# SELU's constants (Klambauer et al. 2017, eq. 14), as in jax.nn.selu and torch.selu.
SELU_ALPHA = 1.6732632423543772848170429916717
SELU_SCALE = 1.0507009873554804934193349852946


def _erfcx(u: float) -> float:
    """exp(u^2) erfc(u) for u >= 0, without overflow (asymptotic series beyond u = 25,
    where its first omitted term is below 1e-12)."""
    if u < 25:
        return math.exp(u * u) * math.erfc(u)
    v = 1 / (2 * u * u)
    return (1 - v + 3 * v * v - 15 * v ** 3) / (u * math.sqrt(math.pi))


def _elu_moment(q: float, alpha: float) -> float:
    """E[elu(s z)^2], s = sqrt(q): s^2/2 + alpha^2 E[(e^{sz} - 1)^2; z < 0], using
    E[e^{tz}; z < 0] = e^{t^2/2} Phi(-t) = erfcx(t / sqrt(2)) / 2."""
    s = math.sqrt(q)
    neg = 0.5 * _erfcx(math.sqrt(2) * s) - _erfcx(s / math.sqrt(2)) + 0.5
    return q / 2 + alpha * alpha * neg


@dataclasses.dataclass(frozen=True)
class Activation:
    """One activation. Its torch counterpart is the twin's (``reference_torch.gain``).

    Attributes:
      name: registry key, as given to ``--activations``.
      jax_fn: the JAX function.
      closed_form: E[f(sqrt(q) z)^2] as a function of q, where one exists.
    """

    name: str
    jax_fn: Callable
    closed_form: Callable[[float], float] | None = None


ACTIVATIONS: dict[str, Activation] = {a.name: a for a in (
    Activation("identity", lambda x: x, closed_form=lambda q: q),
    Activation("relu", jax.nn.relu, closed_form=lambda q: q / 2),
    Activation("leaky_relu", functools.partial(jax.nn.leaky_relu, negative_slope=LEAKY_SLOPE),
               closed_form=lambda q: q * (1 + LEAKY_SLOPE ** 2) / 2),
    Activation("elu", jax.nn.elu, closed_form=lambda q: _elu_moment(q, 1.0)),
    Activation("selu", jax.nn.selu,
               closed_form=lambda q: SELU_SCALE ** 2 * _elu_moment(q, SELU_ALPHA)),
    Activation("tanh", jnp.tanh),
    # torch's F.gelu is the erf form by default; jax.nn.gelu defaults to the tanh form.
    Activation("gelu", functools.partial(jax.nn.gelu, approximate=False)),
    Activation("silu", jax.nn.silu),
    Activation("mish", jax.nn.mish),
)}


def get_activation(name: str) -> Activation:
    """Returns the registered activation, or raises ValueError listing the known names."""
    try:
        return ACTIVATIONS[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown activation {name!r}; known activations: "
                         f"{', '.join(ACTIVATIONS)}") from None


@functools.lru_cache(maxsize=8)
def hermite_rule(nodes: int = NODES) -> tuple[np.ndarray, np.ndarray]:
    """Nodes and weights with sum(w f(x)) ~ E[f(z)], z ~ N(0, 1) (weights sum to 1)."""
    if not isinstance(nodes, int) or not 2 <= nodes <= 300:
        raise ValueError(f"nodes must be an integer in [2, 300], got {nodes!r}")
    x, w = hermegauss(nodes)  # weight exp(-x^2 / 2); the weights sum to sqrt(2 pi)
    return x, w / w.sum()


def _quadrature(fn: Callable, q: float, nodes: int) -> float:
    x, w = hermite_rule(nodes)
    # Eager float64 even when called while tracing an outer jit, or with x64 off.
    with jax.ensure_compile_time_eval(), jax.enable_x64(True):
        fx = np.asarray(fn(jnp.asarray(math.sqrt(q) * x, jnp.float64)), np.float64)
    if fx.shape != x.shape:
        raise ValueError(f"activation must map an array elementwise; got shape {fx.shape} "
                         f"for input {x.shape}")
    value = float(np.sum(w * fx * fx))
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"activation has E[f(z)^2] = {value}; a gain needs a finite positive one")
    return value


def _check_q(q) -> float:
    q = float(q)
    if not (math.isfinite(q) and q > 0):
        raise ValueError(f"q must be a finite positive variance, got {q}")
    return q


def second_moment(activation: str | Callable, q: float = 1.0, *, nodes: int = NODES,
                  closed_form: bool = True) -> float:
    """E[f(sqrt(q) z)^2] for z ~ N(0, 1).

    Args:
      activation: a name in ``ACTIVATIONS`` or any elementwise JAX-traceable function.
      q: the variance of the pre-activation.
      nodes: Gauss-Hermite nodes.
      closed_form: use the table's closed form where a named activation has one.

    Returns:
      The second moment, a Python float.

    Examples:
      >>> second_moment("relu")
      0.5
      >>> round(second_moment(jax.nn.relu), 15)
      0.5
    """
    q = _check_q(q)
    if isinstance(activation, str):
        act = get_activation(activation)
        if closed_form and act.closed_form is not None:
            return float(act.closed_form(q))
        activation = act.jax_fn
    if not callable(activation):
        raise TypeError(f"activation must be a name or a callable, got {activation!r}")
    return _quadrature(activation, q, nodes)


def gain(activation: str | Callable, **kwargs) -> float:
    """1 / sqrt(E[f(z)^2]): ``Var[w] = gain^2 / fan_in`` keeps unit pre-activation variance.

    Examples:
      >>> round(gain("relu") ** 2, 12)
      2.0
    """
    return 1.0 / math.sqrt(second_moment(activation, **kwargs))


def variance_map(activation: str | Callable, var_w_fan_in: float, q0: float, depth: int,
                 **kwargs) -> np.ndarray:
    """The infinite-width recursion q_l = n Var[w] E[f(sqrt(q_{l-1}) z)^2] for l = 1..depth.

    ``q0`` is the variance of the input pre-activations z (the net applies f to them
    first); ``var_w_fan_in`` is n Var[w], the squared gain. Returns q_1..q_depth.
    """
    q, out = _check_q(q0), []
    for _ in range(depth):
        q = var_w_fan_in * second_moment(activation, q, **kwargs)
        out.append(q)
        if not (0 < q < 1e300):
            out += [q] * (depth - len(out))
            break
    return np.asarray(out)


def map_slope(activation: str | Callable, *, step: float = 1e-4, **kwargs) -> float:
    """d log E[f(sqrt(q) z)^2] / d log q at q = 1: the fixed point q = 1 of the exact gain's
    variance map is stable when this is < 1 and unstable when > 1 (finite-width noise
    then grows from layer to layer)."""
    up = second_moment(activation, math.exp(step), **kwargs)
    down = second_moment(activation, math.exp(-step), **kwargs)
    return math.log(up / down) / (2 * step)
