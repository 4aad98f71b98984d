"""The metric part of ``check``: a held-out metric of both trained models."""

from __future__ import annotations

import jax.numpy as jnp
from flax import nnx

from winit_jax.parity.run import Run, first_output, widened
from winit_jax.parity.stats import rel_gap
from winit_jax.parity.tolerance import compared, measured

EVAL_CHUNK = 1000  # examples per forward pass when evaluating a metric (bounds memory)


def metric_stage(run: Run, ref, metric):
    """``metric`` of both trained models (and torch's float64 twin) on the held-out data."""
    import torch

    run.modes(False)
    x_t, x_f, c_t, c_f = run.held_out
    chunks = range(0, x_t.shape[0], EVAL_CHUNK)
    with torch.no_grad():
        y_t = torch.cat([first_output(run.torch_module(x_t[i:i + EVAL_CHUNK])) for i in chunks])
        y_r = (torch.cat([first_output(ref.eval()(widened(x_t[i:i + EVAL_CHUNK]))) for i in chunks])
               if ref is not None else None)
    forward = nnx.jit(lambda m, x: run.out_f(m(x)))
    y_f = jnp.concatenate([forward(run.model, x_f[i:i + EVAL_CHUNK]) for i in chunks])
    value_t, value_f = float(metric(y_t, c_t)), float(metric(y_f, c_f))
    run.metrics.update(torch=value_t, flax=value_f)
    noise = 0.0
    if ref is not None:
        value_r = float(metric(y_r, c_t))
        run.metrics["torch_float64"] = value_r
        noise = rel_gap(value_t, value_r)
    run.checks.append(compared("metric", getattr(metric, "__name__", "metric"),
                            rel_gap(value_f, value_t), measured(noise, run.tol["step"]),
                            f"torch {value_t:.6g}, port {value_f:.6g}; torch's own "
                                  f"float32 gap {noise:.2g}"))
