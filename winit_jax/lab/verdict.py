"""``winit-jax compare``'s JAX-vs-PyTorch verdict: per scheme, three parts, each with its
figure and its threshold; "agree" when every part that ran passes.

1. init: each framework draws its own weights with its own initialiser (as the runs do);
   per tensor, a two-sample KS test of the JAX draws against the torch draws, pooled over
   the run's seeds; threshold ``INIT_ALPHA`` / (tests in the run) (Bonferroni). A
   constant tensor (a zero bias) must be that constant in both. This catches a wrong
   scale, fan axis or truncation in either framework: 784 x 512 values per seed.
2. paired: the torch run that started from the JAX run's initial weights and saw its
   batches in its order (``experiment.paired_torch_run``); its loss at every step against
   the JAX run's. Both are float32, so they drift apart by rounding, at a rate chaos sets
   (the gap stays near 1e-7 for 20 steps in one run and 300 in another, then grows to
   percents). The tolerance is a measured bound: ``PAIRED_FACTOR`` x the larger of
   ``ENVELOPE``, the largest null gap per step measured over schemes, seeds and
   hyperparameters (bench/paired_gaps.py), and this run's own rounding twin (the JAX run
   with each batch's rows summed in another order, trained in the same program:
   ``TrainConfig.sort_rows``), which follows hyperparameters the envelope was not measured
   on (running maximum; floor ``ROUNDING_FLOOR`` ulps). Both diverging at the same step
   agrees. This catches a difference in the loss, the optimiser, the data order or the
   preprocessing: they show in the first steps, far above rounding.
3. independent (``--seeds`` >= ``MIN_SEEDS``): Welch's test between the frameworks'
   independent runs (each its own init and shuffling, as the notebook runs them) on test
   accuracy and on final loss; threshold ``WELCH_ALPHA`` / (tests in the run). With fewer
   seeds: "n/a (needs 3 seeds)", no verdict on noise.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from winit_jax.lab.train import RunResult, TrainConfig

INIT_ALPHA = 1e-3  # family-wise false-alarm rate of the init part, Bonferroni over its tests
WELCH_ALPHA = 1e-3  # the same for the independent part (schemes x 2 outcomes)
MIN_SEEDS = 3  # Welch's test on fewer runs per framework has no useful power
# The port's drift may be this many times the twin's: measured ratios of the JAX-vs-torch
# gap to the twin bound stay below it (bench/paired_gaps.py, BENCHMARKS.md).
PAIRED_FACTOR = 10.0
# The null gap per step, (first step, relative loss gap) and log-linear between: the largest
# gap, JAX vs paired torch or JAX vs its twin, over 10 schemes x 3 seeds x 3 settings (lr,
# momentum) = (0.01, 0.6), (0.1, 0.6), (0.01, 0.9), 10 epochs of the sample; checked on 2
# further seeds (bench/paired_gaps.py; BENCHMARKS.md). Early it is rounding (1e-7); chaos
# then amplifies it at a rate that varies from run to run, so one run's twin alone is no
# bound (measured: the port's gap reached 2e4 x its twin's in one run).
ENVELOPE = ((0, 1.2e-07), (1, 5.7e-07), (2, 2.6e-06), (5, 3.3e-06), (10, 5.1e-05),
            (20, 0.0013), (50, 0.003), (100, 0.0065), (200, 0.015), (300, 0.015),
            (400, 0.025))
# Floor of the yardstick, in ulps of the loss's dtype: two frameworks' float32 losses
# of the same weights differ by a few ulps (softmax and a 100-term mean summed in other
# orders); measured up to 5.7e-7 = 4.8 ulps at the first two steps (bench/paired_gaps.py).
ROUNDING_FLOOR = 8


@dataclasses.dataclass(frozen=True)
class InitPart:
    tensors: int          # KS tests (and constant checks) for this scheme
    values: int           # values per framework in the largest tensor, pooled over seeds
    min_p: float          # the smallest KS p-value (1.0 when every tensor is constant)
    threshold: float      # INIT_ALPHA / KS tests in the run
    worst: str            # the tensor with the smallest p (or a constant that differs)
    ok: bool


@dataclasses.dataclass(frozen=True)
class PairedPart:
    seeds: int
    worst_ratio: float    # max over seeds and steps of gap / tolerance
    worst_gap: float      # that step's relative loss gap
    worst_tol: float      # and its tolerance
    worst_step: int
    worst_seed: int
    diverged: list        # per seed: [JAX's first non-finite loss step, torch's] (None: never)
    ok: bool


@dataclasses.dataclass(frozen=True)
class IndependentPart:
    seeds: int            # runs per framework
    acc_p: float | None   # Welch p on test accuracy (None: not run)
    loss_p: float | None  # Welch p on final loss (None: not run, or too few finite losses)
    threshold: float | None
    ok: bool | None       # None: not run
    note: str = ""


@dataclasses.dataclass(frozen=True)
class Verdict:
    scheme: str
    verdict: str          # "agree" or "differ"
    init: InitPart
    paired: PairedPart | None
    independent: IndependentPart

    def to_json(self) -> dict:
        return dataclasses.asdict(self)


# --- 1. init ---------------------------------------------------------------------------

def init_draws(config: TrainConfig, dataset) -> tuple[dict, dict]:
    """``({tensor: JAX values}, {tensor: torch values})`` of one seed, in torch's names and
    layout: each framework's own initialisation of that run (data-dependent schemes
    calibrate on the run's first batch, as the runs do)."""
    import torch

    from reference_torch.lab.train import initial_model
    from winit_jax.lab.experiment import jax_initial_model
    from winit_jax.parity import to_torch

    ours = to_torch(jax_initial_model(config, dataset)).state_dict()
    theirs = initial_model(config, torch.as_tensor(dataset.x_train).to(
        getattr(torch, config.dtype))).state_dict()
    return ({k: v.numpy().ravel().copy() for k, v in ours.items()},
            {k: v.numpy().ravel().copy() for k, v in theirs.items()})


