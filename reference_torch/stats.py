"""The twin of ``winit_jax.stats``: per-layer statistics of an nn.Sequential, via forward hooks.

Moments are taken in float64 of the float32 activations (so squares of values
near the float32 limits do not overflow); statuses follow the JAX side's rules.
"""

import math

import numpy as np
import torch
import torch.nn as nn

from reference_torch.lsuv import lsuv
from reference_torch.train import make_model
from winit_jax.registry import get_scheme
from winit_jax.stats import OK, OVERFLOW, UNDERFLOW, LayerStats, log_sq_floor


def _moments(a):
    a = a.double()
    return a.mean().item(), _log(a.var(unbiased=False).item()), _log((a * a).mean().item())


def _log(v):
    return math.log(v) if v > 0 else (-math.inf if v == 0 else math.nan)


def _status(y, log_sq, fan_in):
    if not torch.isfinite(y).all():
        return OVERFLOW
    return UNDERFLOW if log_sq < log_sq_floor(torch.finfo(y.dtype).tiny, fan_in) else OK


@torch.no_grad()
def layer_stats(model: nn.Module, x) -> LayerStats:
    """Statistics of every ``nn.Linear`` in ``model`` on the batch ``x``, as NumPy arrays."""
    rows = []

    def hook(module, inputs, y):
        xin = inputs[0]
        y_mean, y_log_var, y_log_sq = _moments(y)
        rows.append((*_moments(xin), y_mean, y_log_var, y_log_sq,
                     _status(y, y_log_sq, xin.shape[-1])))

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, nn.Linear)]
    try:
        model(torch.as_tensor(np.asarray(x)))
    finally:
        for h in handles:
            h.remove()
    return LayerStats(*(np.asarray(col) for col in zip(*rows)))


def seeded_stats(scheme: str, x, sizes, seeds) -> LayerStats:
    """``layer_stats`` of a fresh ``make_model(sizes)`` with ``scheme`` per seed; arrays (seeds, L)."""
    s = get_scheme(scheme)
    init = s.torch_init()
    per_seed = []
    for seed in seeds:
        torch.manual_seed(seed)
        model = make_model(sizes)
        model.apply(init)
        if s.lsuv:
            lsuv(model, x)
        per_seed.append(layer_stats(model, x))
    return LayerStats(*(np.stack(col) for col in zip(*per_seed)))
