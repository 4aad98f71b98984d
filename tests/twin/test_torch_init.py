"""reference_torch.init against theory, against winit_jax (KS), and against torch.nn.init."""

import math

import jax
import numpy as np
import pytest
from scipy import stats

import winit_jax as wj
from tests._stats import assert_matches_scheme
from tests.conftest import require_torch
from winit_jax.schemes import SCHEMES

torch = require_torch()
from reference_torch.init import SCHEME_INITS  # noqa: E402
nn = torch.nn

FAN_IN, FAN_OUT = 784, 512
# KS is run with both samples of 401,408 values: fixed seeds make it
# deterministic; ALPHA is the false-alarm rate a fresh seed would have.
ALPHA = 1e-4


def torch_layer(scheme, seed):
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(FAN_IN, FAN_OUT), nn.ReLU())
    model.apply(SCHEME_INITS[scheme.name][0]())
    w, b = model[0].weight.detach(), model[0].bias.detach()
    assert w.shape == (FAN_OUT, FAN_IN)  # torch layout (out, in)
    return w.numpy(), b.numpy()


def torch_weight(scheme, seed):
    w, b = torch_layer(scheme, seed)
    assert (scheme.var_b(FAN_IN) == 0) == (not b.any())  # biases zeroed unless the scheme has them
    return w.ravel()


def jax_weight(init, seed):
    return np.asarray(init(jax.random.key(seed), (FAN_IN, FAN_OUT))).ravel()  # Flax (in, out)


@pytest.mark.parametrize("name", list(SCHEMES))
def test_torch_reference_matches_theory(name):
    scheme = SCHEMES[name]
    w = torch_weight(scheme, seed=0)
    assert_matches_scheme(w.reshape(FAN_OUT, FAN_IN).T, scheme, FAN_IN, FAN_OUT)


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
    model.apply(SCHEME_INITS["he_normal"][0]())
    assert torch.equal(model[2].weight.detach(), bn_before)
    assert not model[3].bias.detach().any()


@pytest.mark.parametrize("sigma", [0, -1.0, float("nan"), float("inf"), "0.1"])
def test_torch_bad_sigma(sigma):
    from reference_torch.init import init_layer_uniform
    with pytest.raises(ValueError, match="sigma"):
        init_layer_uniform(sigma)


@pytest.mark.parametrize("name,torch_fn", [
    ("glorot_normal", nn.init.xavier_normal_),
    ("glorot_uniform", nn.init.xavier_uniform_),
    ("orthogonal", lambda w: nn.init.orthogonal_(w, gain=math.sqrt(2))),
])
def test_new_schemes_coincide_with_torch_nn_init(name, torch_fn):
    torch.manual_seed(15)
    w = torch.empty(FAN_OUT, FAN_IN)
    torch_fn(w)
    ours = jax_weight(SCHEMES[name].jax_init(), 16)
    assert stats.ks_2samp(ours, w.numpy().ravel()).pvalue > ALPHA


def test_orthogonal_twin_layouts():
    # torch: (out, in) with out < in has orthonormal rows; the Flax kernel is its transpose.
    torch.manual_seed(17)
    w = torch.empty(FAN_OUT, FAN_IN)
    nn.init.orthogonal_(w, gain=1.5)
    gram_torch = (w.double() @ w.double().T).numpy()
    k = np.asarray(wj.orthogonal(1.5)(jax.random.key(18), (FAN_IN, FAN_OUT)), np.float64)
    np.testing.assert_allclose(gram_torch, 2.25 * np.eye(FAN_OUT), atol=1e-4)
    np.testing.assert_allclose(k.T @ k, 2.25 * np.eye(FAN_OUT), atol=1e-4)


