"""Statistical checks with tolerances derived from the sample size.

Each bound is Z standard errors of the estimator under the theoretical
distribution, Z = 5 (two-sided p of about 6e-7 per check).
"""

import math

import numpy as np
from scipy import stats

Z = 5.0
# E[x^4] / Var[x]^2; a Haar orthogonal matrix's entries are normal as n grows (and
# their sum of squares is fixed, so the variance check is conservative for them).
KURTOSIS = {"normal": 3.0, "uniform": 1.8, "orthogonal": 3.0}


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


def assert_orthogonal(w, gain):
    """Flax layout (in, out): the smaller side's vectors are orthonormal times ``gain``."""
    w = np.asarray(w, np.float64)
    gram = w.T @ w if w.shape[0] >= w.shape[1] else w @ w.T
    # float32 QR: each Gram entry is a dot product of ~max(shape) roundings of 2^-24.
    tol = 50 * np.finfo(np.float32).eps * gain * gain
    assert np.abs(gram - gain * gain * np.eye(len(gram))).max() <= tol


def assert_matches_scheme(w, scheme, fan_in, fan_out):
    """Moments, and the bounds (uniform), the tails (normal) or the Gram matrix
    (orthogonal) of a registry scheme; ``w`` in Flax layout (fan_in, fan_out)."""
    var = scheme.var_w(fan_in, fan_out)
    if scheme.distribution == "orthogonal":
        # Entries of a Haar column are not independent: check the Gram matrix, and the
        # total sum of squares, which is exact: gain^2 min(fan_in, fan_out).
        assert_orthogonal(np.reshape(w, (fan_in, fan_out)), math.sqrt(var * max(fan_in, fan_out)))
        return
    assert_moments(w, var, scheme.distribution)
    if scheme.distribution == "uniform":
        assert_uniform_bounds(w, scheme.bound(fan_in, fan_out))
    else:
        assert_untruncated_normal(w, var)
