"""The twin of ``winit_jax.activations``: the same Gauss-Hermite rule on torch's functions.

Evaluates ``torch.nn.functional``'s activation in float64 on the nodes that
``winit_jax.activations.hermite_rule`` gives, so the two frameworks' gains differ
only by their activations' float64 implementations.
"""

import math

import numpy as np
import torch

from winit_jax.activations import NODES, get_activation, hermite_rule


def second_moment(activation, q: float = 1.0, *, nodes: int = NODES) -> float:
    """E[f(sqrt(q) z)^2], z ~ N(0, 1), for a registered name or a torch function."""
    fn = get_activation(activation).torch_fn() if isinstance(activation, str) else activation
    x, w = hermite_rule(nodes)
    with torch.no_grad():
        fx = fn(torch.from_numpy(math.sqrt(q) * x)).numpy()
    return float(np.sum(w * fx * fx))


def gain(activation, **kwargs) -> float:
    """1 / sqrt(E[f(z)^2]), as ``winit_jax.activations.gain``."""
    return 1.0 / math.sqrt(second_moment(activation, **kwargs))


def torch_calculate_gain(activation: str):
    """``torch.nn.init.calculate_gain`` for a registered name, or None where torch has no entry."""
    args = get_activation(activation).torch_gain
    return None if args is None else torch.nn.init.calculate_gain(*args)


