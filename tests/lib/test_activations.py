"""Exact gains: closed forms, Gauss-Hermite, high-precision integration, and the torch twin."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import integrate, special, stats

from winit_jax import activations as A
from winit_jax.activations import ACTIVATIONS

SMOOTH = ("tanh", "gelu", "silu", "mish")
# Independent float64 definitions (scipy/numpy), not the JAX functions under test.
REFERENCE = {
    "identity": lambda z: z,
    "relu": lambda z: np.maximum(z, 0.0),
    "leaky_relu": lambda z: np.where(z > 0, z, 0.01 * z),
    "elu": lambda z: np.where(z > 0, z, np.expm1(np.minimum(z, 0.0))),
    "selu": lambda z: 1.0507009873554805 * np.where(
        z > 0, z, 1.6732632423543772 * np.expm1(np.minimum(z, 0.0))),
    "tanh": np.tanh,
    "gelu": lambda z: z * special.ndtr(z),
    "silu": lambda z: z * special.expit(z),
    "mish": lambda z: z * np.tanh(np.logaddexp(0.0, z)),
}


def integrated(name, q=1.0):
    """E[f(sqrt(q) z)^2] by adaptive quadrature, split at the kink at 0 (error ~1e-13)."""
    f = REFERENCE[name]

    def g(z):
        return f(np.float64(math.sqrt(q) * z)) ** 2 * stats.norm.pdf(z)
    return sum(integrate.quad(g, a, b, epsabs=1e-15, epsrel=1e-13, limit=200)[0]
               for a, b in ((-np.inf, 0.0), (0.0, np.inf)))


def test_reference_table_covers_the_registry():
    assert set(REFERENCE) == set(ACTIVATIONS)


@pytest.mark.parametrize("name", list(ACTIVATIONS))
@pytest.mark.parametrize("q,rel", [
    (0.25, 1e-11), (1.0, 1e-11),
    # tanh(sqrt(q) z) has poles at z = +-i pi / (2 sqrt(q)): the strip of analyticity,
    # which sets Gauss-Hermite's rate, narrows as q grows (1.6e-8 for tanh at q = 4).
    (4.0, 1e-6)])
def test_second_moment_matches_numerical_integration(name, q, rel):
    assert A.second_moment(name, q) == pytest.approx(integrated(name, q), rel=rel)


def test_exact_values_from_the_derivation():
    # gain_normal's scale is 1 / second_moment: exactly He's 2 and LeCun's 1.
    assert 1 / A.second_moment("relu") == 2.0                          # He: Var[w] = 2 / n
    assert 1 / A.second_moment("identity") == 1.0                      # LeCun: 1 / n
    assert A.gain("relu") == pytest.approx(math.sqrt(2), rel=1e-15)
    a = 0.01
    assert A.gain("leaky_relu") ** 2 == pytest.approx(2 / (1 + a * a), rel=1e-15)
    assert A.gain("selu") ** 2 == pytest.approx(1.0, abs=1e-4)         # SELU's design
    assert abs(A.gain("selu") ** 2 - 1.0) < 1e-9                       # in fact much closer


@pytest.mark.parametrize("slope", [0.0, 0.2, 1.0, 3.0])
def test_gauss_hermite_on_callables_with_a_kink_at_zero(slope):
    # A symmetric rule integrates the odd part to 0: leaky ReLU is exact.
    fn = lambda x: jnp.where(x > 0, x, slope * x)  # noqa: E731
    assert A.second_moment(fn) == pytest.approx((1 + slope ** 2) / 2, rel=1e-13)


@pytest.mark.parametrize("name", SMOOTH)
def test_gauss_hermite_converges_fast_for_smooth_activations(name):
    assert A.second_moment(name, closed_form=False) == pytest.approx(integrated(name), rel=1e-12)
    assert A.second_moment(name, nodes=60) == pytest.approx(integrated(name), rel=1e-6)


@pytest.mark.parametrize("name", ["elu", "selu"])
def test_gauss_hermite_is_slow_at_a_kink_which_is_why_closed_forms_exist(name):
    exact = integrated(name)
    quad = A.second_moment(name, closed_form=False)
    # f^2 has a jump in its second derivative at 0: error ~ nodes^-2, ~1e-5 at 200 nodes.
    assert 1e-7 < abs(quad / exact - 1) < 1e-4
    assert A.second_moment(name) == pytest.approx(exact, rel=1e-12)


def test_gelu_is_the_erf_form_as_in_torch():
    approx = A.second_moment(jax.nn.gelu)  # jax's default: the tanh approximation
    assert A.second_moment("gelu") != pytest.approx(approx, rel=1e-6)
    assert A.second_moment("gelu") == pytest.approx(approx, rel=1e-4)


def test_gain_can_be_called_inside_jit():
    out = jax.jit(lambda x: x * A.gain(jax.nn.silu))(jnp.float32(1.0))
    assert float(out) == pytest.approx(1 / math.sqrt(integrated("silu")), rel=1e-6)


def test_variance_map_and_its_slope():
    # Exact gain: q = 1 is a fixed point for every activation.
    for name in ACTIVATIONS:
        q = A.variance_map(name, A.gain(name) ** 2, 1.0, 5)
        np.testing.assert_allclose(q, 1.0, rtol=1e-10)
    # ReLU is homogeneous: slope 1; tanh saturates: < 1; GELU tends to ReLU's 1/2 q
    # for large q and to q/4 for small q, so its second moment grows faster than q.
    assert A.map_slope("relu") == pytest.approx(1.0, abs=1e-8)
    assert A.map_slope("tanh") < 1 < A.map_slope("gelu")
    # He's gain on GELU: q -> 2 E[gelu(sqrt(q) z)^2] < q, so the map decays.
    q = A.variance_map("gelu", 2.0, 1.0, 10)
    assert np.all(np.diff(q) < 0)


@pytest.mark.parametrize("bad", [0.0, -1.0, float("nan"), float("inf")])
def test_bad_q(bad):
    with pytest.raises(ValueError, match="q must be"):
        A.second_moment("tanh", bad)


def test_bad_activation():
    with pytest.raises(ValueError, match="unknown activation 'swish'.*gelu"):
        A.gain("swish")
    with pytest.raises(TypeError, match="activation must be"):
        A.gain(3.0)
    with pytest.raises(ValueError, match="finite positive"):
        A.gain(lambda x: 0 * x)
    with pytest.raises(ValueError, match="elementwise"):
        A.gain(lambda x: x.sum())
    with pytest.raises(ValueError, match="nodes"):
        A.gain(jnp.tanh, nodes=1000)