def test_torch_default_matches_a_freshly_built_linear():
    """Weight and bias of ``torch_default`` (JAX) against ``nn.Linear``'s own constructor."""
    torch.manual_seed(19)
    fresh = nn.Linear(FAN_IN, FAN_OUT)
    k = jax.random.split(jax.random.key(20))
    kernel = wj.torch_linear_kernel()(k[0], (FAN_IN, FAN_OUT))
    bias = wj.torch_linear_bias(FAN_IN)(k[1], (FAN_OUT,))
    assert stats.ks_2samp(np.asarray(kernel).ravel(),
                          fresh.weight.detach().numpy().ravel()).pvalue > ALPHA
    assert stats.ks_2samp(np.asarray(bias), fresh.bias.detach().numpy()).pvalue > ALPHA
    # And in the MLP through the registry, the bias is drawn with each layer's fan_in.
    from flax import nnx

    mlp = wj.MLP((FAN_IN, FAN_OUT, 256), **SCHEMES["torch_default"].mlp_kwargs(), rngs=nnx.Rngs(0))
    ours = np.asarray(mlp.layers[1].bias[...])
    bound = 1 / math.sqrt(FAN_OUT)  # the second layer's fan_in, as nn.Linear(512, 256) uses
    assert np.abs(ours).max() <= bound
    # Not the first layer's narrower bound 1/28: P(all 256 |b| < 1/28) = (0.81)^256 ~ 1e-23.
    assert np.abs(ours).max() > 1 / math.sqrt(FAN_IN)


def test_torch_twin_gain_agrees_with_the_library_quadrature():
    from reference_torch.gain import gain as torch_gain
    from winit_jax.activations import ACTIVATIONS, gain

    # Two rules (physicists' nodes in the twin, probabilists' in the library) on two
    # frameworks' float64 activations: equal to 1e-12 only if both integrate correctly.
    for name in ACTIVATIONS:
        assert torch_gain(name) == pytest.approx(gain(name, closed_form=False), rel=1e-12)


def test_twin_covers_every_registry_name():
    from reference_torch.gain import ACTIVATIONS as TORCH_ACTS
    from reference_torch.init import SCHEME_INITS
    from winit_jax.activations import ACTIVATIONS

    assert set(TORCH_ACTS) == set(ACTIVATIONS)
    assert set(SCHEME_INITS) == set(SCHEMES)


def test_torch_calculate_gain_where_it_agrees_with_the_exact_gain():
    from reference_torch.gain import calculate_gain
    from winit_jax.activations import ACTIVATIONS, gain

    for name in ("gelu", "silu", "mish", "elu"):  # torch has no entry for these
        assert calculate_gain(name) is None
        with pytest.raises(ValueError):
            nn.init.calculate_gain(name)
    assert set(ACTIVATIONS) >= {"relu", "leaky_relu", "tanh", "selu"}
    # Where torch agrees with the exact gain and where not (documented in activations).
    assert calculate_gain("relu") == pytest.approx(gain("relu"), rel=1e-15)
    assert calculate_gain("leaky_relu") == pytest.approx(gain("leaky_relu"), rel=1e-15)
    assert calculate_gain("tanh") == pytest.approx(5 / 3) and gain("tanh") == pytest.approx(
        1.5925, abs=1e-4)
    assert calculate_gain("selu") == pytest.approx(3 / 4) and gain("selu") == pytest.approx(
        1.0, abs=1e-9)


@pytest.mark.parametrize("activation", ["relu", "tanh", "gelu"])
@pytest.mark.parametrize("distribution", ["normal", "uniform"])
def test_torch_gain_init_matches_jax(activation, distribution):
    from reference_torch.init import init_layer_gain

    torch.manual_seed(21)
    layer = nn.Linear(FAN_IN, FAN_OUT)
    layer.apply(init_layer_gain(activation, distribution))
    factory = wj.gain_normal if distribution == "normal" else wj.gain_uniform
    ours = jax_weight(factory(activation), 22)
    assert stats.ks_2samp(ours, layer.weight.detach().numpy().ravel()).pvalue > ALPHA
