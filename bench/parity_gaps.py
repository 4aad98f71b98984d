"""The measured gaps behind README's parity table: ``winit_jax.parity.check`` on
torchvision's ResNet-18, torch's Transformer encoder layer and LSTM, and a small CNN
trained one epoch on real digits (float32, CPU).

    python bench/parity_gaps.py
"""

from __future__ import annotations

import time

import numpy as np
import torch
from flax import nnx
from torchvision.models import resnet18

import winit_jax.torch_like as tl
from winit_jax import parity as P
from winit_jax.lab.parity_examples import mnist_cnn
from winit_jax.models import ResNet18, TransformerEncoderLayer

nn = torch.nn


def nhwc(x):
    return x.transpose(0, 2, 3, 1)


def cases():
    rng = np.random.default_rng(0)
    torch.manual_seed(0)
    yield ("ResNet-18, 2x3x64x64, train mode, 5 steps (lr 0.01, momentum 0.9)",
           resnet18(num_classes=10), ResNet18(num_classes=10, rngs=nnx.Rngs(0)),
           rng.standard_normal((2, 3, 64, 64)).astype(np.float32),
           dict(flax_inputs=nhwc, steps=5, train=True, momentum=0.9, init_seeds=1,
                fresh_torch=lambda: resnet18(num_classes=10), init_overrides=tl.resnet_recipe()))
    yield ("TransformerEncoderLayer(64, 4), 2x10x64, 5 steps",
           nn.TransformerEncoderLayer(64, 4, dropout=0.0, batch_first=True),
           TransformerEncoderLayer(64, 4, rngs=nnx.Rngs(0)),
           rng.standard_normal((2, 10, 64)).astype(np.float32),
           dict(steps=5, momentum=0.9, init_seeds=4))
    yield ("LSTM(16, 32), 4x20x16, no steps (two torch biases)",
           nn.LSTM(16, 32, batch_first=True), nnx.RNN(nnx.OptimizedLSTMCell(16, 32,
                                                                           rngs=nnx.Rngs(0))),
           rng.standard_normal((4, 20, 16)).astype(np.float32), dict(init_seeds=8))
    t, f, x, kw = mnist_cnn()
    yield ("small CNN, real MNIST: 1 epoch of the sample (50 batches of 100), train mode, "
           "accuracy on the 10,000 test digits", t, f, x, kw)


def main():
    print("| model | part | checks | passed | worst tensor | figure | threshold |")
    print("| --- | --- | ---: | ---: | --- | ---: | ---: |")
    for name, t, f, x, kw in cases():
        start = time.perf_counter()
        report = P.check(t, f, x, **kw)
        for s in report.summary():
            print(f"| {name} | {s['part']} | {s['checks']} | {s['passed']} | {s['worst']} | "
                  f"{s['value']:.2g} | {s['tol']:.2g} |")
        if report.metrics:
            print(f"| {name} | (accuracy) | | | | torch {report.metrics['torch']:.4f}, port "
                  f"{report.metrics['flax']:.4f} | |")
        print(f"| {name} | (wall) | | | | {time.perf_counter() - start:.1f} s | |")


if __name__ == "__main__":
    main()
