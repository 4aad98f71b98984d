"""reference_torch.init against theory, against winit_jax (KS), and against torch.nn.init."""

import math

import jax
import numpy as np
import pytest
from scipy import stats

import winit_jax as wj
from tests._stats import assert_matches_scheme
from tests.conftest import require_torch
from winit_jax.registry import SCHEMES

torch = require_torch()
nn = torch.nn

FAN_IN, FAN_OUT = 784, 512
# KS is run with both samples of 401,408 values: fixed seeds make it
# deterministic; ALPHA is the false-alarm rate a fresh seed would have.
ALPHA = 1e-4


def torch_weight(scheme, seed):
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(FAN_IN, FAN_OUT), nn.ReLU())
    model.apply(scheme.torch_init())
    w, b = model[0].weight.detach(), model[0].bias.detach()
    assert w.shape == (FAN_OUT, FAN_IN)  # torch layout (out, in)
    assert not b.any()  # biases zeroed
    return w.numpy().ravel()


def jax_weight(init, seed):
    return np.asarray(init(jax.random.key(seed), (FAN_IN, FAN_OUT))).ravel()  # Flax (in, out)


@pytest.mark.parametrize("name", list(SCHEMES))
def test_torch_reference_matches_theory(name):
    scheme = SCHEMES[name]
    w = torch_weight(scheme, seed=0)
    assert_matches_scheme(w, scheme, FAN_IN)


@pytest.mark.parametrize("name", list(SCHEMES))
def test_jax_and_torch_draw_the_same_distribution(name):
    scheme = SCHEMES[name]
    p = stats.ks_2samp(jax_weight(scheme.jax_init(), 11), torch_weight(scheme, 12)).pvalue
    assert p > ALPHA, p


@pytest.mark.parametrize("name,wrong", [
    # The KS test above would catch each of these mistakes on the JAX side:
    ("he_normal", wj.variance_scaling(2.0, "fan_out", "normal")),          # wrong fan axis
    ("he_normal", jax.nn.initializers.he_normal()),                         # truncated normal
    ("he_uniform", wj.variance_scaling(1.0, "fan_in", "uniform")),         # bound sqrt(3/n)
    ("lecun_normal", wj.variance_scaling(1.0, "fan_in", "truncated_normal")),
    ("uniform", jax.nn.initializers.uniform(0.01)),                        # [0, 0.01)
])
def test_ks_rejects_wrong_variants(name, wrong):
    p = stats.ks_2samp(jax_weight(wrong, 11), torch_weight(SCHEMES[name], 12)).pvalue
    assert p < 1e-6, p


@pytest.mark.parametrize("name,torch_fn", [
    ("he_normal", lambda w: nn.init.kaiming_normal_(w, nonlinearity="relu")),
    ("he_uniform", lambda w: nn.init.kaiming_uniform_(w, nonlinearity="relu")),
])
def test_he_schemes_coincide_with_torch_kaiming(name, torch_fn):
    torch.manual_seed(13)
    w = torch.empty(FAN_OUT, FAN_IN)  # kaiming's default mode="fan_in" reads size(1)
    torch_fn(w)
    ours = jax_weight(SCHEMES[name].jax_init(), 14)
    assert stats.ks_2samp(ours, w.numpy().ravel()).pvalue > ALPHA
    if name == "he_uniform":
        assert float(w.abs().max()) <= math.sqrt(6 / FAN_IN) * (1 + 1e-6)


def test_init_touches_only_linear_layers():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.BatchNorm1d(3), nn.Linear(3, 2))
    bn_before = model[2].weight.detach().clone()
    model.apply(SCHEMES["he_normal"].torch_init())
    assert torch.equal(model[2].weight.detach(), bn_before)
    assert not model[3].bias.detach().any()


@pytest.mark.parametrize("sigma", [0, -1.0, float("nan"), float("inf"), "0.1"])
def test_torch_bad_sigma(sigma):
    from reference_torch.init import init_layer_uniform
    with pytest.raises(ValueError, match="sigma"):
        init_layer_uniform(sigma)
