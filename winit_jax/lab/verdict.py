"""``winit-jax compare``'s JAX-vs-PyTorch verdict: per scheme, three parts, each with its
figure and its threshold; "agree" when every part that ran passes.

1. init: each framework draws its own weights with its own initialiser (as the runs do);
   per tensor, a two-sample KS test of the JAX draws against the torch draws, pooled over
   the run's seeds; threshold ``INIT_ALPHA`` / (tests in the run) (Bonferroni). A
   constant tensor (a zero bias) must be that constant in both. A data-dependent scheme
   (LSUV) is tested on its draw before the calibration (``calibrated``). This catches a wrong
   scale, fan axis or truncation in either framework: 784 x 512 values per seed.
2. paired: the torch run that started from the JAX run's initial weights and saw its
   batches in its order (``experiment.paired_torch_run``); its loss at every step against
   the JAX run's. Both are float32, so they drift apart by rounding, at a rate set by the
   hyperparameters and, from run to run, by chaos (the gap stays near 1e-7 for 20 steps in
   one run and 300 in another, then grows to percents). The tolerance is a measured bound:
   ``PAIRED_FACTOR`` x ``ENVELOPES``, the largest null gap per step over 10 schemes x 3
   seeds for the run's hyperparameters (bench/paired_gaps.py), floored at
   ``ROUNDING_FLOOR`` ulps. Other hyperparameters get the union of the measured envelopes
   while lr / (1 - momentum) is within the measured range, else the part is "n/a"; steps
   beyond the measured run length are not compared. Both diverging at the same step
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

from winit_jax.lab.train import RunResult, TrainConfig, first_nonfinite
from winit_jax.parity.stats import compare_draws, random_tensors, rel_gap
from winit_jax.schemes import get_scheme

INIT_ALPHA = 1e-3  # family-wise false-alarm rate of the init part, Bonferroni over its tests
WELCH_ALPHA = 1e-3  # the same for the independent part (schemes x 2 outcomes)
MIN_SEEDS = 3  # Welch's test on fewer runs per framework has no useful power
# The port may drift this many times as far as the largest null gap measured.
PAIRED_FACTOR = 10.0
# The null gap of a paired run per step, (first step, relative loss gap) pairs, log-linear
# between, monotone: the largest |JAX loss - paired torch loss| / |torch loss| over 10
# schemes x seeds 0-2, 10 epochs of the sample (50 steps an epoch); keyed by (learning
# rate, momentum, batch size). Checked on seeds 3-4: the worst gap is 0.13, 0.04 and 0.12 of
# the tolerance (bench/paired_gaps.py; BENCHMARKS.md).
ENVELOPES = {
    (0.01, 0.6, 100): ((0, 2.1e-07), (1, 5.7e-07), (2, 2.2e-06), (5, 3.3e-06), (10, 4.6e-05),
                       (20, 0.00096), (50, 0.0025), (100, 0.0043), (200, 0.0079), (300, 0.014),
                       (400, 0.015)),
    (0.1, 0.6, 100): ((0, 2.1e-07), (1, 7.7e-06), (2, 0.00022), (5, 0.0087), (10, 0.051),
                      (20, 0.14), (50, 0.18), (100, 0.87), (200, 0.91), (300, 15), (400, 15)),
    (0.01, 0.9, 100): ((0, 2.1e-07), (1, 5.7e-07), (2, 2.4e-06), (5, 9.5e-06), (10, 0.00027),
                       (20, 0.0058), (50, 0.025), (100, 0.073), (200, 0.13), (300, 0.25),
                       (400, 0.25)),
}
ENVELOPE_STEPS = 500  # the measured runs' length: later steps are not compared
# Floor of the tolerance, in float32 ulps: two frameworks' losses of the same weights differ
# by a few ulps (softmax and a 100-term mean summed in other orders); measured up to
# 5.7e-7 = 4.8 ulps in the first two steps (bench/paired_gaps.py).
ROUNDING_FLOOR = 8


@dataclasses.dataclass(frozen=True)
class InitPart:
    stage: str            # "as trained", or "before calibration" (``calibrated``)
    tensors: int          # KS tests (and constant checks) for this scheme
    values: int           # values per framework in the largest tensor, pooled over seeds
    min_p: float          # the smallest KS p-value (1.0 when every tensor is constant)
    threshold: float      # INIT_ALPHA / KS tests in the run
    worst: str            # the tensor with the smallest p (or a constant that differs)
    ok: bool


@dataclasses.dataclass(frozen=True)
class PairedPart:
    seeds: int
    worst_ratio: float | None  # max over seeds and steps of gap / tolerance
    worst_gap: float | None    # that step's relative loss gap
    worst_tol: float | None    # and its tolerance
    worst_step: int | None
    worst_seed: int | None
    diverged: list        # per seed: [JAX's first non-finite loss step, torch's] (None: never)
    ok: bool | None       # None: no measured envelope covers the hyperparameters
    note: str = ""


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

def calibrated(scheme: str) -> bool:
    """Whether the init part tests ``scheme``'s weights as trained. A data-dependent scheme
    (LSUV) is tested on its random draw before the calibration: the calibration scales each
    layer by a factor that is itself random (measured: 0.73 to 1.09 between the frameworks'
    seed-0 layers), so the values within a tensor share it and are not the independent draws
    KS assumes; each framework checks its own calibration reached the target."""
    return get_scheme(scheme).post_init is None


def init_draws(config: TrainConfig, dataset) -> tuple[dict, dict]:
    """``({tensor: JAX values}, {tensor: torch values})`` of one seed, in torch's names and
    layout: each framework's own initialisation of that run (``calibrated``)."""
    import torch

    from reference_torch.lab.train import initial_model
    from winit_jax.lab.experiment import jax_initial_model
    from reference_torch.models import torch_from_mlp

    full = calibrated(config.scheme)
    ours = torch_from_mlp(jax_initial_model(config, dataset, calibrate=full)).state_dict()
    theirs = initial_model(config, torch.as_tensor(dataset.x_train).to(
        getattr(torch, config.dtype)), calibrate=full).state_dict()
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


