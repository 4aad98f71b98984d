"""What the per-layer recording costs: ``parity.check`` (init 0 seeds, forward, gradients,
layers) with ``layers=True`` and ``layers=False``, alternating rounds in one process after
a warm-up of each, on torchvision's ViT port and ResNet-18 port (float32, CPU).

    python bench/layer_cost.py [--rounds 3]
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch
from flax import nnx
from torchvision.models import resnet18

from winit_jax import parity as P
from winit_jax.lab import examples as E
from winit_jax.models import ResNet18


def cases():
    net, port, x, _ = E.vit()
    yield "torchvision ViT port, 4x3x32x32", net, port, x
    torch.manual_seed(0)
    x = np.random.default_rng(0).standard_normal((2, 3, 64, 64)).astype(np.float32)
    yield "ResNet-18 port, 2x3x64x64", resnet18(num_classes=10), ResNet18(
        num_classes=10, rngs=nnx.Rngs(0)), x


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    print("| model | check without layers (s) | with layers (s) | ratio | layers recorded |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for name, net, port, x in cases():
        times = {False: [], True: []}
        for rnd in range(args.rounds + 1):  # round 0 warms both up
            for layers in (False, True):
                start = time.perf_counter()
                report = P.check(net, port, x, flax_inputs=E.nhwc, init_seeds=0, layers=layers)
                if rnd:
                    times[layers].append(time.perf_counter() - start)
        off, on = statistics.median(times[False]), statistics.median(times[True])
        print(f"| {name} | {off:.2f} | {on:.2f} | {on / off:.2f} | {len(report.layers)} |")


if __name__ == "__main__":
    main()
