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


@torch.no_grad()
def seeded_sweep(activations, z, seeds, *, depth):
    """The twin of ``winit_jax.gain_sweep.seeded_sweep``: per seed one ``torch.randn``
    matrix per layer, shared by every (activation, gain) net; moments in float64."""
    from winit_jax.gain_sweep import configs, gain_sq

    cfgs = configs(activations)
    fns = [get_activation(a).torch_fn() for a, _ in cfgs]
    width = z.shape[1]
    scale = torch.tensor([math.sqrt(gain_sq(a, g) / width) for a, g in cfgs])[:, None, None]
    log_var = np.empty((len(seeds), len(cfgs), depth))
    log_sq = np.empty_like(log_var)
    for i, seed in enumerate(seeds):
        torch.manual_seed(seed)
        y = torch.from_numpy(z).expand(len(cfgs), *z.shape)
        for layer in range(depth):
            w = torch.randn(width, width)
            h = torch.stack([f(yc) for f, yc in zip(fns, y)])
            y = (h @ w) * scale
            yd = y.double().flatten(1)
            log_var[i, :, layer] = torch.log(yd.var(dim=1, unbiased=False)).numpy()
            log_sq[i, :, layer] = torch.log((yd * yd).mean(dim=1)).numpy()
    return log_var, log_sq