def init_part(ours: dict, theirs: dict, threshold: float,
              stage: str = "as trained") -> InitPart:
    """KS per random tensor (p >= ``threshold``), equality for constant ones
    (``winit_jax.parity.stats.compare_draws``, as ``parity.check``'s init part)."""
    tests = compare_draws(ours, theirs, threshold)
    worst = min(tests, key=lambda d: d.p)
    return InitPart(stage=stage, tensors=len(theirs), values=max(len(v) for v in theirs.values()),
                    min_p=min(1.0, worst.p), threshold=threshold,
                    worst=worst.name if worst.p < 1 else "", ok=all(d.ok for d in tests))


# --- 2. paired -------------------------------------------------------------------------

def envelope_for(config: TrainConfig):
    """The measured envelope for ``config``'s hyperparameters: its own if measured, else
    the union of all while lr / (1 - momentum) is within the measured range at the measured
    batch size; None when nothing measured covers it."""
    key = (config.learning_rate, config.momentum, config.batch_size)
    if key in ENVELOPES:
        return ENVELOPES[key]
    speed = config.learning_rate / (1 - config.momentum)
    measured = [(lr / (1 - m), b) for lr, m, b in ENVELOPES]
    if any(speed <= v and config.batch_size == b for v, b in measured):
        steps = sorted({p[0] for e in ENVELOPES.values() for p in e})
        return tuple((s, max(float(envelope([s], e)[0]) for e in ENVELOPES.values()))
                     for s in steps)
    return None


def envelope(steps, points) -> np.ndarray:
    """``points`` ((step, gap) pairs) at ``steps``: log-linear between, flat after the last."""
    xs, ys = np.array([p[0] for p in points], float), np.log([p[1] for p in points])
    return np.exp(np.interp(np.asarray(steps, float), xs, ys))


def tolerance(n: int, config_or_points) -> np.ndarray | None:
    """The paired tolerance of each of ``n`` steps (inf beyond ``ENVELOPE_STEPS``), for a
    ``TrainConfig`` or explicit envelope points; None when no measured envelope covers it."""
    points = (envelope_for(config_or_points) if isinstance(config_or_points, TrainConfig)
              else config_or_points)
    if points is None:
        return None
    steps = np.arange(n)
    floor = ROUNDING_FLOOR * float(np.finfo(np.float32).eps)
    tol = PAIRED_FACTOR * np.maximum(envelope(steps, points), floor)
    return np.where(steps < ENVELOPE_STEPS, tol, np.inf)