def pooled_draws(configs: Sequence[TrainConfig], dataset) -> tuple[dict, dict]:
    """``init_draws`` over the seeds of ``configs`` (one scheme), concatenated per tensor."""
    ours, theirs = {}, {}
    for c in configs:
        j, t = init_draws(c, dataset)
        for k in t:
            ours.setdefault(k, []).append(j[k])
            theirs.setdefault(k, []).append(t[k])
    return ({k: np.concatenate(v) for k, v in ours.items()},
            {k: np.concatenate(v) for k, v in theirs.items()})


def random_tensors(theirs: dict) -> list[str]:
    """The tensors torch draws at random (not one constant): those get a KS test."""
    return [k for k, v in theirs.items() if np.ptp(v) > 0]


def init_part(ours: dict, theirs: dict, threshold: float) -> InitPart:
    """KS per random tensor (p >= ``threshold``), equality for constant ones."""
    from scipy import stats

    min_p, worst, ok = 1.0, "", True
    for k, t in theirs.items():
        j = ours[k]
        if np.ptp(t) > 0:
            p = float(stats.ks_2samp(j, t, method="asymp").pvalue)
            if p < min_p:
                min_p, worst = p, k
            ok &= p >= threshold
        elif not np.all(j == t[0]):
            min_p, worst, ok = 0.0, k, False
    return InitPart(tensors=len(theirs), values=max(len(v) for v in theirs.values()),
                    min_p=min_p, threshold=threshold, worst=worst, ok=bool(ok))


# --- 2. paired -------------------------------------------------------------------------

