"""Seconds per epoch of notebook A's MLP, measured in one run on one machine.

  (a) the torch reference loop as the notebook writes it (DataLoader, loss.item() per batch)
  (b) winit_jax's single-model training (one jitted epoch: lax.scan over batches)
  (c) K models in one vmapped program (winit_jax.lab.many)

plus the machine's fp32 matmul peak (a 2048^3 matmul, measured now, in JAX and torch),
the achieved GFLOP/s of (b) and (c) against it, and compile times on their own.

    python bench/bench_train.py                # 60,000 synthetic rows, K = 16
    python bench/bench_train.py --k 64 --epochs 10 --skip-torch   # e.g. on a GPU

Rows are synthetic (uniform pixels / 256, random labels): the timing depends on the
shapes only. Prints a table and, with --json, writes the numbers.
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from winit_jax.models import NOTEBOOK_A_SIZES
from winit_jax.lab.many import many_epoch
from winit_jax.lab.train import TrainConfig, init_model, make_optimizer, train_epoch

SIZES = NOTEBOOK_A_SIZES
PARAMS_IN_FIRST = SIZES[0] * SIZES[1]
N_WEIGHTS = sum(a * b for a, b in zip(SIZES[:-1], SIZES[1:]))
# A train step is 2 FLOP per weight forward, 2 for the weight gradients and 2 for the
# input gradients, except the first layer's (nobody needs d loss / d pixels):
# 6 * 574,080 - 2 * 401,408 = 2.64 MFLOP per sample (biases and ReLU are negligible).
FLOP_PER_SAMPLE = 6 * N_WEIGHTS - 2 * PARAMS_IN_FIRST


def best_of(fn, repeats):
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def matmul_peak(n=2048, repeats=5):
    """fp32 GFLOP/s of an n^3 matmul: JAX (XLA) and, if installed, torch."""
    a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32)
    mm = jax.jit(lambda a, b: a @ b)
    mm(a, a).block_until_ready()
    out = {"jax": 2 * n ** 3 / best_of(lambda: mm(a, a).block_until_ready(), repeats) / 1e9}
    try:
        import torch
        t = torch.randn(n, n, device="cuda" if torch.cuda.is_available() else "cpu")
        sync = torch.cuda.synchronize if t.is_cuda else (lambda: None)
        torch.mm(t, t)
        sync()
        out["torch"] = 2 * n ** 3 / best_of(lambda: (torch.mm(t, t), sync()), repeats) / 1e9
    except ImportError:
        pass
    return out


def bench_torch(x, y):
    """(a): returns ``epoch()`` running one notebook epoch, and the thread count."""
    import torch

    from reference_torch.lab.data import notebook_a_loader
    from reference_torch.lab.train import train
    from reference_torch.models import make_model
    torch.manual_seed(0)
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    model = make_model().to(dev)
    xt, yt = torch.from_numpy(x).to(dev), torch.from_numpy(y).to(dev)
    loader = notebook_a_loader(xt, yt, batch_size=100, shuffle=True)
    train(model, [next(iter(loader))], epochs=1)  # warm-up: allocator, kernels
    return (lambda: train(model, loader, epochs=1)), torch.get_num_threads()


def bench_single(x, y):
    """(b): ``(epoch(), compile_s)`` for winit_jax's jitted single-model epoch."""
    config = TrainConfig(scheme="he_normal")
    graphdef, state = nnx.split(init_model(config))
    tx = make_optimizer(config)
    carry = [state, tx.init(state)]
    key = jax.random.key(0)
    start = time.perf_counter()
    epoch = train_epoch.lower(graphdef, *carry, key, x, y, tx=tx, batch_size=100).compile()
    compile_s = time.perf_counter() - start

    def run():
        carry[0], carry[1], losses, _ = epoch(*carry, key, x, y)
        losses.block_until_ready()
    run()  # warm-up
    return run, compile_s