BLOW_UP = 10.0  # a loss this many times the previous step's: the run is blowing up


def blow_up(losses) -> int:
    """The first step whose loss is more than ``BLOW_UP`` times the previous one (N(0, 1)
    weights: 9e4, 3e10, 6e17, NaN), or the length. From there float32 rounding grows with
    the loss, beyond the envelope measured on runs that do not blow up: such steps are not
    compared, only where both runs first turn non-finite."""
    x = np.abs(np.asarray(losses, np.float64))
    with np.errstate(invalid="ignore", over="ignore"):
        up = np.flatnonzero(~(x[1:] <= BLOW_UP * x[:-1]))
    return int(up[0]) + 1 if up.size else len(x)


def paired_part(jax_runs: Sequence[RunResult], paired_runs: Sequence[RunResult],
                config: TrainConfig) -> PairedPart:
    """Every seed's paired loss curve within ``tolerance`` of the JAX run's, up to the first
    non-finite loss, which must come at the same step in both (float32 runs)."""
    diverged = [[first_nonfinite(j.losses), first_nonfinite(t.losses)]
                for j, t in zip(jax_runs, paired_runs)]
    tol = tolerance(len(jax_runs[0].losses), config)
    if tol is None:
        return PairedPart(seeds=len(paired_runs), worst_ratio=None, worst_gap=None,
                          worst_tol=None, worst_step=None, worst_seed=None, diverged=diverged,
                          ok=None, note="n/a (no measured envelope covers these "
                                        "hyperparameters)")
    worst = (0.0, 0.0, float(tol[0]), 0, paired_runs[0].seed)
    for j, t in zip(jax_runs, paired_runs):
        gap = rel_gap(j.losses, t.losses, per_entry=True)
        gap[blow_up(t.losses):] = np.nan
        ratio = np.nan_to_num(gap / tol, nan=0.0)
        s = int(np.argmax(ratio))
        if ratio[s] > worst[0]:
            worst = (float(ratio[s]), float(gap[s]), float(tol[s]), s, t.seed)
    compared = min(len(tol), ENVELOPE_STEPS)
    return PairedPart(seeds=len(paired_runs), worst_ratio=worst[0], worst_gap=worst[1],
                      worst_tol=worst[2], worst_step=worst[3], worst_seed=worst[4],
                      diverged=diverged,
                      ok=bool(worst[0] <= 1.0 and all(a == b for a, b in diverged)),
                      note="" if compared == len(tol) else
                      f"steps 0-{compared - 1} of {len(tol)} compared (the measured range)")


# --- 3. independent ----------------------------------------------------------------------

def welch_p(a, b) -> float | None:
    """Welch's two-sided p over the finite values (None with fewer than 2 on a side).

    Written out (t = mean difference / sqrt(va/na + vb/nb), Welch-Satterthwaite degrees of
    freedom) rather than scipy's ``ttest_ind``, which warns of precision loss on runs that
    agree to the last digits (a dead net's 2.30229 losses); with no spread on either side
    the two means are either equal (p = 1) or not (p = 0).
    """
    from scipy import stats

    a = np.asarray(a, np.float64)[np.isfinite(a)]
    b = np.asarray(b, np.float64)[np.isfinite(b)]
    if len(a) < 2 or len(b) < 2:
        return None
    va, vb = np.var(a, ddof=1) / len(a), np.var(b, ddof=1) / len(b)
    diff = float(np.mean(a) - np.mean(b))
    if va + vb == 0:
        return 1.0 if diff == 0 else 0.0
    t = diff / np.sqrt(va + vb)
    df = (va + vb) ** 2 / (va ** 2 / (len(a) - 1) + vb ** 2 / (len(b) - 1))
    return float(2 * stats.t.sf(abs(t), df))


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
        init = init_part(*draws[s], init_threshold,
                         "as trained" if calibrated(s) else "before calibration")
        paired = (paired_part(by[s, "jax"], by[s, "torch_paired"], config)
                  if (s, "torch_paired") in by else None)
        independent = independent_part(by[s, "jax"], by[s, "torch"], welch_threshold)
        parts = [init.ok] + [p.ok for p in (paired, independent)
                             if p is not None and p.ok is not None]
        out[s] = Verdict(s, "agree" if all(parts) else "differ", init, paired, independent)
    return out