def paired_gaps(a, b) -> np.ndarray:
    """Per step, |a - b| / |b| (NaN where either loss is not finite)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        gap = np.abs(a - b) / np.maximum(np.abs(b), np.finfo(np.float64).tiny)
    return np.where(np.isfinite(a) & np.isfinite(b), gap, np.nan)


def rounding_bound(twin_gap) -> np.ndarray:
    """The twin's yardstick per step: the running maximum of its gap, floored at
    ``ROUNDING_FLOOR`` float32 ulps."""
    floor = ROUNDING_FLOOR * float(np.finfo(np.float32).eps)
    return np.maximum(np.fmax.accumulate(np.nan_to_num(twin_gap, nan=0.0)), floor)


def envelope(steps, points=None) -> np.ndarray:
    """``ENVELOPE`` (or ``points``, (step, gap) pairs) at ``steps``: log-linear between the
    points, flat beyond the last (the gap saturates once the runs have decorrelated)."""
    points = ENVELOPE if points is None else points
    xs, ys = np.array([p[0] for p in points], float), np.log([p[1] for p in points])
    return np.exp(np.interp(np.asarray(steps, float), xs, ys))


def tolerance(twin_gap) -> np.ndarray:
    """Per step: ``PAIRED_FACTOR`` x the larger of the measured null envelope and this run's
    twin bound."""
    bound = rounding_bound(twin_gap)
    return PAIRED_FACTOR * np.maximum(bound, envelope(np.arange(len(bound))))


def first_nonfinite(losses) -> int | None:
    bad = np.flatnonzero(~np.isfinite(np.asarray(losses, np.float64)))
    return int(bad[0]) if bad.size else None


def paired_part(jax_runs: Sequence[RunResult], paired_runs: Sequence[RunResult]) -> PairedPart:
    """Every seed's paired loss curve within ``tolerance`` of the JAX run's, up to the first
    non-finite loss, which must come at the same step in both (float32 runs)."""
    worst = (0.0, 0.0, 0.0, 0, paired_runs[0].seed)
    diverged, ok = [], True
    for j, t in zip(jax_runs, paired_runs):
        dj, dt = first_nonfinite(j.losses), first_nonfinite(t.losses)
        diverged.append([dj, dt])
        ok &= dj == dt
        gap = paired_gaps(j.losses, t.losses)
        tol = tolerance(paired_gaps(j.losses, t.twin_losses))
        ratio = np.nan_to_num(gap / tol, nan=0.0)
        s = int(np.argmax(ratio))
        if ratio[s] > worst[0]:
            worst = (float(ratio[s]), float(gap[s]), float(tol[s]), s, t.seed)
    ok &= worst[0] <= 1.0
    return PairedPart(seeds=len(paired_runs), worst_ratio=worst[0], worst_gap=worst[1],
                      worst_tol=worst[2], worst_step=worst[3], worst_seed=worst[4],
                      diverged=diverged, ok=bool(ok))


# --- 3. independent ----------------------------------------------------------------------

def welch_p(a, b) -> float | None:
    """Welch's two-sided p over the finite values (None with fewer than 2 on a side)."""
    from scipy import stats

    a = np.asarray(a, np.float64)[np.isfinite(a)]
    b = np.asarray(b, np.float64)[np.isfinite(b)]
    if len(a) < 2 or len(b) < 2:
        return None
    if np.ptp(a) == 0 and np.ptp(b) == 0:  # no spread: the t statistic is 0/0
        return 1.0 if a[0] == b[0] else 0.0
    return float(stats.ttest_ind(a, b, equal_var=False).pvalue)


def independent_part(jax_runs, torch_runs, threshold: float) -> IndependentPart:
    n = min(len(jax_runs), len(torch_runs))
    if n < MIN_SEEDS:
        return IndependentPart(seeds=n, acc_p=None, loss_p=None, threshold=None, ok=None,
                               note=f"n/a (needs {MIN_SEEDS} seeds)")
    acc_p = welch_p([r.test_acc for r in jax_runs], [r.test_acc for r in torch_runs])
    loss_p = welch_p([r.final_loss for r in jax_runs], [r.final_loss for r in torch_runs])
    ps = [p for p in (acc_p, loss_p) if p is not None]
    note = "" if loss_p is not None else "final loss: fewer than 2 finite per framework"
    return IndependentPart(seeds=n, acc_p=acc_p, loss_p=loss_p, threshold=threshold,
                           ok=all(p >= threshold for p in ps), note=note)


# --- the verdict -------------------------------------------------------------------------

def verdicts(results: Sequence[RunResult], config: TrainConfig, dataset) -> dict[str, Verdict]:
    """Per scheme run in both frameworks, the three parts and the verdict.

    Args:
      results: ``compare``'s results (``jax``, ``torch`` and ``torch_paired`` runs).
      config: the run's hyperparameters (scheme and seed are taken from each result).
      dataset: the run's ``Dataset`` (the init draws calibrate on its first batch).
    """
    by = {}
    for r in results:
        by.setdefault((r.scheme, r.framework), []).append(r)
    schemes = [s for s in dict.fromkeys(r.scheme for r in results)
               if (s, "jax") in by and (s, "torch") in by]
    if not schemes:
        return {}
    draws = {s: pooled_draws([dataclasses.replace(config, scheme=s, seed=r.seed)
                              for r in by[s, "jax"]], dataset) for s in schemes}
    n_ks = sum(len(random_tensors(theirs)) for _, theirs in draws.values())
    init_threshold = INIT_ALPHA / max(1, n_ks)
    welch_threshold = WELCH_ALPHA / (2 * len(schemes))
    out = {}
    for s in schemes:
        init = init_part(*draws[s], init_threshold)
        paired = (paired_part(by[s, "jax"], by[s, "torch_paired"])
                  if (s, "torch_paired") in by else None)
        independent = independent_part(by[s, "jax"], by[s, "torch"], welch_threshold)
        parts = [init.ok] + ([paired.ok] if paired else []) + (
            [independent.ok] if independent.ok is not None else [])
        out[s] = Verdict(s, "agree" if all(parts) else "differ", init, paired, independent)
    return out
