"""The one statistics core of the JAX-vs-torch comparisons: how far two tensors are apart
(``rel_gap``), and whether two sets of initial draws come from one law (``compare_draws``).
``check`` and the lab's ``compare`` verdict both use these."""

from __future__ import annotations

import dataclasses

import numpy as np

MIN_KS_VALUES = 8  # below this a tensor is compared by its range only (KS has no power)
# Above this, KS runs on a random subset of this many values from each side (fixed seed): a
# subset of draws is a sample of the same law, and at 100,000 values a side KS at
# p = 1e-3 / 100 tensors already sees a gap of 0.012 between the CDFs (a variance off by 10 %
# moves the normal CDF by 0.024), while sorting a ResNet's 11 M values cost seconds.
MAX_KS_VALUES = 100_000


def rel_gap(a, b, *, per_entry: bool = False):
    """How far ``a`` is from the reference ``b``, relative.

    Args:
      a: arrays of one shape (or scalars).
      b: as ``a`` (above).
      per_entry: False: max |a - b| / max |b|, one number relative to the reference
        tensor's scale (not each entry's: near-zero entries would otherwise dominate); the
        absolute gap where ``b`` is all zero, inf where the shapes differ. True: |a - b| /
        |b| per entry (a loss curve, step by step), NaN where either is not finite.

    Examples:
      >>> rel_gap([1.0, 2.0], [1.0, 4.0])
      0.5
      >>> rel_gap([1.0, 2.0], [1.0, 4.0], per_entry=True).tolist()
      [0.0, 0.5]
    """
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if per_entry:
        with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
            gap = np.abs(a - b) / np.maximum(np.abs(b), np.finfo(np.float64).tiny)
        return np.where(np.isfinite(a) & np.isfinite(b), gap, np.nan)
    if a.shape != b.shape:
        return float("inf")
    scale = np.abs(b).max() if b.size else 0.0
    gap = np.abs(a - b).max() if b.size else 0.0
    return float(gap / scale) if scale > 0 else float(gap)


@dataclasses.dataclass(frozen=True)
class DrawTest:
    """One tensor's draws against the reference's."""

    name: str
    test: str          # "ks", "range" (too few values for KS) or "constant"
    p: float           # KS p-value; 1 or 0 for "range" and "constant"
    threshold: float
    ok: bool
    how: str


def random_tensors(theirs: dict) -> list[str]:
    """The tensors the reference draws at random (not one constant): those get a KS test."""
    return [k for k, v in theirs.items() if np.ptp(v) > 0]


def compare_draws(ours: dict, theirs: dict, threshold: float) -> list[DrawTest]:
    """Per tensor, pooled draws ``ours[k]`` against the reference ``theirs[k]`` (flat arrays):
    a two-sample KS test (p >= ``threshold``, the caller's Bonferroni share) where the
    reference is random, the reference's range +- its width where it has fewer than
    ``MIN_KS_VALUES`` values, equality where it is one constant."""
    from scipy import stats

    out = []
    for k, t in theirs.items():
        j = np.asarray(ours[k], np.float64)
        t = np.asarray(t, np.float64)
        if np.ptp(t) > 0 and min(len(t), len(j)) >= MIN_KS_VALUES:
            rng = np.random.default_rng(0)
            js, ts = (x if len(x) <= MAX_KS_VALUES else
                      x[rng.choice(len(x), MAX_KS_VALUES, replace=False)] for x in (j, t))
            p = float(stats.ks_2samp(js, ts).pvalue)
            out.append(DrawTest(k, "ks", p, threshold, p >= threshold,
                                f"KS, {len(ts)} values each" + (
                                    f" (a random subset of {len(t)})" if len(ts) < len(t)
                                    else "")))
        elif np.ptp(t) > 0:
            lo, hi = t.min(), t.max()
            inside = bool(np.all((j >= lo - (hi - lo)) & (j <= hi + (hi - lo))))
            out.append(DrawTest(k, "range", float(inside), threshold, inside,
                                f"{len(t)} values: within the reference's range +- its width"))
        else:
            same = bool(np.all(j == t[0])) if j.size else True
            out.append(DrawTest(k, "constant", float(same), threshold, same,
                                f"constant {t[0]:g} in the reference"))
    return out
