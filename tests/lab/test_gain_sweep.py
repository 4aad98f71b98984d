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
            cache[framework] = {(r["activation"], r["gain"]): r
                                for r in G.summarise(log_var, list(ACTIVATIONS), width=WIDTH)}
        return cache[framework]
    return get


def test_noise_horizon():
    assert G.noise_horizon(0.5, 512) == 10_000           # stable: the noise stays bounded
    assert 50 < G.noise_horizon(1.0, 512) < 70           # neutral: sqrt(2 l / 512) <= 0.5
    assert G.noise_horizon(1.17, 512) < 15               # unstable: grows like 1.17^l


@pytest.mark.slow
@pytest.mark.parametrize("framework", ["jax", "torch"])
@pytest.mark.parametrize("activation", list(ACTIVATIONS))
def test_exact_gain_keeps_unit_variance_up_to_the_noise_horizon(activation, framework, sweeps):
    row = sweeps(framework)[activation, "exact"]
    horizon = min(DEPTH, G.noise_horizon(row["map_slope"], WIDTH))
    mean = np.asarray(row["mean_var"])[:horizon]
    assert np.all((1 / FACTOR < mean) & (mean < FACTOR)), np.round(mean, 3)
    if row["map_slope"] <= 1 + 1e-9:  # a stable fixed point: the claim, all 50 layers
        assert horizon == DEPTH


@pytest.mark.slow
@pytest.mark.parametrize("framework", ["jax", "torch"])
@pytest.mark.parametrize("activation", list(ACTIVATIONS))
def test_he_gain_follows_the_infinite_width_map(activation, framework, sweeps):
    """He's 2 / n on other activations drifts exactly as q -> 2 E[f(sqrt(q) z)^2] predicts."""
    row = sweeps(framework)[activation, "he"]
    mean, theory = np.asarray(row["mean_var"]), np.asarray(row["theory"])
    assert np.all(np.abs(np.log(mean / theory)) < math.log(FACTOR)), np.round(mean / theory, 3)


@pytest.mark.slow
@pytest.mark.parametrize("framework", ["jax", "torch"])
@pytest.mark.parametrize("activation", ["gelu", "silu", "mish"])
def test_he_gain_drifts_where_the_exact_gain_does_not(activation, framework, sweeps):
    exact, he = sweeps(framework)[activation, "exact"], sweeps(framework)[activation, "he"]
    layer = min(DEPTH, G.noise_horizon(exact["map_slope"], WIDTH)) - 1
    assert he["mean_var"][layer] < 1 / FACTOR < exact["mean_var"][layer] < FACTOR
