"""The measured gaps behind the parity tables of docs/guides/checking.md: ``winit_jax.parity.check`` on
torchvision's ResNet-18, torch's Transformer encoder layer and LSTM, a small CNN trained one
epoch on real digits, and the porting recipes (torchvision's ViT and MobileNetV2, LSTM and
GRU language models, a scanned 4-block transformer), float32, CPU.

    python bench/parity_gaps.py [--only recipes]
"""

from __future__ import annotations

import time

import numpy as np
import torch
from flax import nnx
from torchvision.models import resnet18

import winit_jax.torch_like as tl
from winit_jax import parity as P
from winit_jax.lab import examples as E
from winit_jax.lab.cnn_example import mnist_cnn
from winit_jax.models import ResNet18, TransformerEncoderLayer

nn = torch.nn


def cases():
    rng = np.random.default_rng(0)
    torch.manual_seed(0)
    yield ("ResNet-18, 2x3x64x64, train mode, 5 steps (lr 0.01, momentum 0.9)",
           resnet18(num_classes=10), ResNet18(num_classes=10, rngs=nnx.Rngs(0)),
           rng.standard_normal((2, 3, 64, 64)).astype(np.float32),
           dict(flax_inputs=E.nhwc, steps=5, train=True, momentum=0.9, init_seeds=1,
                fresh_torch=lambda: resnet18(num_classes=10), overrides=tl.resnet_recipe()))
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


def recipes():
    """The porting recipes of docs/guides/checking.md, each with 3 SGD steps (momentum 0.9)."""
    for name, build in (
            ("torchvision ViT (32x32, patch 8, 2 layers, dim 64), 4 images", E.vit),
            ("torchvision MobileNetV2 (10 classes), 16x3x32x32, train mode, input seed 0",
             E.mobilenet_v2),
            ("torchvision MobileNetV2 (10 classes), 16x3x32x32, train mode, input seed 2",
             lambda: E.mobilenet_v2(seed=2)),
            ("LSTM LM, 2 layers, TorchLSTMCell", lambda: E.language_model("LSTM", num_layers=2)),
            ("LSTM LM, bidirectional, TorchLSTMCell",
             lambda: E.language_model("LSTM", bidirectional=True)),
            ("GRU LM, 2 layers, TorchGRUCell", lambda: E.language_model("GRU", num_layers=2)),
            ("GRU LM, 2 bidirectional layers, TorchGRUCell",
             lambda: E.language_model("GRU", num_layers=2, bidirectional=True)),
            ("LSTM LM, 2 layers, Flax's OptimizedLSTMCell",
             lambda: E.language_model("LSTM", num_layers=2, exact=False)),
            ("4 transformer blocks, nnx.vmap + nnx.scan", E.scanned_transformer)):
        t, f, x, kw = build()
        kw.setdefault("momentum", 0.9)
        yield name, t, f, x, dict(kw, steps=3)


def main():
    import sys
    print("| model | part | checks | passed | inconclusive | not tested | worst tensor | figure "
          "| threshold |")
    print("| --- | --- | ---: | ---: | ---: | ---: | --- | ---: | ---: |")
    chosen = recipes() if "--only" in sys.argv else (*cases(), *recipes())
    for name, t, f, x, kw in chosen:
        start = time.perf_counter()
        report = P.check(t, f, x, **kw)
        for s in report.summary():
            print(f"| {name} | {s['part']} | {s['checks']} | {s['passed']} | "
                  f"{s['inconclusive']} | {s['not_tested']} | {s['worst']} | {s['value']:.2g} | {s['tol']:.2g} |")
        for note in report.notes:
            print(f"| {name} | (note) | | | | | {note} | | |")
        if report.metrics:
            print(f"| {name} | (accuracy) | | | | | torch {report.metrics['torch']:.4f}, port "
                  f"{report.metrics['flax']:.4f} | |")
        print(f"| {name} | (wall) | | | | | {time.perf_counter() - start:.1f} s | |")


if __name__ == "__main__":
    main()