def bench_many(x, y, k):
    """(c): ``(epoch(), compile_s)`` for k models in one vmapped program."""
    states = [nnx.split(init_model(TrainConfig(scheme="he_normal", seed=s))) for s in range(k)]
    graphdef = states[0][0]
    state = jax.tree.map(lambda *a: jnp.stack(a), *[s for _, s in states])
    carry = [state, jax.vmap(optax.sgd(1.0, momentum=0.5).init)(state)]
    lrs, momenta = jnp.full(k, 0.01), jnp.full(k, 0.6)
    keys = jax.vmap(jax.random.key_data)(jax.random.split(jax.random.key(0), k))
    start = time.perf_counter()
    epoch = many_epoch.lower(graphdef, *carry, keys, lrs, momenta, x, y,
                             batch_size=100).compile()
    compile_s = time.perf_counter() - start

    def run():
        carry[0], carry[1], losses, _ = epoch(*carry, keys, lrs, momenta, x, y)
        losses.block_until_ready()
    run()  # warm-up
    return run, compile_s


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rows", type=int, default=60_000)
    p.add_argument("--rounds", type=int, default=3,
                   help="timed epochs of each of (a), (b), (c), interleaved; the best counts")
    p.add_argument("--k", type=int, default=16, help="models in one program for (c)")
    p.add_argument("--skip-torch", action="store_true")
    p.add_argument("--json", default=None, help="also write the numbers here")
    args = p.parse_args(argv)

    rng = np.random.default_rng(0)
    x_np = (rng.integers(0, 256, (args.rows, SIZES[0])) / 256).astype(np.float32)
    y_np = rng.integers(0, 10, args.rows).astype(np.int64)
    x, y = jnp.asarray(x_np), jnp.asarray(y_np.astype(np.int32))

    peak = matmul_peak()
    peak_gflops = max(peak.values())
    out = {"machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
           "device": str(jax.devices()[0].device_kind), "jax": jax.__version__,
           "rows": args.rows, "k": args.k, "matmul_peak_gflops": peak}
    runs = {}
    if not args.skip_torch:
        runs["torch_s_per_epoch"], out["torch_threads"] = bench_torch(x_np, y_np)
    runs["single_s_per_epoch"], out["single_compile_s"] = bench_single(x, y)
    runs["many_s_per_epoch"], out["many_compile_s"] = bench_many(x, y, args.k)
    # Interleaved rounds, best of each: the machine's noise hits all three alike.
    times = {name: [] for name in runs}
    for _ in range(args.rounds):
        for name, run in runs.items():
            times[name].append(best_of(run, 1))
    out.update({name: min(t) for name, t in times.items()}, all_times=times)

    flop = FLOP_PER_SAMPLE * args.rows
    gflops_b = flop / out["single_s_per_epoch"] / 1e9
    gflops_c = args.k * flop / out["many_s_per_epoch"] / 1e9
    out.update(single_gflops=gflops_b, many_gflops=gflops_c,
               single_fraction_of_peak=gflops_b / peak_gflops,
               many_fraction_of_peak=gflops_c / peak_gflops,
               many_per_model_vs_single=out["single_s_per_epoch"] * args.k / out["many_s_per_epoch"])
    if "torch_s_per_epoch" in out:
        out["torch_over_single"] = out["torch_s_per_epoch"] / out["single_s_per_epoch"]

    print(f"device {out['device']}, jax {jax.__version__}, {args.rows} rows, batch 100, "
          f"{FLOP_PER_SAMPLE / 1e6:.2f} MFLOP/sample")
    print("fp32 matmul peak 2048^3: " + ", ".join(f"{k} {v:.1f} GFLOP/s" for k, v in peak.items()))
    if "torch_s_per_epoch" in out:
        print(f"(a) torch notebook loop     {out['torch_s_per_epoch']:8.3f} s/epoch "
              f"({out['torch_threads']} threads)")
    print(f"(b) winit_jax single model  {out['single_s_per_epoch']:8.3f} s/epoch  "
          f"{gflops_b:7.1f} GFLOP/s = {gflops_b / peak_gflops:.0%} of peak  "
          f"(compile {out['single_compile_s']:.2f} s)")
    print(f"(c) {args.k} models, one program {out['many_s_per_epoch']:8.3f} s/epoch  "
          f"{gflops_c:7.1f} GFLOP/s = {gflops_c / peak_gflops:.0%} of peak  "
          f"(compile {out['many_compile_s']:.2f} s)")
    if "torch_over_single" in out:
        print(f"ratio (a)/(b): {out['torch_over_single']:.2f}")
    print(f"per-model throughput (c)/(b): {out['many_per_model_vs_single']:.2f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=2)
    return out


if __name__ == "__main__":
    main()
