"""The forward and gradient parts of ``check``: the outputs, then every tensor's gradient,
held to tolerances measured on the run; nearby-input probes for a kink flip in float32."""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from winit_jax.parity.io import Batch, leaves
from winit_jax.parity.jaxprs import differentiable_primitives, live_equations
from winit_jax.parity.layers import torch_layers
from winit_jax.parity.report import (
    Outcome,
)
from winit_jax.parity.run import Findings, Run, torch_outputs_and_grads
from winit_jax.parity.stats import rel_gap
from winit_jax.parity.tolerance import compared, demoted, exact_zeros, measured
from winit_jax.parity.transfer import torch_values

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
        e.primitive.name in COMPARISONS and any(
            jnp.issubdtype(getattr(v.aval, "dtype", jnp.int32), jnp.inexact) for v in e.invars)
        for e in eqns)
    # a kink counts where the derivative goes through it: softmax's stabilising max sits
    # under stop_gradient in every cross-entropy and attention
    kinked = bool(differentiable_primitives(jaxpr) & KINK_PRIMITIVES)
    return Kinks(slope=kinked or jumps, value=jumps)


def _port_value_and_grad(run: Run, static: dict) -> Callable:
    """``f(model, args, kwargs, targets) -> ((loss, output), gradients)`` of the port
    (``nnx``); ``static``: the keyword inputs that are not arrays."""
    def loss(m, args, kwargs, c):
        y = run.out_f(m(*args, **kwargs, **static))
        return run.call(y, c), y
    return nnx.value_and_grad(loss, has_aux=True)


def _port_outputs_and_grads(run: Run, model, batch: Batch, value_and_grad=None
                            ) -> tuple[dict, dict]:
    """The port's compared outputs (``{torch leaf key: array}``) and its loss's gradient
    per paired tensor, in torch's layout.

    Eager by default (one call: compiling costs more, a warm ViT check took 0.22 s eager,
    2.1 s jitted); the nearby-input probes pass one jitted ``_port_value_and_grad`` for
    their ``PROBES`` calls (a MobileNetV2's eager gradient took 2.3 s a call).
    """
    args, arrays = batch.flax_arrays()
    f = value_and_grad or _port_value_and_grad(run, batch.flax_static())
    (_, y_flax), grads = f(model, args, arrays, batch.targets_flax)
    # read the gradients in torch's layout through the pairs: write them into the model's
    # parameters for a moment, convert, and put the parameters back
    params = [v for _, v in nnx.iter_graph(model) if isinstance(v, nnx.Param)]
    originals = [v.get_value() for v in params]
    nnx.update(model, grads)
    try:
        grads_flax = torch_values(run.paired, "flax")
    finally:
        for var, value in zip(params, originals):
            var.set_value(value)
    out = leaves(y_flax)
    return {kt: np.asarray(out[kf]) for kt, kf in run.keys}, grads_flax


def _output_name(key: str) -> str:
    return f"output {key}" if key else "output"


