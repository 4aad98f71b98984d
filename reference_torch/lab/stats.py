"""The twin of ``winit_jax.lab.stats``: per-layer statistics of any module's ``nn.Linear``
layers, via forward hooks.

Moments are taken in float64 of the float32 activations (so squares of values near the
float32 limits do not overflow). Each layer's status is its own rule: OVERFLOW if the
output is not finite, UNDERFLOW if the typical product x w, RMS(y) / sqrt(fan_in), is
below the dtype's smallest normal number. Rows come back in the order of the fields of
the lab's ``LayerStats`` (the lab wraps them; the twin does not import the lab).
"""

import math

import numpy as np
import torch
import torch.nn as nn

from reference_torch.init import init_model
from reference_torch.models import make_model

OK, UNDERFLOW, OVERFLOW = 0, 1, 2
FIELDS = ("in_mean", "in_log_var", "in_log_sq", "pre_mean", "pre_log_var", "pre_log_sq",
          "status")


def _moments(a):
    a = a.double()
    return a.mean().item(), _log(a.var(unbiased=False).item()), _log((a * a).mean().item())


def _log(v):
    return math.log(v) if v > 0 else (-math.inf if v == 0 else math.nan)


def _status(y, log_sq, fan_in):
    if not torch.isfinite(y).all():
        return OVERFLOW
    rms_product = math.exp(0.5 * log_sq) / math.sqrt(fan_in) if log_sq > -math.inf else 0.0
    return UNDERFLOW if rms_product < torch.finfo(y.dtype).tiny else OK


@torch.no_grad()
def layer_stats(model: nn.Module, x) -> tuple:
    """Statistics of every ``nn.Linear`` in ``model`` on the batch ``x``: one NumPy array
    per name in ``FIELDS``, one entry per layer."""
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
    return tuple(np.asarray(col) for col in zip(*rows))


def stats_over_seeds(scheme: str, x, sizes, seeds) -> tuple:
    """``layer_stats`` of a fresh ``make_model(sizes)`` with ``scheme`` per seed (data-dependent
    schemes calibrate on ``x``); one array (seeds, layers) per name in ``FIELDS``."""
    per_seed = []
    for seed in seeds:
        torch.manual_seed(seed)
        model = init_model(make_model(sizes), scheme, torch.as_tensor(np.asarray(x)))
        per_seed.append(layer_stats(model, x))
    return tuple(np.stack(col) for col in zip(*per_seed))
