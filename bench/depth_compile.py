"""What the depth sweep's shared program saves: compile and run times, one program per
scheme against one ``lax.switch`` program for a whole ``program_group``, in one run.

The sweep (``winit_jax.lab.depth.stats_over_seeds``) on a deep net compiles one XLA program
per group of schemes (``program_group``): each layer draws through a ``lax.switch`` over the
schemes' own initialisers. This script compiles the same sweep once per scheme (a group of
one, what the sweep did before), then the shared program, runs each on the same keys and
batch, checks the statistics are bit for bit the same, and prints the times and the ratio.
The run ``winit-jax compare`` makes: 500 rows, width 256, 50 layers, 8 seeds.

    python bench/depth_compile.py [--seeds 8] [--width 256] [--depth 50] [--rows 500]
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np

from winit_jax.lab import depth as V


def timed(schemes, index, keys, x, sizes, chunk):
    t0 = time.perf_counter()
    program = V.jax_stats.lower(jnp.int32(index), keys, x, schemes=schemes, sizes=sizes,
                                 chunk=chunk).compile()
    t1 = time.perf_counter()
    out = jax.block_until_ready(program(jnp.int32(index), keys, x))
    return program, t1 - t0, time.perf_counter() - t1, out


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", type=int, default=8)
    p.add_argument("--width", type=int, default=256)
    p.add_argument("--depth", type=int, default=50)
    p.add_argument("--rows", type=int, default=500)
    args = p.parse_args()
    x = jnp.asarray(np.random.default_rng(0).random((args.rows, 784), np.float32))  # pixels / 256
    sizes = V.depth_sizes(784, args.width, args.depth)
    keys = jnp.stack([jax.random.fold_in(jax.random.key(s), 0) for s in range(args.seeds)])
    jax.block_until_ready(jnp.ones(1) + 1)
    for group in dict.fromkeys(V.program_group(s) for s in V.SCHEMES):
        chunk = 1 if V.one_at_a_time(group[0]) else 8  # stats_over_seeds' default
        alone_c = alone_r = 0.0
        alone = {}
        for name in group:
            _, c, r, out = timed((name,), 0, keys, x, sizes, chunk)
            alone_c, alone_r, alone[name] = alone_c + c, alone_r + r, out
        shared, shared_c, shared_r, first = timed(group, 0, keys, x, sizes, chunk)
        same = True
        for i, name in enumerate(group):
            out = first
            if i:
                t = time.perf_counter()
                out = jax.block_until_ready(shared(jnp.int32(i), keys, x))
                shared_r += time.perf_counter() - t
            same &= all(np.array_equal(np.asarray(a), np.asarray(b), equal_nan=True)
                        for a, b in zip(out, alone[name]))
        print(f"{len(group)} schemes ({', '.join(group)}), chunk {chunk}:")
        print(f"  one program each: compile {alone_c:6.2f} s, run {alone_r:5.2f} s")
        print(f"  one shared:       compile {shared_c:6.2f} s, run {shared_r:5.2f} s")
        print(f"  compile ratio {alone_c / shared_c:.2f}x, total ratio "
              f"{(alone_c + alone_r) / (shared_c + shared_r):.2f}x; "
              f"statistics bit for bit equal: {same}")


if __name__ == "__main__":
    main()
