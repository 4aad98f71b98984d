"""Where a float32 rounding flip can move a port's results, read from the jaxpr of its
loss: kinks (a derivative jumps: ReLU's max) on a path a derivative takes, values that jump
(a comparison of real numbers, rounding, argmax) where they are used; and how near the
inputs that test for a flip lie."""

from __future__ import annotations

from typing import NamedTuple

import jax
from flax import nnx

from winit_jax.parity.io import Batch
from winit_jax.parity.jaxprs import differentiable_primitives, is_real, live_equations
from winit_jax.parity.run import Run

PROBES = 8  # nearby inputs tried when a float32 forward/gradient check fails
PROBE_ULPS = 4  # how near: each input entry moved by +-4 float32 ulps (relative)
# primitives whose derivative jumps somewhere (ReLU is max, max-pooling reduce_window_max,
# masks and clipping select_n / clamp): a model without any cannot flip at a kink
KINK_PRIMITIVES = frozenset({
    "max", "min", "abs", "sign", "clamp", "select_n", "sort", "argmax", "argmin",
    "reduce_max", "reduce_min", "reduce_window_max", "reduce_window_min", "floor", "ceil",
    "round", "rem", "reduce_precision", "cummax", "cummin"})


# primitives whose value itself jumps somewhere (a float comparison feeding a mask,
# rounding, an index of the largest): only these can turn a rounding difference into a
# jump of an output or a statistic; a kink (ReLU is continuous) moves the value by about
# the rounding, and only its derivative jumps
JUMP_PRIMITIVES = frozenset({"sign", "floor", "ceil", "round", "rem", "argmax", "argmin",
                             "sort", "reduce_precision"})
COMPARISONS = frozenset({"gt", "lt", "ge", "le", "eq", "ne"})


class Kinks(NamedTuple):
    """Where a rounding flip can move a port's results: ``slope``, a kink on its path (a
    derivative jumps: gradients may flip); ``value``, a value that jumps (outputs and
    statistics may flip too)."""

    slope: bool
    value: bool


def may_flip(kinks: Kinks, value: bool, values_agree: bool) -> bool:
    """Whether a failing check may be a rounding flip, to be probed on nearby inputs: an
    output or a statistic (``value``) only where a value can jump; a gradient where a kink
    is on a derivative path and the outputs agree (``values_agree``: a flip at a kink moves
    a derivative, not a value; where the values are off and none can jump, the pass itself
    is off)."""
    return kinks.value if value else kinks.slope and (kinks.value or values_agree)


def _loss_jaxpr(run: Run, batch: Batch):
    graph, state = nnx.split(run.model)
    args, arrays = batch.flax_arrays()
    static = batch.flax_static()

    def loss(state, args, arrays, targets):
        y = run.out_f(nnx.merge(graph, state)(*args, **arrays, **static))
        return run.call(y, targets)
    return jax.make_jaxpr(loss)(state, args, arrays, batch.targets_flax)


def port_kinks(run: Run, batch: Batch) -> Kinks:
    """The port's ``Kinks``, read from the primitives of its forward pass and loss (a
    comparison counts only on real numbers: a causal mask compares integer positions; a
    kink only where a derivative goes through it)."""
    jaxpr = _loss_jaxpr(run, batch)
    eqns = live_equations(jaxpr, derivative=False)  # an unused sign() moves nothing
    jumps = bool({e.primitive.name for e in eqns} & JUMP_PRIMITIVES) or any(
        e.primitive.name in COMPARISONS and any(is_real(v) for v in e.invars) for e in eqns)
    # a kink counts where the derivative goes through it: softmax's stabilising max sits
    # under stop_gradient in every cross-entropy and attention
    kinked = bool(differentiable_primitives(jaxpr) & KINK_PRIMITIVES)
    return Kinks(slope=kinked or jumps, value=jumps)


__all__ = ["COMPARISONS", "JUMP_PRIMITIVES", "KINK_PRIMITIVES", "PROBES", "PROBE_ULPS", "Kinks",
           "may_flip", "port_kinks"]
