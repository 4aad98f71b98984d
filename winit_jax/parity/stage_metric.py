"""The metric part of ``check``: a held-out metric of both trained models."""

from __future__ import annotations

import jax.numpy as jnp
from flax import nnx

from winit_jax.parity.io import leaves
from winit_jax.parity.run import Findings, Run
from winit_jax.parity.stats import rel_gap
from winit_jax.parity.tolerance import compared, measured

EVAL_CHUNK = 1000  # examples per forward pass when evaluating a metric (bounds memory)


def metric_stage(run: Run, ref, metric) -> Findings:
    """``metric`` of both trained models (and torch's float64 twin) on the held-out data,
    ``EVAL_CHUNK`` examples a forward pass, on the first compared output."""
    import torch

    run.modes(False)
    held = run.held_out
    chunks = [held.rows(slice(i, i + EVAL_CHUNK)) for i in range(0, held.size, EVAL_CHUNK)]
    first_torch, first_flax = run.keys[0]

    def torch_first(module, batch, float64=False):
        return leaves(run.torch_out(batch.torch_call(module, float64=float64)))[first_torch]
    with torch.no_grad():
        y_torch = torch.cat([torch_first(run.torch_module, c) for c in chunks])
        y_float64 = (torch.cat([torch_first(ref.eval(), c, True) for c in chunks])
                     if ref is not None else None)
    static = held.flax_static()
    forward = nnx.jit(lambda m, a, k: leaves(run.out_f(m(*a, **k, **static)))[first_flax])
    y_flax = jnp.concatenate([forward(run.model, *c.flax_arrays()) for c in chunks])
    targets_torch = held.targets_torch
    value_torch = float(metric(y_torch, targets_torch))
    value_flax = float(metric(y_flax, held.targets_flax))
    found = Findings(metrics={"torch": value_torch, "flax": value_flax})
    noise = 0.0
    if ref is not None:
        value_float64 = float(metric(y_float64, targets_torch))
        found.metrics["torch_float64"] = value_float64
        noise = rel_gap(value_torch, value_float64)
    found.checks.append(compared(
        "metric", getattr(metric, "__name__", "metric"), rel_gap(value_flax, value_torch),
        measured(noise, run.tol["step"]),
        f"torch {value_torch:.6g}, port {value_flax:.6g}; torch's own float32 gap {noise:.2g}"))
    return found
