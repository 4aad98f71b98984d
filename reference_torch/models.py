"""The twin of ``winit_jax.models``: the notebooks' MLP as torch builds it, and the MLP's
weights across both ways (an ``nn.Sequential`` of Linear/ReLU <-> ``winit_jax.MLP``)."""

import jax
import jax.numpy as jnp
import numpy as np
import torch
import torch.nn as nn
from flax import nnx

from winit_jax import parity
from winit_jax.models import MLP, NOTEBOOK_A_SIZES
from winit_jax.parity.pairing.transfer import check_dtype


def make_model(sizes=NOTEBOOK_A_SIZES):
    """nn.Sequential(nn.Linear(784, 512), nn.ReLU(), ..., nn.Linear(64, 10))."""
    layers = []
    for n_in, n_out in zip(sizes[:-1], sizes[1:]):
        layers += [nn.Linear(n_in, n_out), nn.ReLU()]
    return nn.Sequential(*layers[:-1])


def mlp_from_torch(sequential) -> MLP:
    """A ``winit_jax.MLP`` holding the weights of an ``nn.Sequential`` of Linear (ReLU
    Linear)*.

    Raises:
      winit_jax.parity.ParityError: any other module, naming the module that differs.
    """
    if not isinstance(sequential, nn.Sequential):
        raise parity.ParityError(f"mlp_from_torch needs an nn.Sequential of Linear/ReLU, "
                                 f"got {type(sequential).__name__}")
    mods = list(sequential)
    if not mods or len(mods) % 2 == 0:
        raise parity.ParityError(f"mlp_from_torch needs Linear (ReLU Linear)*, got {len(mods)} "
                                 "modules")
    for i, m in enumerate(mods):
        want = nn.Linear if i % 2 == 0 else nn.ReLU
        if type(m) is not want:
            raise parity.ParityError(f"mlp_from_torch needs Linear (ReLU Linear)*; module {i} is "
                                     f"{type(m).__name__}, expected {want.__name__}")
    linears = mods[::2]
    for i, (a, b) in enumerate(zip(linears, linears[1:])):
        if a.out_features != b.in_features:
            raise parity.ParityError(f"mlp_from_torch: layer {i} gives {a.out_features} "
                                     f"features but layer {i + 1} takes {b.in_features}")
    for i, m in enumerate(linears):
        if m.bias is None:
            raise parity.ParityError(f"mlp_from_torch: Linear {i} has no bias")
    dtype = check_dtype(str(linears[0].weight.dtype).removeprefix("torch."), "mlp_from_torch")
    sizes = [linears[0].in_features] + [m.out_features for m in linears]
    mlp = MLP(sizes, kernel_init=nnx.initializers.zeros_init(), param_dtype=jnp.dtype(dtype),
              rngs=nnx.Rngs(0))
    return parity.from_torch(sequential, mlp)


def torch_from_mlp(mlp: MLP) -> nn.Sequential:
    """The ``nn.Sequential`` of a ReLU ``winit_jax.MLP``, holding its weights."""
    if not isinstance(mlp, MLP) or mlp.activation is not jax.nn.relu:
        raise parity.ParityError("torch_from_mlp supports ReLU winit_jax.MLPs only")
    dtype = getattr(torch, np.dtype(mlp.layers[0].kernel[...].dtype).name)
    return parity.to_torch(mlp, make_model(mlp.sizes).to(dtype))
