"""``winit_jax.sampling``: draws by fixed blocks (one compiled program per dtype, whatever
the shapes). Reproducible from the key, eager equal to jit bit for bit, the law jax.random's
whatever the block size."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from scipy import stats

import winit_jax.torch_like as tl
from winit_jax import sampling as S

SMALL = 1024  # a small block, so that a few thousand values span several blocks
SHAPES = [(1,), (7, 3), (1024,), (33, 65), (3, 3, 16, 24)]  # inside one block .. 4 blocks
KINDS = {
    "uniform": lambda k, s, **kw: S.uniform(k, s, minval=-0.3, maxval=0.5, **kw),
    "normal": lambda k, s, **kw: S.normal(k, s, scale=0.1, shift=0.2, **kw),
    "truncated_normal": lambda k, s, **kw: S.truncated_normal(k, -1.5, 2.0, s, scale=0.1, **kw),
}
CDF = {  # the law of each KINDS entry, from theory
    "uniform": stats.uniform(-0.3, 0.8).cdf,
    "normal": stats.norm(0.2, 0.1).cdf,
    "truncated_normal": stats.truncnorm(-1.5, 2.0, scale=0.1).cdf,
}


@pytest.mark.parametrize("kind", KINDS)
def test_same_key_same_values_and_eager_equals_jit(kind):
    draw = KINDS[kind]
    key = jax.random.key(3)
    eager = [np.asarray(draw(key, s, block=SMALL)) for s in SHAPES]
    again = [np.asarray(draw(key, s, block=SMALL)) for s in SHAPES]
    jitted = jax.jit(lambda k: [draw(k, s, block=SMALL) for s in SHAPES])(key)
    for s, a, b, c in zip(SHAPES, eager, again, jitted):
        assert a.shape == s and a.dtype == np.float32
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(a, np.asarray(c))
    other = np.asarray(draw(jax.random.key(4), SHAPES[-1], block=SMALL))
    assert not np.array_equal(other, eager[-1])


def test_a_tensor_is_the_prefix_of_its_blocks():
    """Values depend on the key and the position only: a smaller tensor is the start of a
    larger one (so a block of BLOCK values is drawn once and cut)."""
    key = jax.random.key(0)
    big = np.asarray(S.normal(key, (3000,), block=SMALL))
    np.testing.assert_array_equal(np.asarray(S.normal(key, (10, 100), block=SMALL)).ravel(),
                                  big[:1000])


@pytest.mark.parametrize("kind", KINDS)
def test_the_block_size_changes_the_values_not_the_law(kind):
    """KS of 20,000 draws against the theoretical CDF, for the default block and a small
    one; alpha 1e-3 per test, Bonferroni over the 6 tests (3 laws x 2 blocks)."""
    key = jax.random.key(11)
    default = np.asarray(KINDS[kind](key, (20_000,)))
    small = np.asarray(KINDS[kind](key, (20_000,), block=SMALL))
    assert not np.array_equal(default, small)
    for x in (default, small):
        assert stats.kstest(x, CDF[kind]).pvalue > 1e-3 / 6


def test_vmap_and_float64():
    keys = jax.random.split(jax.random.key(0), 3)
    stacked = jax.vmap(lambda k: S.normal(k, (5, 4), block=SMALL))(keys)
    for i in range(3):
        np.testing.assert_array_equal(np.asarray(stacked[i]),
                                      np.asarray(S.normal(keys[i], (5, 4), block=SMALL)))
    with jax.enable_x64(True):
        w = S.uniform(jax.random.key(0), (100,), jnp.float64, -1.0, 1.0)
        assert w.dtype == jnp.float64 and float(jnp.abs(w).max()) < 1


def test_torch_like_init_under_nnx_jit_equals_eager_bit_for_bit():
    def build():
        return nnx.Sequential(nnx.Conv(3, 8, (3, 3), rngs=nnx.Rngs(0)),
                              nnx.BatchNorm(8, rngs=nnx.Rngs(0)),
                              nnx.Linear(8, 300, rngs=nnx.Rngs(0)))

    eager = tl.init(build(), jax.random.key(5))
    jitted = build()
    nnx.jit(lambda m: tl.init(m, jax.random.key(5)))(jitted)
    a, b = nnx.state(eager, nnx.Param), nnx.state(jitted, nnx.Param)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def _words(key):
    return np.asarray(jax.random.key_data(key))


def test_host_fold_in_is_jaxs_bit_for_bit(monkeypatch):
    """``sampling.fold_in`` hashes on the host what ``jax.random.fold_in`` computes with
    XLA: 500 random keys and data (with the ends 0 and 2**32 - 1) give the same key words.
    Control: Threefry's two rotation rows swapped (a plausible slip) changes every key."""
    rng = np.random.default_rng(0)
    keys = [jax.random.wrap_key_data(w) for w in rng.integers(0, 2**32, (500, 2), np.uint32)]
    data = [0, 2**32 - 1, *rng.integers(0, 2**32, 498).tolist()]
    theirs = np.stack([_words(jax.random.fold_in(k, d)) for k, d in zip(keys, data)])
    ours = np.stack([_words(S.fold_in(k, d)) for k, d in zip(keys, data)])
    np.testing.assert_array_equal(ours, theirs)
    monkeypatch.setattr(S, "_ROTATIONS", S._ROTATIONS[::-1])
    broken = np.stack([_words(S.fold_in(k, d)) for k, d in zip(keys[:20], data[:20])])
    assert (broken != theirs[:20]).any(axis=1).all()


def test_fold_in_hands_what_it_cannot_hash_to_jax():
    """Traced keys (under jit), another key implementation and a uint32 scalar give
    jax.random.fold_in's result; a batch of keys gets jax's own error."""
    k = jax.random.key(3)
    jitted = jax.jit(lambda key: jax.random.key_data(S.fold_in(key, 11)))(k)
    np.testing.assert_array_equal(jitted, _words(jax.random.fold_in(k, 11)))
    rbg = jax.random.key(3, impl="rbg")
    np.testing.assert_array_equal(_words(S.fold_in(rbg, 5)), _words(jax.random.fold_in(rbg, 5)))
    with pytest.raises(ValueError, match="single key"):
        S.fold_in(jax.random.split(k, 3), 5)
    np.testing.assert_array_equal(_words(S.fold_in(k, np.uint32(9))),
                                  _words(jax.random.fold_in(k, 9)))
