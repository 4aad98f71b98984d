"""Where a training step's time goes: the full step against variants without one part.

    python bench/profile_step.py [--rows 12000] [--rounds 3]

Each variant is one jitted ``lax.scan`` over an epoch's batches of notebook A's MLP; the
variants are timed in interleaved rounds and the best round counts (ms per step).
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from winit_jax.lab.train import TrainConfig, init_model, loss_fn, make_optimizer

FLOP_PER_STEP = 2.64e6 * 100  # bench_train.FLOP_PER_SAMPLE x batch 100


def variant(name, graphdef, tx, x, y, idx):
    def body(carry, rows):
        state, opt_state = carry
        xb, yb = (x[:100], y[:100]) if name == "no gather" else (x[rows], y[rows])
        loss, grads = jax.value_and_grad(lambda s: loss_fn(nnx.merge(graphdef, s), xb, yb))(state)
        if name == "forward + backward only":
            return carry, loss + 0 * sum(jnp.sum(g) for g in jax.tree.leaves(grads))
        updates, opt_state = tx.update(grads, opt_state, state)
        state = optax.apply_updates(state, updates)
        finite = jnp.isfinite(loss)
        if name != "no NaN/inf flags":
            for leaf in jax.tree.leaves(state):
                finite &= jnp.isfinite(leaf).all()
        return (state, opt_state), (loss, finite)
    return jax.jit(lambda state, opt_state: jax.lax.scan(body, (state, opt_state), idx)[1])


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rows", type=int, default=12_000)
    p.add_argument("--rounds", type=int, default=3)
    args = p.parse_args(argv)
    rng = np.random.default_rng(0)
    x = jnp.asarray((rng.integers(0, 256, (args.rows, 784)) / 256).astype(np.float32))
    y = jnp.asarray(rng.integers(0, 10, args.rows).astype(np.int32))
    config = TrainConfig()
    graphdef, state = nnx.split(init_model(config))
    tx = make_optimizer(config)
    opt_state = tx.init(state)
    idx = jax.random.permutation(jax.random.key(0), args.rows).reshape(-1, 100)
    names = ("full step", "no NaN/inf flags", "no gather", "forward + backward only")
    fns = {n: variant(n, graphdef, tx, x, y, idx) for n in names}
    for fn in fns.values():
        jax.block_until_ready(fn(state, opt_state))  # compile + warm up
    times = {n: [] for n in names}
    for _ in range(args.rounds):
        for n, fn in fns.items():
            start = time.perf_counter()
            jax.block_until_ready(fn(state, opt_state))
            times[n].append((time.perf_counter() - start) / len(idx))
    for n in names:
        best = min(times[n])
        print(f"{n:26s} {best * 1e3:6.3f} ms/step  {FLOP_PER_STEP / best / 1e9:6.1f} GFLOP/s")


if __name__ == "__main__":
    main()
