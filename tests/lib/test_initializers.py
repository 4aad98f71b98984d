"""winit_jax.initializers: distributions, fans, dtypes, jit/vmap, Flax use, bad input."""

import math
import re

import flax.linen as linen
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import winit_jax as wj
from tests._stats import (assert_matches_scheme, assert_moments, assert_uniform_bounds,
                          assert_untruncated_normal)
from winit_jax.schemes import SCHEMES

SHAPE = (784, 512)  # (in, out), Flax layout
FAN_IN, FAN_OUT = SHAPE
FLOATS = [jnp.float32, jnp.float16, jnp.bfloat16]


def sample(scheme, seed=0, shape=SHAPE, dtype=jnp.float32):
    return scheme.jax_init()(jax.random.key(seed), shape, dtype)


@pytest.mark.parametrize("name", list(SCHEMES))
def test_scheme_matches_its_theory(name):
    scheme = SCHEMES[name]
    w = sample(scheme)
    assert w.shape == SHAPE and w.dtype == jnp.float32
    assert_matches_scheme(w, scheme, FAN_IN, FAN_OUT)


def test_truncated_normal_fails_the_untruncated_check():
    # Negative control: jax's own he_normal is truncated at 2 std.
    w = jax.nn.initializers.he_normal()(jax.random.key(0), SHAPE)
    assert_moments(w, 2.0 / FAN_IN, "normal")  # same variance...
    with pytest.raises(AssertionError):
        assert_untruncated_normal(w, 2.0 / FAN_IN)  # ...but no tails


def test_named_schemes_match_the_notebook_formulas():
    # The registry's theory, written independently of the core.
    n, m = 784, 512
    assert SCHEMES["he_normal"].var_w(n, m) == pytest.approx(math.sqrt(2 / n) ** 2)
    assert SCHEMES["he_uniform"].bound(n, m) == pytest.approx(math.sqrt(6 / n))
    assert SCHEMES["uniform"].bound(n, m) == pytest.approx(0.01)
    assert SCHEMES["lecun_normal"].var_w(n, m) == pytest.approx((1 / math.sqrt(n)) ** 2)
    # Glorot & Bengio (2010) eq. 16: U(+-sqrt(6) / sqrt(n_j + n_{j+1})).
    assert SCHEMES["glorot_uniform"].bound(n, m) == pytest.approx(math.sqrt(6) / math.sqrt(n + m))
    # torch.nn.Linear: bound 1 / sqrt(fan_in) for the weight and the bias.
    assert SCHEMES["torch_default"].bound(n, m) == pytest.approx(1 / math.sqrt(n))
    assert math.sqrt(3 * SCHEMES["torch_default"].var_b(n)) == pytest.approx(1 / math.sqrt(n))


@pytest.mark.parametrize("shape,axes,fan_in", [
    ((3, 3, 16, 32), {}, 144),                              # HWIO conv kernel
    ((32, 16, 3, 3), {"in_axis": 1, "out_axis": 0}, 144),   # torch OIHW conv weight
    ((512, 784), {"in_axis": -1, "out_axis": -2}, 784),     # torch Linear weight
    ((4, 784, 512), {"batch_axis": 0}, 784),                # stacked kernels
])
def test_fan_in_axes(shape, axes, fan_in):
    assert wj.compute_fans(shape, **axes)[0] == fan_in
    w = wj.he_normal(**axes)(jax.random.key(1), shape)
    assert_moments(w, 2.0 / fan_in, "normal")


def test_fan_modes():
    assert wj.compute_fans((784, 512)) == (784, 512)
    key = jax.random.key(2)
    w = wj.variance_scaling(1.0, "fan_out", "normal")(key, SHAPE)
    assert_moments(w, 1.0 / 512, "normal")
    w = wj.variance_scaling(1.0, "fan_avg", "uniform")(key, SHAPE)
    assert_moments(w, 2.0 / (784 + 512), "uniform")
    w = wj.variance_scaling(1.0, "fan_in", "truncated_normal")(key, SHAPE)
    assert_moments(w, 1.0 / 784, "normal")  # rescaled: the asked variance
    assert float(jnp.abs(w).max()) <= 2 * math.sqrt(1 / 784) / 0.87962566103423978 * (1 + 1e-6)


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("name", list(SCHEMES))
def test_low_precision_dtypes(name, dtype):
    scheme = SCHEMES[name]
    w = sample(scheme, seed=3, dtype=dtype)
    assert w.dtype == dtype and w.shape == SHAPE
    assert bool(jnp.all(jnp.isfinite(w)))
    # Rounding to 8 (bfloat16) or 11 (float16) mantissa bits moves the variance
    # by at most (2^-8)^2 relative: far below the 5-standard-error band.
    assert_moments(w, scheme.var_w(FAN_IN, FAN_OUT), scheme.distribution)