def forward_and_gradient_stage(run: Run, ref) -> Findings:
    """Eval mode (no batch-statistic updates): the outputs, then every tensor's gradient.

    float32: each tolerance is measured on the run, as the steps' are: torch's own
    float32-vs-float64 gap on the same inputs (``ref``: torch in float64), times
    ``NOISE_FACTOR``, floored at ``TOLERANCES``. Where the port still fails, both are rerun
    on ``PROBES`` nearby inputs (each entry moved by +-``PROBE_ULPS`` float32 ulps, a fixed
    seed): if on one of them the port is within tolerance of torch's float64 result, the
    port computes torch's function and the gap at the given inputs is a rounding flip at a
    kink (ReLU6, max-pooling ties): the check is marked inconclusive, neither passed nor
    failed. A port that differs stays off on every nearby input and fails.

    Returns:
      ``Findings``: the checks and notes (a kink flip: inconclusive checks and a note).
    """
    batch = run.inputs
    run.modes(False)
    y_torch, grads_torch = torch_outputs_and_grads(run, run.torch_module, batch)
    ref_layers = dict(torch_layers(ref)) if ref is not None else None
    y_float64, grads_float64 = (torch_outputs_and_grads(run, ref.eval(), batch, float64=True,
                                                        layers=ref_layers)
                                if ref is not None else (y_torch, grads_torch))
    y_flax, grads_flax = _port_outputs_and_grads(run, run.model, batch)
    float32_reference = ref is not None  # torch in float64 beside a float32 check
    rows = [("forward", _output_name(k), y_flax[k], y_torch[k], y_float64[k],
             "max |diff| / max |torch output|") for k in y_torch]
    rows += [("gradient", k, grads_flax[k], g, grads_float64[k],
              "max |diff| / max |torch gradient|")
             for k, g in grads_torch.items()]
    checks = []
    for part, name, ours, theirs, float64, how in rows:
        noise = rel_gap(theirs, float64) if float32_reference else 0.0
        tol = measured(noise, run.tol[part])
        if float32_reference:
            how = f"{how}; torch's own float32 gap {noise:.2g}"
        checks.append(compared(part, name, rel_gap(ours, theirs), tol, how))
    # identically zero on both sides (a zero-initialised head, a parameter the loss does not
    # reach): 0 vs 0 tests nothing
    zero = {name for part, name, ours, theirs, _, _ in rows
            if not np.any(theirs) and not np.any(ours)}
    checks = [demoted(c, Outcome.NOT_TESTED, "not tested: zero in both frameworks" + (
        " (a zero-initialised head?); the layer rows compare the layers before it"
        if c.part == "forward" else " (the loss does not depend on it here)"))
        if c.name in zero else c for c in checks]
    # zero in exact arithmetic (a bias before a norm, attention key biases): only rounding
    # is left to compare, in every part
    exact = exact_zeros(grads_float64)
    checks = [demoted(c, Outcome.NOT_TESTED, "not tested: its gradient is zero in exact "
                      f"arithmetic ({exact[c.name]}), only rounding is left to compare")
              if c.part == "gradient" and c.name in exact and c.name not in zero else c
              for c in checks]
    # a rounding flip at a kink moves a gradient by what that unit contributes, which has no
    # bound relative to the tensor (one ReLU6 flip moved a faithful MobileNetV2 port's
    # depthwise kernel gradient 240 tolerances: 16 images of 4x4 positions per channel);
    # never in a model without a kink, an output only where a value jumps (ReLU itself is
    # continuous), a gradient only where the outputs agree (a flip moves the derivative)
    failing = {c.name: c for c in checks if c.outcome is Outcome.FAILED}
    if failing and float32_reference and run.data.movable(batch):
        kinks = port_kinks(run, batch)
        values_agree = kinks.value or all(c.outcome is not Outcome.FAILED for c in checks
                                          if c.part == "forward")
        failing = {k: c for k, c in failing.items()
                   if (kinks.value if c.part == "forward" else kinks.slope and values_agree)}
    if failing and float32_reference and run.data.movable(batch):
        nearby = _nearby_gaps(run, ref, ref_layers, batch,
                              {name: c.tol for name, c in failing.items()})
        checks = [demoted(c, Outcome.INCONCLUSIVE, "within tolerance of torch's float64 result "
                          f"on a nearby input ({nearby[c.name]:.2g}): inconclusive")
                  if c.name in failing and nearby[c.name] <= c.tol else c for c in checks]
    found = Findings(checks=checks)
    if zero:
        found.notes.append(f"not tested, zero in both frameworks: {', '.join(sorted(zero)[:5])}"
                         + (" ..." if len(zero) > 5 else ""))
    unsure = [c for c in checks if c.outcome is Outcome.INCONCLUSIVE]
    if unsure:
        found.notes.append(
            f"{len(unsure)} forward/gradient checks are inconclusive in float32 at these "
            "inputs: the port is off there but agrees with torch's float64 result on an input "
            f"{PROBE_ULPS} float32 ulps away (a rounding flip at a kink, e.g. ReLU6); "
            "compare in float64 (jax_enable_x64, a float64 torch module) to decide")
    return found


def _nearby_gaps(run, ref, ref_layers, batch: Batch, wanted: dict[str, float]
                 ) -> dict[str, float]:
    """Per output/gradient, the port's smallest gap to torch's float64 result over up to
    ``PROBES`` batches whose real-valued positional inputs are moved by +-``PROBE_ULPS``
    float32 ulps (fixed seed; token ids and other integers stay as they are), stopping once
    every check of ``wanted`` (name -> tolerance) has come within its tolerance: a flip
    costs a probe or two, a port that differs all ``PROBES``."""
    rng = np.random.default_rng(0)
    step = np.float32(PROBE_ULPS * np.finfo(np.float32).eps)
    out = {}
    # compiled once for the probes
    value_and_grad = nnx.jit(_port_value_and_grad(run, batch.flax_static()))
    for _ in range(PROBES):
        moved = run.data.moved(batch, rng, step)
        y_float64, grads_float64 = torch_outputs_and_grads(run, ref, moved, float64=True,
                                                           layers=ref_layers)
        y_flax, grads_flax = _port_outputs_and_grads(run, run.model, moved, value_and_grad)
        gaps = {**{_output_name(k): rel_gap(y_flax[k], y) for k, y in y_float64.items()},
                **{k: rel_gap(grads_flax[k], g) for k, g in grads_float64.items()}}
        out = {k: min(out.get(k, np.inf), v) for k, v in gaps.items()}
        if all(out.get(k, np.inf) <= tol for k, tol in wanted.items()):
            break
    return out
