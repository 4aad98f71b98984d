"""Exact gains through 50 layers of width 512, both frameworks, against the infinite-width map."""

import math

import numpy as np
import pytest

from tests.conftest import require_torch
from winit_jax.lab import gain_depth as G
from winit_jax.activations import ACTIVATIONS

WIDTH, DEPTH, SEEDS, ROWS = 512, 50, 32, 16
FACTOR = 2.0  # the band: mean Var[y^l] over seeds within a factor 2


@pytest.fixture(scope="module")
def sweeps():
    cache = {}

    def get(framework):
        if framework not in cache:
            if framework == "torch":
                require_torch()
            log_var, _ = G.seeded_sweep(framework, list(ACTIVATIONS), range(SEEDS),
                                        width=WIDTH, depth=DEPTH, rows=ROWS)
            cache[framework] = {(r.activation, r.gain): r
                                for r in G.summarise(log_var, list(ACTIVATIONS), width=WIDTH)}
        return cache[framework]
    return get


def horizon(slope: float, width: int, cap: int = DEPTH) -> int:
    """The test's own derivation, in closed form. Each layer adds relative noise of variance
    2 / width to E[y^2]; near the fixed point a log deviation is multiplied by the slope s
    per layer. After L layers its variance is 2 / width * sum_{k<L} s^(2k)
    = 2 / width * (s^(2L) - 1) / (s^2 - 1). The last L with std <= 0.5:
    L = floor(log(1 + (s^2 - 1) width / 8) / (2 log s)); s = 1: L = width / 8; s < 1 with
    1 / (1 - s^2) <= width / 8: never (capped at ``cap``)."""
    budget = width / 8  # (0.5 ** 2) / (2 / width)
    if abs(slope - 1) < 1e-12:
        return min(cap, math.floor(budget))
    if slope < 1 and 1 / (1 - slope ** 2) <= budget:
        return cap
    return min(cap, math.floor(math.log(1 + (slope ** 2 - 1) * budget) / (2 * math.log(slope))))


def slope_by_scipy(name: str, h: float = 1e-3) -> float:
    """d log E[f(sqrt(q) z)^2] / d log q at q = 1, from adaptive quadrature (not the library)."""
    from tests.lib.test_activations import integrated
    return math.log(integrated(name, math.exp(h)) / integrated(name, math.exp(-h))) / (2 * h)


def test_noise_horizon_against_the_closed_form():
    for slope in (0.5, 0.9, 1.0, 1.076, 1.144, 1.173, 1.5):
        for width in (64, 512, 4096):
            assert min(G.noise_horizon(slope, width), 10_000) == horizon(slope, width, 10_000), (
                slope, width)
    # the numbers docs/guides/initialisers.md quotes for width 512: GELU 11, SiLU 10, Mish 16, ReLU 64
    assert [horizon(slope_by_scipy(a), 512, 10_000) for a in ("gelu", "silu", "mish", "relu")
            ] == [11, 10, 16, 64]


@pytest.mark.slow
@pytest.mark.parametrize("framework", ["jax", "torch"])
@pytest.mark.parametrize("activation", list(ACTIVATIONS))
def test_exact_gain_keeps_unit_variance_up_to_the_noise_horizon(activation, framework, sweeps):
    row = sweeps(framework)[activation, "exact"]
    slope = slope_by_scipy(activation)
    layers = horizon(slope, WIDTH)
    mean = np.asarray(row.mean_var)[:layers]
    assert np.all((1 / FACTOR < mean) & (mean < FACTOR)), np.round(mean, 3)
    if slope <= 1 + 1e-6:  # a stable fixed point: the claim, all 50 layers
        assert layers == DEPTH


@pytest.mark.slow
@pytest.mark.parametrize("framework", ["jax", "torch"])
@pytest.mark.parametrize("activation", list(ACTIVATIONS))
def test_he_gain_follows_the_infinite_width_map(activation, framework, sweeps):
    """He's 2 / n on other activations drifts exactly as q -> 2 E[f(sqrt(q) z)^2] predicts."""
    row = sweeps(framework)[activation, "he"]
    mean, theory = np.asarray(row.mean_var), np.asarray(row.theory)
    assert np.all(np.abs(np.log(mean / theory)) < math.log(FACTOR)), np.round(mean / theory, 3)


@pytest.mark.slow
@pytest.mark.parametrize("framework", ["jax", "torch"])
@pytest.mark.parametrize("activation", ["gelu", "silu", "mish"])
def test_he_gain_drifts_where_the_exact_gain_does_not(activation, framework, sweeps):
    exact, he = sweeps(framework)[activation, "exact"], sweeps(framework)[activation, "he"]
    layer = horizon(slope_by_scipy(activation), WIDTH) - 1
    assert he.mean_var[layer] < 1 / FACTOR < exact.mean_var[layer] < FACTOR
