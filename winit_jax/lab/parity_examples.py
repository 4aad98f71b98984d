"""Built-in examples for ``winit-jax parity``: torch models nobody here wrote, and their nnx
ports from ``winit_jax.models``; and how a user's ``module:factory`` pair is loaded."""

from __future__ import annotations

import importlib

import numpy as np


def nhwc(x):
    return x.transpose(0, 2, 3, 1)


def nchw(y):
    return y.transpose(0, 3, 1, 2)


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
    raise ValueError(f"unknown example {name!r}; known: {', '.join(EXAMPLES)}")


EXAMPLES = ("resnet18", "transformer", "lstm")


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
