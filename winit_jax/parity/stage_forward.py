"""The forward and gradient parts of ``check``: the outputs, then every tensor's gradient,
held to tolerances measured on the run; nearby-input probes for a kink flip in float32."""

from __future__ import annotations

import numpy as np
from flax import nnx

from winit_jax.parity.io import Batch
from winit_jax.parity.kinks import PROBE_ULPS, PROBES, may_flip, port_kinks
from winit_jax.parity.pairing.layers import torch_layers
from winit_jax.parity.report import (
    Outcome,
)
from winit_jax.parity.run import (
    Findings,
    Run,
    port_outputs_and_grads,
    port_value_and_grad,
    torch_outputs_and_grads,
)
from winit_jax.parity.stats import rel_gap
from winit_jax.parity.tolerance import compared, demoted, exact_zeros, measured


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
    y_flax, grads_flax = port_outputs_and_grads(run, run.model, batch)
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
        values_agree = all(c.outcome is not Outcome.FAILED for c in checks
                           if c.part == "forward")
        failing = {k: c for k, c in failing.items()
                   if may_flip(kinks, c.part == "forward", values_agree)}
        if failing:
            nearby = _nearby_gaps(run, ref, ref_layers, batch,
                                  {name: c.tol for name, c in failing.items()})
            checks = [demoted(c, Outcome.INCONCLUSIVE, "within tolerance of torch's float64 "
                              f"result on a nearby input ({nearby[c.name]:.2g}): inconclusive")
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
    value_and_grad = nnx.jit(port_value_and_grad(run, batch.flax_static()))
    for _ in range(PROBES):
        moved = run.data.moved(batch, rng, step)
        y_float64, grads_float64 = torch_outputs_and_grads(run, ref, moved, float64=True,
                                                           layers=ref_layers)
        y_flax, grads_flax = port_outputs_and_grads(run, run.model, moved, value_and_grad)
        gaps = {**{_output_name(k): rel_gap(y_flax[k], y) for k, y in y_float64.items()},
                **{k: rel_gap(grads_flax[k], g) for k, g in grads_float64.items()}}
        out = {k: min(out.get(k, np.inf), v) for k, v in gaps.items()}
        if all(out.get(k, np.inf) <= tol for k, tol in wanted.items()):
            break
    return out
