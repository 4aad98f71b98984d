"""Built-in examples for ``winit-jax parity``: torch models nobody here wrote, and their nnx
ports from ``winit_jax.models``; and how a user's ``module:factory`` pair is loaded."""

from __future__ import annotations

import importlib

import numpy as np


def nhwc(x):
    return x.transpose(0, 2, 3, 1)


def nchw(y):
    """A channels-last output back to torch's channels-first layout; (N, C) as it is."""
    return y if y.ndim < 3 else y.transpose((0, y.ndim - 1) + tuple(range(1, y.ndim - 1)))


def example(name: str):
    """``(torch module, nnx model, inputs, check kwargs)`` for a built-in example."""
    import torch
    from flax import nnx

    import winit_jax.torch_like as tl
    from winit_jax.models import ResNet18, TransformerEncoderLayer

    rng = np.random.default_rng(0)
    torch.manual_seed(0)
    if name == "resnet18":
        from torchvision.models import resnet18
        return (resnet18(num_classes=10), ResNet18(num_classes=10, rngs=nnx.Rngs(0)),
                rng.standard_normal((2, 3, 64, 64)).astype(np.float32),
                dict(flax_inputs=nhwc, train=True, init_seeds=1, init_overrides=tl.resnet_recipe(),
                     fresh_torch=lambda: resnet18(num_classes=10)))
    if name == "transformer":
        return (torch.nn.TransformerEncoderLayer(64, 4, dropout=0.0, batch_first=True),
                TransformerEncoderLayer(64, 4, rngs=nnx.Rngs(0)),
                rng.standard_normal((2, 10, 64)).astype(np.float32), dict(init_seeds=4))
    if name == "lstm":
        return (torch.nn.LSTM(16, 32, batch_first=True),
                nnx.RNN(nnx.OptimizedLSTMCell(16, 32, rngs=nnx.Rngs(0))),
                rng.standard_normal((4, 20, 16)).astype(np.float32), dict(init_seeds=8))
    if name == "mnist_cnn":
        return mnist_cnn()
    raise ValueError(f"unknown example {name!r}; known: {', '.join(EXAMPLES)}")


EXAMPLES = ("resnet18", "transformer", "lstm", "mnist_cnn")


def torch_cnn():
    """Two 3x3 convolutions (stride 2) with BatchNorm and ReLU, flattened, a Linear head:
    28x28 digits -> 10 logits."""
    from torch import nn
    return nn.Sequential(nn.Conv2d(1, 16, 3, stride=2, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
                         nn.Conv2d(16, 32, 3, stride=2, padding=1), nn.BatchNorm2d(32), nn.ReLU(),
                         nn.Flatten(), nn.Linear(32 * 7 * 7, 10))


def flax_cnn(rngs):
    """``torch_cnn``'s nnx port, NHWC, with torch's BatchNorm (momentum 0.1 = Flax's 0.9)."""
    from flax import nnx

    class CNN(nnx.Module):
        def __init__(self, rngs):
            conv = dict(kernel_size=(3, 3), strides=2, padding=((1, 1), (1, 1)), rngs=rngs)
            bn = dict(momentum=0.9, epsilon=1e-5, use_fast_variance=False,  # torch's BatchNorm2d
                      rngs=rngs)  # (its variance: the two-pass form, see models/resnet.py)
            self.conv1, self.bn1 = nnx.Conv(1, 16, **conv), nnx.BatchNorm(16, **bn)
            self.conv2, self.bn2 = nnx.Conv(16, 32, **conv), nnx.BatchNorm(32, **bn)
            self.head = nnx.Linear(32 * 7 * 7, 10, rngs=rngs)

        def __call__(self, x):
            x = nnx.relu(self.bn1(self.conv1(x)))
            x = nnx.relu(self.bn2(self.conv2(x)))
            # torch flattens (C, H, W); flattening NHWC as it is would permute the head's
            # inputs (the port's classic slip): back to channels-first first
            return self.head(x.transpose(0, 3, 1, 2).reshape(x.shape[0], -1))

    return CNN(rngs)


def mnist_cnn(*, data_dir=None, batch_size: int = 100, seed: int = 0):
    """The small CNN on real digits: one epoch of the embedded sample (5,000 training digits,
    /256, shuffled by ``seed``) in batches of ``batch_size``, SGD lr 0.01 momentum 0.6 (the
    notebook's), cross-entropy; accuracy on the real MNIST test split (10,000 digits) when
    it is under ``data_dir`` (default: ``default_data_dir()``), else on the sample."""
    import torch
    from flax import nnx

    from winit_jax import parity
    from winit_jax.lab import data
    from winit_jax.lab.experiment import default_data_dir

    images, labels = data.load_sample()
    x = (images.astype(np.float32) / np.float32(256))[:, None]  # notebook A's /256, NCHW
    order = np.random.default_rng(seed).permutation(len(x))
    batches = [(x[i], labels[i]) for i in np.array_split(order, len(x) // batch_size)]
    try:
        test_images, test_labels = data.load_mnist(data_dir or default_data_dir(), "test")
        held_out = ((test_images.astype(np.float32) / np.float32(256))[:, None], test_labels)
    except data.MNISTNotFoundError:
        held_out = (x, labels)
    torch.manual_seed(seed)
    return (torch_cnn(), flax_cnn(nnx.Rngs(seed)), batches[0],
            dict(batches=batches, flax_inputs=nhwc, train=True, learning_rate=0.01,
                 momentum=0.6, metric=parity.accuracy, eval_data=held_out, init_seeds=4,
                 loss=parity.cross_entropy))


def load_factory(spec: str, what: str):
    """``"package.module:factory"`` -> the callable; ValueError naming ``what`` otherwise."""
    module, _, attr = spec.partition(":")
    if not module or not attr:
        raise ValueError(f"{what}: expected MODULE:FACTORY, got {spec!r}")
    try:
        obj = getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as e:
        raise ValueError(f"{what}: cannot load {spec!r} ({e})") from None
    if not callable(obj):
        raise ValueError(f"{what}: {spec!r} is not callable")
    return obj
