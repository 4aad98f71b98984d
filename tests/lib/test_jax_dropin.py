"""winit_jax as a drop-in for ``jax.nn.initializers``: signatures, every dtype and key kind
under jit (after jax's own ``NNInitializersTest`` cases), and equality in distribution
wherever the two promise the same distribution.

KS tests: two samples of N values each from fixed seeds; a test's threshold is
ALPHA / (number of KS tests in this file) (Bonferroni), ALPHA = 1e-3.
"""

import inspect
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

import winit_jax as wj

I = jax.nn.initializers
ALPHA = 1e-3
N_KS = 17  # KS tests below (each counts once in the correction)
THRESHOLD = ALPHA / N_KS

# ours -> jax's namesake with the same signature
MIRRORS = {
    "variance_scaling": I.variance_scaling, "he_normal": I.he_normal, "he_uniform": I.he_uniform,
    "lecun_normal": I.lecun_normal, "lecun_uniform": I.lecun_uniform,
    "glorot_normal": I.glorot_normal, "glorot_uniform": I.glorot_uniform,
    "orthogonal": I.orthogonal,
}


@pytest.mark.parametrize("name", list(MIRRORS))
def test_signature_is_jaxs_keyword_for_keyword(name):
    ours = inspect.signature(getattr(wj, name)).parameters
    theirs = inspect.signature(MIRRORS[name]).parameters
    assert list(ours)[:len(theirs)] == list(theirs)
    for p in theirs:
        assert ours[p].kind == theirs[p].kind, p
        assert ours[p].default == theirs[p].default, p


def test_the_returned_init_takes_jaxs_arguments():
    theirs = inspect.signature(I.he_normal()).parameters
    ours = inspect.signature(wj.he_normal()).parameters
    assert list(ours) == list(theirs) == ["key", "shape", "dtype", "out_sharding"]


# --- the conformance walk ------------------------------------------------------------

def _public_factories():
    """Every public initialiser factory of winit_jax: (name, zero-argument builder taking
    dtype, complex supported, rank-1 allowed)."""
    return [
        ("variance_scaling/fan_geo_avg/uniform",
         lambda d=None: wj.variance_scaling(1.0, "fan_geo_avg", "uniform", dtype=d), True, False),
        ("variance_scaling/fan_out/truncated_normal",
         lambda d=None: wj.variance_scaling(2.0, "fan_out", "truncated_normal", dtype=d), True,
         False),
        ("variance_scaling/none/normal",
         lambda d=None: wj.variance_scaling(1.0, "none", "normal", dtype=d), True, True),
        *[(n, lambda d=None, n=n: getattr(wj, n)(dtype=d), True, False)
          for n in ("he_normal", "he_uniform", "lecun_normal", "lecun_uniform", "glorot_normal",
                    "glorot_uniform", "orthogonal")],
        ("gain_normal", lambda d=None: wj.gain_normal("tanh", dtype=d), True, False),
        ("gain_uniform", lambda d=None: wj.gain_uniform("gelu", dtype=d), True, False),
        ("standard_normal", lambda d=None: wj.standard_normal(dtype=d), True, True),
        ("symmetric_uniform", lambda d=None: wj.symmetric_uniform(0.1, dtype=d), True, True),
        ("torch_linear_kernel", lambda d=None: wj.torch_linear_kernel(dtype=d), False, False),
        ("torch_linear_bias", lambda d=None: wj.torch_linear_bias(7, dtype=d), False, True),
    ]


FACTORIES = _public_factories()
SHAPES = [(2, 2), (2, 3), (2, 3, 4), (2, 3, 4, 5)]
# float16 and bfloat16 share the drawn-in-float32 path (bfloat16 walks it); complex128 the
# complex path of complex64 and the x64 path of float64. float64 is walked in the slow run.
FLOATS = ["bfloat16", "float32", pytest.param("float64", marks=pytest.mark.slow)]
COMPLEX = ["complex64"]


def test_the_walk_covers_every_public_factory():
    """A new initialiser in ``__all__`` must be added to the walk."""
    not_factories = {"ACTIVATIONS", "SCHEMES", "Scheme", "compute_fans", "gain", "get_scheme",
                     "second_moment", "MLP", "LSUVError", "from_torch", "to_torch", "lsuv",
                     "models", "optim", "parity"}
    walked = {name.split("/")[0] for name, *_ in FACTORIES}
    assert set(wj.__all__) - not_factories == walked


def _dtype(name):
    return jnp.dtype(name)