@pytest.mark.parametrize("name", list(SCHEMES))
def test_float64_with_x64(name):
    scheme = SCHEMES[name]
    with jax.enable_x64(True):
        w = sample(scheme, seed=4, dtype=jnp.float64)
        assert w.dtype == jnp.float64
        assert_moments(w, scheme.var_w(FAN_IN, FAN_OUT), scheme.distribution)


def test_float64_without_x64_is_refused():
    with pytest.raises(TypeError, match="jax_enable_x64"):
        wj.he_normal()(jax.random.key(0), SHAPE, jnp.float64)


@pytest.mark.parametrize("name", list(SCHEMES))
def test_jit_and_vmap_over_keys(name):
    init = SCHEMES[name].jax_init()
    keys = jax.random.split(jax.random.key(5), 4)
    eager = np.stack([np.asarray(init(k, (64, 32))) for k in keys])
    # Same random bits; XLA may fuse the scaling into erf_inv differently under
    # jit, which moves a value by at most an ulp or two (float32 eps 1.2e-7).
    jitted = jax.jit(init, static_argnums=(1, 2))
    np.testing.assert_allclose(np.asarray(jitted(keys[0], (64, 32), jnp.float32)), eager[0],
                               rtol=3e-7, atol=1e-9)
    batched = jax.jit(jax.vmap(lambda k: init(k, (64, 32))))(keys)
    np.testing.assert_allclose(np.asarray(batched), eager, rtol=3e-7, atol=1e-9)
    assert len({float(b.sum()) for b in batched}) == 4  # distinct keys, distinct draws


@pytest.mark.parametrize("dtype", FLOATS)
def test_as_kernel_init_in_nnx_linear(dtype):
    layer = nnx.Linear(784, 512, kernel_init=wj.he_normal(), param_dtype=dtype,
                       dtype=dtype, rngs=nnx.Rngs(0))
    kernel = layer.kernel[...]
    assert kernel.shape == (784, 512) and kernel.dtype == dtype
    assert_moments(kernel, 2.0 / 784, "normal")
    y = layer(jnp.ones((2, 784), dtype))
    assert y.shape == (2, 512) and y.dtype == dtype


def test_as_kernel_init_in_linen_dense():
    model = linen.Dense(512, kernel_init=wj.he_uniform())
    params = model.init(jax.random.key(0), jnp.ones((1, 784)))["params"]
    assert params["kernel"].shape == (784, 512)
    assert_uniform_bounds(params["kernel"], math.sqrt(6 / 784))
    assert not np.any(np.asarray(params["bias"]))  # zero biases, as in the notebooks


# --- bad input ------------------------------------------------------------------

@pytest.mark.parametrize("shape", [(), (5,)])
@pytest.mark.parametrize("factory", [wj.he_normal, wj.he_uniform, wj.lecun_normal])
def test_fan_scheme_rejects_rank_below_two(factory, shape):
    with pytest.raises(ValueError, match=re.escape(str(shape))):
        factory()(jax.random.key(0), shape)


def test_shape_free_schemes_accept_any_rank():
    assert wj.standard_normal()(jax.random.key(0), (7,)).shape == (7,)
    assert wj.symmetric_uniform(0.1)(jax.random.key(0), ()).shape == ()


@pytest.mark.parametrize("sigma", [0, -0.1, float("nan"), float("inf"), "0.1", None, True])
def test_bad_sigma(sigma):
    with pytest.raises(ValueError, match="sigma"):
        wj.symmetric_uniform(sigma)


@pytest.mark.parametrize("dtype", [jnp.int32, jnp.uint8, jnp.bool_])
def test_non_float_dtype(dtype):
    with pytest.raises(TypeError, match="dtype"):
        wj.he_normal()(jax.random.key(0), SHAPE, dtype)


@pytest.mark.parametrize("shape", [(0, 5), (784, 0), (0, 0), (3, 3, 0, 8)])
@pytest.mark.parametrize("name", list(SCHEMES))
def test_zero_size_shape_is_empty(name, shape):
    w = SCHEMES[name].jax_init()(jax.random.key(0), shape, jnp.bfloat16)
    assert w.shape == shape and w.dtype == jnp.bfloat16


@pytest.mark.parametrize("axes", [{"in_axis": 2}, {"out_axis": -3}, {"batch_axis": 5},
                                  {"in_axis": 0, "out_axis": 0}])
def test_fan_axes_out_of_range(axes):
    with pytest.raises(ValueError, match="axis"):
        wj.he_normal(**axes)(jax.random.key(0), SHAPE)


