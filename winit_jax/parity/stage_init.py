"""The init part of ``check``: every paired tensor drawn by ``torch_like.init`` against
torch's own draw, pooled over seeds (KS, Bonferroni); constants exactly."""

from __future__ import annotations

import copy

import jax
import numpy as np

from winit_jax.kinds import ParityError
from winit_jax.parity.pairing.layers import torch_layers
from winit_jax.parity.report import (
    KS_ALPHA,
    Check,
    Outcome,
)
from winit_jax.parity.run import Findings, Run
from winit_jax.parity.stats import compare_draws, random_tensors
from winit_jax.parity.pairing.transfer import torch_values


def _reset_torch(module):
    """What constructing ``module`` again draws: every submodule's ``reset_parameters`` (or
    ``_reset_parameters``), children before parents (MultiheadAttention zeroes the bias its
    out_proj Linear drew)."""
    for m in reversed(list(module.modules())):
        reset = getattr(m, "reset_parameters", None) or getattr(m, "_reset_parameters", None)
        if reset is not None:
            reset()


def init_stage(run: Run, seeds, overrides, fresh_torch) -> Findings:
    """Every paired tensor drawn by ``torch_like.init`` against torch's own draw, pooled
    over the seeds: KS with p >= 1e-3 / (tensors) (Bonferroni); constants exactly."""
    import torch

    from winit_jax import torch_like

    found = Findings()
    ours, theirs = {}, {}
    names = {p.torch_name for p in run.paired}
    saved = copy.deepcopy(run.torch_module.state_dict())
    for seed in range(seeds):
        torch_like.init(run.model, jax.random.key(seed), overrides=overrides,
                        pairing=run.paired)
        for k, v in torch_values(run.paired, "flax").items():
            ours.setdefault(k, []).append(v.ravel())
        torch.manual_seed(seed)
        if fresh_torch is None:
            _reset_torch(run.torch_module)
            layers = None
        else:
            fresh = fresh_torch().to(next(run.torch_module.parameters()).dtype)
            layers = dict(torch_layers(fresh))
            if set(layers) != names:
                raise ParityError("fresh_torch builds a module with other layers than torch_module")
        for k, v in torch_values(run.paired, "torch", layers).items():
            theirs.setdefault(k, []).append(v.ravel())
    ours = {k: np.concatenate(v) for k, v in ours.items()}
    theirs = {k: np.concatenate(v) for k, v in theirs.items()}
    threshold = KS_ALPHA / max(1, len(random_tensors(theirs)))
    for d in compare_draws(ours, theirs, threshold):
        found.checks.append(Check("init", d.name, Outcome.PASSED if d.ok else Outcome.FAILED,
                                threshold, p_value=d.p, how=f"{d.how}, {seeds} seeds"))
    run.torch_module.load_state_dict(saved)
    return found