def _keys():
    return {"typed": jax.random.key(0), "legacy": jax.random.PRNGKey(0)}


def _check_walk(build, want, shapes, key_kinds, name):
    """One jitted program per way of giving the dtype (at construction, at the call), every
    shape and key kind inside; shapes and dtypes exact, values finite, both ways equal."""
    keys = [_keys()[k] for k in key_kinds]
    at_build = jax.jit(lambda ks: [build(want)(k, s) for s in shapes for k in ks])(keys)
    at_call = jax.jit(lambda ks: [build()(k, s, want) for s in shapes for k in ks])(keys)
    cases = [(s, kind) for s in shapes for kind in key_kinds]
    for (shape, kind), a, b in zip(cases, at_build, at_call):
        for out in (a, b):
            assert out.shape == shape and out.dtype == want, (name, shape, kind, out.dtype)
            assert bool(jnp.all(jnp.isfinite(out)))
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


@pytest.mark.parametrize("dtype", FLOATS + COMPLEX)
@pytest.mark.parametrize("name,build,complex_ok,rank1", FACTORIES, ids=[f[0] for f in FACTORIES])
def test_every_factory_every_dtype(name, build, complex_ok, rank1, dtype):
    """Every public factory, every float and complex dtype, one shape and a typed key."""
    with jax.enable_x64(dtype == "float64"):
        want = _dtype(dtype)
        if jnp.issubdtype(want, jnp.complexfloating) and not complex_ok:
            with pytest.raises(TypeError, match="dtype"):
                build(want)(jax.random.key(0), (2, 3))
            return
        _check_walk(build, want, [(2, 3, 4)], ["typed"], name)


# Shapes and key kinds go through the one _prepare / _variance_scaling path; one factory of
# each code path (the core, orthogonal's QR, a shape-free scheme, torch's bias) walks them.
WALKED = [f for f in FACTORIES if f[0] in ("variance_scaling/fan_geo_avg/uniform", "orthogonal",
                                           "standard_normal", "torch_linear_bias")]


@pytest.mark.slow
@pytest.mark.parametrize("dtype", ["float32"])  # the dtypes: test_every_factory_every_dtype
@pytest.mark.parametrize("name,build,complex_ok,rank1", WALKED, ids=[f[0] for f in WALKED])
def test_every_factory_every_shape_and_key_kind(name, build, complex_ok, rank1, dtype):
    """jax's NNInitializersTest cases: shapes (2, 2) to (2, 3, 4, 5) (and rank 1 where it is
    allowed), legacy ``PRNGKey`` and typed keys, dtype at construction and at the call."""
    if dtype == "complex64" and not complex_ok:
        return
    with jax.enable_x64(dtype == "float64"):
        _check_walk(build, _dtype(dtype), SHAPES + ([(5,)] if rank1 else []),
                    ["typed", "legacy"], name)


def test_rank_one_is_refused_where_jax_refuses_it():
    for factory in (wj.he_normal(), wj.glorot_uniform(), wj.orthogonal()):
        with pytest.raises(ValueError, match="rank >= 2"):
            factory(jax.random.key(0), (5,))
    with pytest.raises(ValueError):  # jax's own refuses it too
        I.he_normal()(jax.random.key(0), (5,))


def test_default_dtype_follows_x64_like_jax():
    assert wj.he_normal()(jax.random.key(0), (2, 3)).dtype == I.he_normal()(
        jax.random.key(0), (2, 3)).dtype == jnp.float32
    with jax.enable_x64(True):
        assert wj.he_normal()(jax.random.key(0), (2, 3)).dtype == jnp.float64


def test_non_float_dtypes_are_refused_at_construction_and_call():
    with pytest.raises(TypeError, match="dtype"):
        wj.he_normal(dtype=jnp.int32)
    with pytest.raises(TypeError, match="dtype"):
        wj.he_normal()(jax.random.key(0), (2, 3), jnp.int8)


# --- the same distribution as jax's ---------------------------------------------------

N = 100_000
SHAPE = (200, 500)  # N entries


def _ks(a, b):
    return stats.ks_2samp(np.ravel(a), np.ravel(b)).pvalue


def _draw(init, seed, dtype=jnp.float32, shape=SHAPE):
    return np.asarray(init(jax.random.key(seed), shape, dtype))