def test_bad_core_arguments():
    with pytest.raises(ValueError, match="mode"):
        wj.variance_scaling(1.0, "fan_sideways", "normal")
    with pytest.raises(ValueError, match="distribution"):
        wj.variance_scaling(1.0, "fan_in", "cauchy")
    with pytest.raises(ValueError, match="scale"):
        wj.variance_scaling(0.0, "fan_in", "normal")


def test_unknown_scheme_names_the_known_ones():
    with pytest.raises(ValueError, match="he_normal"):
        wj.get_scheme("glorot_banana")


# --- orthogonal, torch defaults, exact gains --------------------------------------

@pytest.mark.parametrize("shape,column_axis,gain", [
    ((784, 512), -1, 1.0),       # Flax kernel, in > out: orthonormal columns
    ((256, 512), -1, 2.0),       # in < out: orthonormal rows
    ((512, 784), -2, 1.5),       # torch (out, in) weight, columns = out
    ((3, 3, 16, 32), -1, 1.0),   # HWIO conv kernel: rows = 3*3*16 = 144
])
def test_orthogonal_gram_matrix(shape, column_axis, gain):
    w = np.asarray(wj.orthogonal(gain, column_axis=column_axis)(jax.random.key(0), shape))
    assert w.shape == shape
    m = np.moveaxis(w, column_axis, -1).reshape(-1, shape[column_axis]).astype(np.float64)
    gram = m.T @ m if m.shape[0] >= m.shape[1] else m @ m.T
    np.testing.assert_allclose(gram, gain ** 2 * np.eye(len(gram)), atol=50 * 1.2e-7 * gain ** 2)


@pytest.mark.slow
def test_orthogonal_is_haar_not_just_orthogonal():
    # Without the sign fix, QR's Q has a biased first row; with it, the (0, 0) entry of a
    # 2x2 Haar rotation is cos(theta), theta uniform: mean 0, E[cos^2] = 1/2.
    keys = jax.random.split(jax.random.key(1), 4000)
    w00 = np.asarray(jax.vmap(lambda k: wj.orthogonal()(k, (2, 2))[0, 0])(keys), np.float64)
    se = math.sqrt(0.5 / len(w00))
    assert abs(w00.mean()) < 5 * se
    assert abs(np.mean(w00 ** 2) - 0.5) < 5 * math.sqrt(0.125 / len(w00))  # Var[cos^2] = 1/8


@pytest.mark.parametrize("scale", [0, -1.0, float("nan"), "1"])
def test_orthogonal_bad_scale(scale):
    with pytest.raises(ValueError, match="scale"):
        wj.orthogonal(scale)


def test_orthogonal_bad_shape_and_axis():
    with pytest.raises(ValueError, match="rank >= 2"):
        wj.orthogonal()(jax.random.key(0), (5,))
    with pytest.raises(ValueError, match="column_axis"):
        wj.orthogonal(column_axis=2)(jax.random.key(0), SHAPE)


def test_torch_linear_pair_in_nnx():
    layer = nnx.Linear(784, 512, kernel_init=wj.torch_linear_kernel(),
                       bias_init=wj.torch_linear_bias(784), rngs=nnx.Rngs(0))
    bound = 1 / math.sqrt(784)
    assert_uniform_bounds(layer.kernel[...], bound)
    bias = np.asarray(layer.bias[...], np.float64)
    assert np.abs(bias).max() <= bound and bias.std() > bound / 3  # U(-b, b): std b / sqrt(3)


@pytest.mark.parametrize("fan_in", [0, -3, 2.5, "784", True, None])
def test_torch_linear_bias_bad_fan_in(fan_in):
    with pytest.raises(ValueError, match="fan_in"):
        wj.torch_linear_bias(fan_in)


@pytest.mark.parametrize("activation,var_fan_in", [
    ("relu", 2.0), ("identity", 1.0), ("tanh", 1 / 0.39429449039784),
    (jax.nn.relu, 2.0),  # a callable: Gauss-Hermite
])
@pytest.mark.parametrize("factory,distribution", [(wj.gain_normal, "normal"),
                                                  (wj.gain_uniform, "uniform")])
def test_gain_schemes(activation, var_fan_in, factory, distribution):
    w = factory(activation)(jax.random.key(6), SHAPE)
    assert_moments(w, var_fan_in / FAN_IN, distribution)


@pytest.mark.parametrize("factory, dtype", [(lambda: wj.symmetric_uniform(1e5), jnp.float16),
                                            (lambda: wj.orthogonal(1e39), jnp.float32),
                                            (lambda: wj.variance_scaling(1e10, "none", "normal"),
                                             jnp.float16)])
def test_weights_beyond_the_dtype_range_are_refused(factory, dtype):
    # float16's max is 65504: U(-1e5, 1e5) or N(0, 1e5^2) would come back with infs.
    with pytest.raises(ValueError, match="overflow"):
        factory()(jax.random.key(0), (8, 8), dtype)
