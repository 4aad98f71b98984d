"""The twin of ``winit_jax.models``: the notebooks' MLP as torch builds it."""

import torch.nn as nn

from winit_jax.models import NOTEBOOK_A_SIZES


def make_model(sizes=NOTEBOOK_A_SIZES):
    """nn.Sequential(nn.Linear(784, 512), nn.ReLU(), ..., nn.Linear(64, 10))."""
    layers = []
    for n_in, n_out in zip(sizes[:-1], sizes[1:]):
        layers += [nn.Linear(n_in, n_out), nn.ReLU()]
    return nn.Sequential(*layers[:-1])
