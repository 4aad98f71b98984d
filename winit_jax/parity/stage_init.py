"""The init part of ``check``: every paired tensor drawn by ``torch_like.init`` against
torch's own draw, pooled over seeds (KS, Bonferroni); constants exactly."""

from __future__ import annotations

import copy

import jax
import numpy as np

from winit_jax.kinds import ParityError
from winit_jax.parity.pairing.layers import torch_layers
from winit_jax.parity.pairing.transfer import torch_values
from winit_jax.parity.report import (
    KS_ALPHA,
    Check,
    Outcome,
)
from winit_jax.parity.run import Findings, Run
from winit_jax.parity.stats import compare_draws, random_tensors

RECIPE_SEEDS = 1000  # infer_recipe builds torch's model with seeds 0..63


def _reset_torch(module):
    """What constructing ``module`` again draws: every submodule's ``reset_parameters`` (or
    ``_reset_parameters``), children before parents (MultiheadAttention zeroes the bias its
    out_proj Linear drew)."""
    for m in reversed(list(module.modules())):
        reset = getattr(m, "reset_parameters", None) or getattr(m, "_reset_parameters", None)
        if reset is not None:
            reset()


def init_stage(run: Run, seeds, overrides, fresh_torch) -> Findings:
    """Every paired tensor drawn for the port against torch's own draw, pooled over the
    seeds: KS with p >= 1e-3 / (tensors) (Bonferroni); constants exactly; rows torch keeps
    at zero in every draw (``padding_idx``) zero in the port's too.

    The port's draws: an ``InitRecipe`` given as ``overrides``; without a hand recipe
    (``overrides``), where torch's model can be built again (Hugging Face, diffusers, timm)
    or ``fresh_torch`` builds it, the recipe inferred from torch's own draws
    (``inference.infer_recipe``); else ``torch_like.init`` with the
    kinds' defaults and ``overrides``. Torch's draws: that factory's model, else each
    module's ``reset_parameters``. A failure names the law torch showed and the port's."""
    import torch

    from winit_jax import torch_like
    from winit_jax.parity.inference import InitRecipe, infer_recipe, rebuild, zero_rows

    found = Findings()
    ours, theirs = {}, {}
    all_layers = {name for name, _ in torch_layers(run.torch_module)}
    saved = copy.deepcopy(run.torch_module.state_dict())
    factory, _ = rebuild(run.torch_module, fresh_torch)
    recipe = overrides if isinstance(overrides, InitRecipe) else None
    inferred = None  # the recipe inferred here: torch's own laws
    if recipe is not None:
        found.notes.append(f"init: the port drawn by the recipe given ({recipe.source})")
    elif overrides is None and factory is not None:
        recipe = infer_recipe(run.torch_module, run.model, fresh_torch=fresh_torch,
                              pairing=run.paired)
        inferred = recipe
        found.notes.append(f"init: the port drawn by the recipe inferred from torch's own "
                           f"draws ({recipe.source}; parity.infer_recipe)")
    dtype = next(run.torch_module.parameters()).dtype
    for seed in range(seeds):
        if recipe is not None:
            recipe.init(run.model, jax.random.key(seed))
        else:
            torch_like.init(run.model, jax.random.key(seed), overrides=overrides,
                            pairing=run.paired)
        for k, v in torch_values(run.paired, "flax").items():
            ours.setdefault(k, []).append(np.asarray(v))
        # torch's reference draws: seeds apart from those the recipe was inferred from
        # (RECIPE_SEEDS on), so that the test is not of a fit against its own data
        torch.manual_seed(seed if inferred is None else RECIPE_SEEDS + seed)
        if factory is None:
            _reset_torch(run.torch_module)
            layers = None
        else:
            fresh = factory().to(dtype)
            layers = dict(torch_layers(fresh))
            if set(layers) != all_layers:
                extra = sorted(set(layers) ^ all_layers)[:3]
                raise ParityError(f"fresh_torch builds a module with other layers than "
                                  f"torch_module: {', '.join(extra)}")
        for k, v in torch_values(run.paired, "torch", layers).items():
            theirs.setdefault(k, []).append(np.asarray(v))
    pooled_ours = {k: np.concatenate([x.ravel() for x in v]) for k, v in ours.items()}
    pooled = {k: np.concatenate([x.ravel() for x in v]) for k, v in theirs.items()}
    threshold = KS_ALPHA / max(1, len(random_tensors(pooled)))
    for d in compare_draws(pooled_ours, pooled, threshold):
        how = f"{d.how}, {seeds} seeds"
        if not d.ok:
            how += (f"; torch: {_law(theirs[d.name], inferred, d.name)}; port: "
                    f"{_law(ours[d.name], recipe, d.name)}")
        found.checks.append(Check("init", d.name, Outcome.PASSED if d.ok else Outcome.FAILED,
                                  threshold, p_value=d.p, how=how))
    for k, draws in theirs.items():
        rows = zero_rows(draws)
        if rows:
            kept = all(not np.any(x[list(rows)]) for x in ours[k])
            found.checks.append(Check(
                "init", f"{k} (rows {list(rows)[:4]} zero)",
                Outcome.PASSED if kept else Outcome.FAILED, 0.0,
                how=f"torch keeps rows {list(rows)[:8]} at zero in every draw (padding_idx); "
                    f"the port's {'do' if kept else 'do not'}"))
    run.torch_module.load_state_dict(saved)
    return found


def _law(draws, recipe=None, name=None) -> str:
    """The law a tensor was drawn from: the recipe's, where one drew it, else what its
    draws show."""
    from winit_jax.parity.inference import identify

    if recipe is not None and name in recipe.laws:
        return recipe.laws[name].describe()
    law = identify(list(draws), KS_ALPHA)
    return law.describe() if law.family != "default" else f"undetermined ({law.note})"
