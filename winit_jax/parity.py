"""Move weights between a ``winit_jax.MLP`` and a torch ``nn.Sequential`` of Linear/ReLU.

Flax kernels are (in, out), torch weights (out, in): every transfer transposes.
Dtypes are kept (float32 or float64), so round trips are exact. torch is
imported only when these functions are called.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from winit_jax.models import MLP

_DTYPES = ("float32", "float64")


def _linear_layers(sequential):
    import torch.nn as nn

    if not isinstance(sequential, nn.Sequential):
        raise TypeError(f"from_torch needs an nn.Sequential, got {type(sequential).__name__}")
    mods = list(sequential)
    if not mods or len(mods) % 2 == 0:
        raise ValueError(f"from_torch needs Linear (ReLU Linear)*, got {len(mods)} modules")
    for i, m in enumerate(mods):
        want = nn.Linear if i % 2 == 0 else nn.ReLU
        if type(m) is not want:
            raise ValueError(f"from_torch needs Linear (ReLU Linear)*; module {i} is "
                             f"{type(m).__name__}, expected {want.__name__}")
    linears = mods[::2]
    for i, (a, b) in enumerate(zip(linears, linears[1:])):
        if a.out_features != b.in_features:
            raise ValueError(f"from_torch: layer {i} gives {a.out_features} features "
                             f"but layer {i + 1} takes {b.in_features}")
    for i, m in enumerate(linears):
        if m.bias is None:
            raise ValueError(f"from_torch: Linear {i} has no bias")
    return linears


def from_torch(sequential) -> MLP:
    """A ``MLP`` holding the same weights as ``sequential`` (transposed), same dtype."""
    linears = _linear_layers(sequential)
    dtype = str(linears[0].weight.dtype).removeprefix("torch.")
    if dtype not in _DTYPES or any(str(m.weight.dtype) != f"torch.{dtype}" for m in linears):
        raise ValueError(f"from_torch needs one dtype among {_DTYPES} for all layers")
    if dtype == "float64" and not jax.config.jax_enable_x64:
        raise ValueError("from_torch: a float64 model needs jax_enable_x64=True")
    sizes = [linears[0].in_features] + [m.out_features for m in linears]
    mlp = MLP(sizes, kernel_init=nnx.initializers.zeros_init(), param_dtype=jnp.dtype(dtype),
              rngs=nnx.Rngs(0))
    for layer, m in zip(mlp.layers, linears):
        layer.kernel.set_value(jnp.asarray(m.weight.detach().cpu().numpy().T))
        layer.bias.set_value(jnp.asarray(m.bias.detach().cpu().numpy()))
    return mlp


def to_torch(mlp: MLP):
    """The ``nn.Sequential`` of Linear/ReLU with ``mlp``'s weights, same dtype."""
    import torch
    import torch.nn as nn

    if mlp.activation is not jax.nn.relu:
        raise ValueError("to_torch supports ReLU MLPs only")
    layers = []
    for layer in mlp.layers:
        kernel, bias = np.asarray(layer.kernel[...]), np.asarray(layer.bias[...])
        dtype = getattr(torch, str(kernel.dtype))
        linear = nn.Linear(*kernel.shape, dtype=dtype)
        with torch.no_grad():
            linear.weight.copy_(torch.from_numpy(kernel.T.copy()))
            linear.bias.copy_(torch.from_numpy(bias.copy()))
        layers += [linear, nn.ReLU()]
    return nn.Sequential(*layers[:-1])
