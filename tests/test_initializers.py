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
from winit_jax.registry import SCHEMES

SHAPE = (784, 512)  # (in, out), Flax layout
FAN_IN = 784
FLOATS = [jnp.float32, jnp.float16, jnp.bfloat16]


def sample(scheme, seed=0, shape=SHAPE, dtype=jnp.float32):
    return scheme.jax_init()(jax.random.key(seed), shape, dtype)


@pytest.mark.parametrize("name", list(SCHEMES))
def test_scheme_matches_its_theory(name):
    scheme = SCHEMES[name]
    w = sample(scheme)
    assert w.shape == SHAPE and w.dtype == jnp.float32
    assert_matches_scheme(w, scheme, FAN_IN)


def test_truncated_normal_fails_the_untruncated_check():
    # Negative control: jax's own he_normal is truncated at 2 std.
    w = jax.nn.initializers.he_normal()(jax.random.key(0), SHAPE)
    assert_moments(w, 2.0 / FAN_IN, "normal")  # same variance...
    with pytest.raises(AssertionError):
        assert_untruncated_normal(w, 2.0 / FAN_IN)  # ...but no tails


def test_named_schemes_match_the_notebook_formulas():
    # The registry's theory, written independently of the core.
    n = 784
    assert SCHEMES["he_normal"].var_w(n) == pytest.approx(math.sqrt(2 / n) ** 2)
    assert SCHEMES["he_uniform"].bound(n) == pytest.approx(math.sqrt(6 / n))
    assert SCHEMES["uniform"].bound(n) == pytest.approx(0.01)
    assert SCHEMES["lecun_normal"].var_w(n) == pytest.approx((1 / math.sqrt(n)) ** 2)


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
    assert_moments(w, scheme.var_w(FAN_IN), scheme.distribution)


@pytest.mark.parametrize("name", list(SCHEMES))
def test_float64_with_x64(name):
    scheme = SCHEMES[name]
    with jax.enable_x64(True):
        w = sample(scheme, seed=4, dtype=jnp.float64)
        assert w.dtype == jnp.float64
        assert_moments(w, scheme.var_w(FAN_IN), scheme.distribution)


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
