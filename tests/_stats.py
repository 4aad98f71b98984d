"""Statistical checks with tolerances derived from the sample size.

Each bound is Z standard errors of the estimator under the theoretical
distribution, Z = 5 (two-sided p of about 6e-7 per check).
"""

import math

import numpy as np
from scipy import stats

Z = 5.0
KURTOSIS = {"normal": 3.0, "uniform": 1.8}  # E[x^4] / Var[x]^2


def assert_moments(w, var, distribution):
    """Mean 0 and variance ``var`` within Z standard errors."""
    x = np.asarray(w, np.float64).ravel()
    n = x.size
    mean_se = math.sqrt(var / n)
    assert abs(x.mean()) <= Z * mean_se, (x.mean(), Z * mean_se)
    # Var of the sample variance: var^2 (kurtosis - 1) / n.
    var_se = var * math.sqrt((KURTOSIS[distribution] - 1.0) / n)
    assert abs(x.var() - var) <= Z * var_se, (x.var(), var, Z * var_se)


def assert_untruncated_normal(w, var):
    """Kurtosis 3 and the count beyond 4 std as a normal's (a truncated one has none)."""
    x = np.asarray(w, np.float64).ravel()
    n = x.size
    kurt = stats.kurtosis(x, fisher=False)
    assert abs(kurt - 3.0) <= Z * math.sqrt(24.0 / n), kurt
    expected = n * 2 * stats.norm.sf(4.0)
    tails = int(np.sum(np.abs(x) > 4 * math.sqrt(var)))
    assert abs(tails - expected) <= Z * math.sqrt(expected) and tails > 0, (tails, expected)


def assert_uniform_bounds(w, bound):
    """All |w| <= bound, and the extremes reach it: P(max < b (1 - t)) ~ exp(-n t / 2)."""
    x = np.asarray(w, np.float64).ravel()
    t = 40.0 / x.size  # P(x < b (1 - t)) = 1 - t/2, so (1 - t/2)^n ~ exp(-20)
    assert np.abs(x).max() <= bound * (1 + 1e-6)
    assert x.max() >= bound * (1 - t) and x.min() <= -bound * (1 - t)


def assert_matches_scheme(w, scheme, fan_in):
    """Moments, and the bounds (uniform) or the tails (normal), of a registry scheme."""
    var = scheme.var_w(fan_in)
    assert_moments(w, var, scheme.distribution)
    if scheme.distribution == "uniform":
        assert_uniform_bounds(w, scheme.bound(fan_in))
    else:
        assert_untruncated_normal(w, var)