@pytest.mark.parametrize("ours,theirs", [
    (lambda: wj.variance_scaling(2.0, "fan_in", "truncated_normal"), lambda: I.he_normal()),
    (lambda: wj.variance_scaling(1.0, "fan_avg", "truncated_normal"), lambda: I.glorot_normal()),
    (lambda: wj.variance_scaling(1.0, "fan_geo_avg", "truncated_normal"),
     lambda: I.variance_scaling(1.0, "fan_geo_avg", "truncated_normal")),
    (lambda: wj.variance_scaling(3.0, "fan_out", "uniform"),
     lambda: I.variance_scaling(3.0, "fan_out", "uniform")),
    (wj.he_uniform, I.he_uniform),
    (wj.lecun_uniform, I.lecun_uniform),
    (wj.glorot_uniform, I.glorot_uniform),
    (wj.orthogonal, I.orthogonal),
    (lambda: wj.orthogonal(2.0, column_axis=-2), lambda: I.orthogonal(2.0, column_axis=-2)),
], ids=["he_trunc", "glorot_trunc", "geo_trunc", "fan_out_uniform", "he_uniform",
        "lecun_uniform", "glorot_uniform", "orthogonal", "orthogonal_col"])
def test_equal_in_distribution_to_jax(ours, theirs):  # 9 KS tests
    assert _ks(_draw(ours(), 1), _draw(theirs(), 2)) > THRESHOLD


def test_the_only_remaining_difference_is_truncation():  # 1 KS test, must fail
    """Negative control: the same KS test tells our untruncated he_normal from jax's."""
    assert _ks(_draw(wj.he_normal(), 1), _draw(I.he_normal(), 2)) < THRESHOLD  # fails the test
    assert np.abs(_draw(I.he_normal(), 2)).max() <= 2 * math.sqrt(2 / SHAPE[0]) / 0.8796 * 1.0001
    assert np.abs(_draw(wj.he_normal(), 1)).max() > 3 * math.sqrt(2 / SHAPE[0])


@pytest.mark.parametrize("distribution", ["normal", "uniform"])
def test_complex_weights_like_jaxs(distribution):  # 2 x 2 KS tests
    args = (2.0, "fan_in", distribution)
    ours = _draw(wj.variance_scaling(*args), 3, jnp.complex64)
    theirs = _draw(I.variance_scaling(*args), 4, jnp.complex64)
    assert _ks(ours.real, theirs.real) > THRESHOLD and _ks(ours.imag, theirs.imag) > THRESHOLD
    var = 2.0 / SHAPE[0]
    sq = np.abs(ours.astype(np.complex128)) ** 2
    # E|w|^2 = scale / fan_in; 5 standard errors of the mean of |w|^2 over N draws
    assert abs(sq.mean() - var) < 5 * sq.std() / math.sqrt(sq.size)
    if distribution == "uniform":  # the disk of radius sqrt(2 var)
        assert np.abs(ours).max() <= math.sqrt(2 * var) * (1 + 1e-6)


def test_complex_truncated_normal_has_the_asked_variance():  # 2 KS tests
    var = 1.0 / SHAPE[0]
    ours = _draw(wj.variance_scaling(1.0, "fan_in", "truncated_normal"), 5, jnp.complex64)
    theirs = _draw(I.variance_scaling(1.0, "fan_in", "truncated_normal"), 6, jnp.complex64)
    sq = np.abs(ours.astype(np.complex128)) ** 2
    assert abs(sq.mean() - var) < 5 * sq.std() / math.sqrt(sq.size)
    # jax's divides by 0.95311 instead of the cut distribution's std 0.96196: E|w|^2 is
    # (0.96196 / 0.95311)^2 = 1.0187 times var. Rescaled, the two have the same law.
    ratio = math.sqrt((1 - 5 * math.exp(-4)) / (1 - math.exp(-4))) / 0.95311164380491208
    theirs_sq = np.abs(theirs.astype(np.complex128)) ** 2
    assert abs(theirs_sq.mean() / var - ratio ** 2) < 5 * theirs_sq.std() / var / math.sqrt(N)
    assert _ks(ours.real, theirs.real / ratio) > THRESHOLD
    assert _ks(np.abs(ours), np.abs(theirs) / ratio) > THRESHOLD
    assert np.abs(ours).max() <= 2 * math.sqrt(var) / 0.96196 * (1 + 1e-5)  # the cut


def test_complex_orthogonal_is_unitary():
    w = _draw(wj.orthogonal(1.5), 7, jnp.complex64, (64, 32)).astype(np.complex128)
    np.testing.assert_allclose(w.conj().T @ w, 1.5 ** 2 * np.eye(32), atol=1e-5)
