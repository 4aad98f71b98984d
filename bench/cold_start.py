"""Cold start: building a model's weights in a fresh process, Flax's own construction vs
``torch_like.init`` vs torch's own constructor, and a cold ``parity.check``.

    .venv/bin/python bench/cold_start.py [--rounds 3] [--only resnet|cache|vit|fold_in|floor|check]

Every case runs in its own fresh Python process (imports done before the clock starts, so
the figure is the construction: XLA compiles included, imports not); rounds alternate the
cases so that a noisy machine slows them alike. Prints the median per case and the ratios
that matter, measured in this one run.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile

PRELUDE = """
import time, json, jax, numpy as np
from flax import nnx
import winit_jax as wj, winit_jax.torch_like as tl
from winit_jax.models import ResNet18
from winit_jax.lab import examples as E
import torch, torchvision
def ready(tree):
    jax.block_until_ready([v.get_value() for _, v in nnx.iter_graph(tree)
                           if isinstance(v, nnx.Variable)])
"""

# the two ResNet-18 constructions that several groups time
FLAX_RESNET = "ready(ResNet18(num_classes=10, rngs=nnx.Rngs(0)))"
TL_RESNET = ("m = nnx.eval_shape(lambda: ResNet18(num_classes=10, rngs=nnx.Rngs(0)))\n"
             "ready(tl.init(m, jax.random.key(0), overrides=tl.resnet_recipe()))")

CASES = {
    "resnet": {
        "Flax ResNet-18 (Flax's initialisers)": FLAX_RESNET,
        "Flax ResNet-18, kernel_init=winit_jax.he_normal()":
            "ready(ResNet18(num_classes=10, rngs=nnx.Rngs(0), kernel_init=wj.he_normal()))",
        "torch_like.init ResNet-18 (eval_shape, resnet_recipe)": TL_RESNET,
        "torchvision resnet18(num_classes=10)":
            "torchvision.models.resnet18(num_classes=10)",
    },
    "fold_in": {  # paired: each variable's key by sampling.fold_in (host) or jax's compiled one
        "torch_like.init ResNet-18 (eval_shape, resnet_recipe)": TL_RESNET,
        "torch_like.init ResNet-18, jax.random.fold_in for the keys":
            "import winit_jax.sampling as S; S.fold_in = jax.random.fold_in\n" + TL_RESNET,
    },
    "cache": {  # a script that turns on JAX's own persistent cache (jax.config), warmed once
        "Flax ResNet-18 (Flax's initialisers), persistent cache warm": FLAX_RESNET,
        "torch_like.init ResNet-18, persistent cache warm": TL_RESNET,
    },
    "vit": {
        "Flax ViT port (Flax's initialisers)": "ready(E.flax_vit(nnx.Rngs(0)))",
        "torch_like.init ViT port (eval_shape, torchvision_vit_recipe)":
            "m = nnx.eval_shape(lambda: E.flax_vit(nnx.Rngs(0)))\n"
            "ready(tl.init(m, jax.random.key(0), overrides=tl.torchvision_vit_recipe()))",
        "torchvision VisionTransformer (same size)": "E.torch_vit()",
    },
    "floor": {  # what any threefry-based init of ResNet-18 pays cold, measured apart
        "floor: one threefry block program (jax.random.bits of 65,536 values), first call":
            "jax.block_until_ready(jax.jit(lambda k, i: jax.random.bits(\n"
            "    jax.random.fold_in(k, i), (1 << 16,)))(jax.random.key(0), 0))",
        "floor: nnx.eval_shape of the ResNet-18 constructor":
            "nnx.eval_shape(lambda: ResNet18(num_classes=10, rngs=nnx.Rngs(0)))",
        "floor: ResNet-18's 11.7 M values drawn by the compiled block program (compile excluded)":
            "import winit_jax.sampling as S\n"
            "f = lambda i: S._blocks(jax.random.key(0), i, 1, 0.0, 1.0, 1.0, 0.0,\n"
            "                        dtype=np.dtype('float32'), size=S.BLOCK)\n"
            "jax.block_until_ready(f(0)); t0 = time.perf_counter()\n"
            "[np.asarray(f(i)) for i in range(180)]",
        "floor: Threefry-2x32 in NumPy on the host, 11.7 M values":
            "x0 = np.zeros(5_850_000, np.uint32); x1 = np.arange(5_850_000, dtype=np.uint32)\n"
            "ks = (np.uint32(1), np.uint32(2), np.uint32(1 ^ 2 ^ 0x1BD11BDA))\n"
            "x0 += ks[0]; x1 += ks[1]\n"
            "for i in range(5):\n"
            "    for r in ((13, 15, 26, 6), (17, 29, 16, 24))[i % 2]:\n"
            "        x0 += x1; x1 = (x1 << np.uint32(r)) | (x1 >> np.uint32(32 - r)); x1 ^= x0\n"
            "    x0 += ks[(i + 1) % 3]; x1 += ks[(i + 2) % 3] + np.uint32(i + 1)",
    },
    "check": {
        "check() of the README's ResNet-18 example (init, forward, gradients, 5 steps)":
            "from winit_jax import parity as P\n"
            "net, port, x, kw = E.example('resnet18')\n"
            "P.check(net, port, x, steps=5, momentum=0.9, **kw)",
    },
}


CACHE_PRELUDE = """
jax.config.update("jax_compilation_cache_dir", {folder!r})
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
"""


def run_case(code: str, cache: str | None = None) -> float:
    # the cache is configured after the imports, before the clock starts
    cached = "" if cache is None else CACHE_PRELUDE.format(folder=cache)
    script = (PRELUDE + cached + "t0 = time.perf_counter()\n" + code
              + "\nprint(json.dumps(time.perf_counter() - t0))\n")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         check=True)
    return float(out.stdout.strip().splitlines()[-1])


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--only", choices=sorted(CASES), action="append")
    args = ap.parse_args(argv)
    groups = args.only or list(CASES)
    cases = {name: code for g in groups for name, code in CASES[g].items()}
    times = {name: [] for name in cases}
    cached = set(CASES["cache"]) & set(cases)
    with tempfile.TemporaryDirectory() as folder:
        for name in cached:  # warms the cache folder: one untimed run each
            run_case(cases[name], folder)
        for r in range(args.rounds):
            for name, code in cases.items():
                times[name].append(run_case(code, folder if name in cached else None))
                print(f"round {r}: {name}: {times[name][-1]:.2f} s", file=sys.stderr,
                      flush=True)
    report(times, args.rounds)


def report(times, rounds):
    med = {n: statistics.median(t) for n, t in times.items()}
    print(f"| case (fresh process, imports excluded) | median of {rounds} (s) | all |")
    print("| --- | ---: | --- |")
    for n, t in times.items():
        print(f"| {n} | {med[n]:.2f} | {', '.join(f'{x:.2f}' for x in t)} |")
    for family, flax, ours, torch in [
            ("ResNet-18", "Flax ResNet-18 (Flax's initialisers)",
             "torch_like.init ResNet-18 (eval_shape, resnet_recipe)",
             "torchvision resnet18(num_classes=10)"),
            ("ViT port", "Flax ViT port (Flax's initialisers)",
             "torch_like.init ViT port (eval_shape, torchvision_vit_recipe)",
             "torchvision VisionTransformer (same size)")]:
        if all(k in med for k in (flax, ours, torch)):
            print(f"\n{family}: Flax's own / torch_like.init = {med[flax] / med[ours]:.1f}x; "
                  f"torch_like.init / torch = {med[ours] / med[torch]:.1f}x")
    warm = ("Flax ResNet-18 (Flax's initialisers), persistent cache warm",
            "torch_like.init ResNet-18, persistent cache warm")
    if all(w in med for w in warm) and "torchvision resnet18(num_classes=10)" in med:
        print(f"With JAX's persistent cache warm: Flax's own / torch_like.init = "
              f"{med[warm[0]] / med[warm[1]]:.1f}x; torch_like.init / torch = "
              f"{med[warm[1]] / med['torchvision resnet18(num_classes=10)']:.1f}x")
    k = "Flax ResNet-18, kernel_init=winit_jax.he_normal()"
    if k in med:
        print(f"Flax's ResNet-18 with Flax's initialisers / with winit_jax.he_normal(): "
              f"{med['Flax ResNet-18 (Flax' + chr(39) + 's initialisers)'] / med[k]:.1f}x")
    jax_fold = "torch_like.init ResNet-18, jax.random.fold_in for the keys"
    ours = "torch_like.init ResNet-18 (eval_shape, resnet_recipe)"
    if jax_fold in med and ours in med:
        faster = sum(a < b for a, b in zip(times[ours], times[jax_fold]))
        print(f"torch_like.init ResNet-18 with jax.random.fold_in / with sampling.fold_in: "
              f"{med[jax_fold] / med[ours]:.2f}x; sampling.fold_in faster in {faster} of "
              f"{len(times[ours])} paired rounds")
    print(json.dumps(times), file=sys.stderr)


if __name__ == "__main__":
    main()
