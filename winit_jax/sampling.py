"""Random draws that compile once per process, whatever the shapes.

``jax.random.normal(key, shape)`` compiles one XLA program (threefry, then the transform)
for every distinct shape: a cold ResNet-18 pays ~20 of them, seconds each on a small CPU
(flax #1331, jax #1756). Here every tensor is drawn as consecutive blocks of ``BLOCK``
values from ``fold_in(key, block index)``, by one compiled program per (distribution,
dtype), and cut to its shape. The law is jax.random's (each block is ``jax.random.uniform``,
``normal`` or ``truncated_normal`` of that key); the values depend only on the key, the
shape, the dtype and ``BLOCK``. Called on a concrete key the blocks are drawn eagerly and
assembled on the host (no per-shape program at all); traced (``jit``, ``vmap``) the same
blocks are computed inside the caller's program, with the same values.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

BLOCK = 1 << 16  # values per block: one compiled program draws any tensor in ceil(n / BLOCK) calls


LAWS = ("uniform", "normal", "truncated_normal")

_MASK = 0xFFFFFFFF
_ROTATIONS = ((13, 15, 26, 6), (17, 29, 16, 24))  # Threefry-2x32's, as in jax.random (Random123)
_PARITY = 0x1BD11BDA  # Threefish's key-schedule constant (Salmon et al. 2011, Random123)


def _threefry2x32(k0: int, k1: int, x0: int, x1: int) -> tuple[int, int]:
    """One Threefry-2x32 block (20 rounds) on Python integers: the hash jax.random computes
    with ``threefry2x32_p``, bit for bit (unsigned 32-bit arithmetic wraps alike)."""
    ks = (k0, k1, k0 ^ k1 ^ _PARITY)
    x0, x1 = (x0 + ks[0]) & _MASK, (x1 + ks[1]) & _MASK
    for i in range(5):
        for r in _ROTATIONS[i % 2]:
            x0 = (x0 + x1) & _MASK
            x1 = ((x1 << r) | (x1 >> (32 - r))) & _MASK
            x1 ^= x0
        x0 = (x0 + ks[(i + 1) % 3]) & _MASK
        x1 = (x1 + ks[(i + 2) % 3] + i + 1) & _MASK
    return x0, x1


def fold_in(key, data: int):
    """``jax.random.fold_in(key, data)``, the same key bit for bit, computed on the host for
    a concrete threefry key and ``0 <= data < 2**32``: a cold process then compiles no
    program for it (jax's took ~0.15 s on a small CPU, once per process). Traced keys,
    batches of keys, other key implementations and other data go to
    ``jax.random.fold_in``.

    Args:
      key: a ``jax.random.key`` (or a batch, or a traced key: handed to jax).
      data: the integer folded in.

    Returns:
      The new key, as ``jax.random.fold_in`` returns it.

    Examples:
      >>> import jax
      >>> k = jax.random.key(0)
      >>> bool((jax.random.key_data(fold_in(k, 7))
      ...       == jax.random.key_data(jax.random.fold_in(k, 7))).all())
      True
    """
    if (isinstance(key, jax.core.Tracer) or not isinstance(key, jax.Array)
            or not jnp.issubdtype(key.dtype, jax.dtypes.prng_key) or key.shape != ()
            or str(jax.random.key_impl(key)) != "threefry2x32"
            or not isinstance(data, (int, np.integer)) or not 0 <= int(data) <= _MASK):
        return jax.random.fold_in(key, data)
    k0, k1 = (int(w) for w in np.asarray(jax.random.key_data(key)))
    # jax hashes the counter (0, data), as _threefry_seed makes it from a uint32
    words = np.array(_threefry2x32(k0, k1, 0, int(data)), np.uint32)
    return jax.random.wrap_key_data(words, impl="threefry2x32")


@functools.partial(jax.jit, static_argnames=("dtype", "size"))
def _blocks(key, index, law, lower, upper, scale, shift, *, dtype, size: int):
    """Block ``index`` of the law ``LAWS[law]`` from one key: one program per (dtype, size)
    whatever is drawn. The three laws are ``jax.random``'s, step for step: each is one
    ``jax.random.uniform`` draw on a law's own interval, then that law's transform, so the
    program holds one threefry (its compile is most of the program's) and a ``lax.switch``
    on the run-time ``law`` picks the interval and the transform (only the drawn law is
    computed). The normal laws are scaled and shifted here, inside the same program eagerly
    and under ``jit``, so that both round alike (XLA contracts ``x * scale + shift`` into an
    FMA)."""
    k = jax.random.fold_in(key, index)
    sqrt2 = np.array(np.sqrt(2), dtype)
    lower, upper = jnp.asarray(lower, dtype), jnp.asarray(upper, dtype)
    scale, shift = jnp.asarray(scale, dtype), jnp.asarray(shift, dtype)
    # the interval jax.random draws its uniform on: uniform's own, normal's
    # [nextafter(-1, 0), 1) (_normal_real), truncated normal's [erf(a / sqrt2), erf(b / sqrt2))
    lo, hi = jax.lax.switch(law, [
        lambda: (lower, upper),
        lambda: (jnp.asarray(np.nextafter(np.array(-1.0, dtype), np.array(0.0, dtype)), dtype),
                 jnp.asarray(1.0, dtype)),
        lambda: (jax.lax.erf(lower / sqrt2), jax.lax.erf(upper / sqrt2))])
    u = jax.random.uniform(k, (size,), dtype, lo, hi)
    return jax.lax.switch(law, [
        lambda: u,
        lambda: sqrt2 * jax.lax.erf_inv(u) * scale + shift,
        # truncated_normal clamps to the open interval (lower, upper)
        lambda: jnp.clip(sqrt2 * jax.lax.erf_inv(u),
                         jax.lax.nextafter(lower, jnp.asarray(np.inf, dtype)),
                         jax.lax.nextafter(upper, jnp.asarray(-np.inf, dtype))) * scale + shift])


def _draw(kind, key, shape, dtype, lower, upper, scale, shift, block):
    shape = tuple(int(d) for d in shape)
    dtype = np.dtype(dtype)
    if not jnp.issubdtype(dtype, jnp.floating):
        raise TypeError(f"winit_jax.sampling draws real floating dtypes, got {dtype}")
    size = int(block or BLOCK)
    n = math.prod(shape)
    count = max(1, -(-n // size))
    scale = 1.0 if scale is None else scale
    shift = 0.0 if shift is None else shift

    law = LAWS.index(kind)

    def one(i):
        return _blocks(key, i, law, lower, upper, scale, shift, dtype=dtype, size=size)

    if any(isinstance(x, jax.core.Tracer) for x in (key, lower, upper, scale, shift)):
        # the same block program, in a loop inside the caller's (lax.map, not vmap: a
        # vmapped block may vectorise erfinv otherwise and round differently from eager)
        # the parameters as run-time values, as they are eagerly: constants would be folded
        # at compile time by another erf than the one that runs
        law, lower, upper, scale, shift = jax.lax.optimization_barrier(
            (jnp.int32(law), lower, upper, scale, shift))
        return jax.lax.map(one, jnp.arange(count)).reshape(-1)[:n].reshape(shape)
    # eagerly: the blocks assembled on the host, no program for this shape
    flat = np.concatenate([np.asarray(one(i)) for i in range(count)])
    return jax.device_put(flat[:n].reshape(shape))  # jnp.asarray compiles per shape


def uniform(key, shape: Sequence[int], dtype=jnp.float32, minval=0.0, maxval=1.0, *,
            block: int | None = None) -> jax.Array:
    """``jax.random.uniform``'s law in [minval, maxval), drawn by blocks.

    Args:
      key: a ``jax.random.key`` or legacy ``PRNGKey``.
      shape, dtype: of the result (a real floating dtype).
      minval, maxval: the bounds.
      block: values per block (default ``BLOCK``); the values depend on it, the law not.

    Returns:
      An array of ``shape`` and ``dtype``.

    Examples:
      >>> import jax
      >>> uniform(jax.random.key(0), (3, 4), minval=-1.0, maxval=1.0).shape
      (3, 4)
    """
    return _draw("uniform", key, shape, dtype, minval, maxval, None, None, block)


def normal(key, shape: Sequence[int], dtype=jnp.float32, *, scale=None, shift=None,
           block: int | None = None) -> jax.Array:
    """``jax.random.normal``'s law, times ``scale`` plus ``shift`` (each in ``dtype``),
    drawn by blocks.

    Examples:
      >>> import jax
      >>> normal(jax.random.key(0), (2, 2), scale=0.1).dtype
      dtype('float32')
    """
    return _draw("normal", key, shape, dtype, 0.0, 1.0, scale, shift, block)


def truncated_normal(key, lower, upper, shape: Sequence[int], dtype=jnp.float32, *,
                     scale=None, shift=None, block: int | None = None) -> jax.Array:
    """``jax.random.truncated_normal``'s law on (lower, upper), times ``scale`` plus
    ``shift``, drawn by blocks.

    Examples:
      >>> import jax
      >>> bool(abs(truncated_normal(jax.random.key(0), -2.0, 2.0, (100,))).max() < 2)
      True
    """
    return _draw("truncated_normal", key, shape, dtype, lower, upper, scale, shift, block)


__all__ = ["BLOCK", "fold_in", "normal", "truncated_normal", "uniform"]
