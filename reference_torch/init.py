"""The notebooks' initialisation functions, for ``model.apply(...)``.

Each factory returns a function that touches only ``nn.Linear`` layers: the
weight is (out, in), so fan_in = ``m.weight.size(1)``; the bias is zeroed.

Notebook A defines ``init_layer_norm_uniform`` but applies ``init_layer_norm_gauss``
twice; here each name does what the notebook meant.
"""

import math

import numpy as np
import torch.nn as nn

from winit_jax.initializers import check_sigma
from winit_jax.schemes import RELU_GAIN_SQ, UNIFORM_SIGMA


def _on_linear(fill):
    """A function for ``model.apply``: ``fill(weight)`` on every ``nn.Linear`` (the weight is
    (out, in): fan_in is ``weight.size(1)``), then its bias zeroed."""
    def init_layer(m):
        if type(m) == nn.Linear:
            fill(m.weight.data)
            m.bias.data.fill_(0)
    return init_layer


def init_layer_uniform(sigma):
    """Notebook A: U(-sigma, sigma)."""
    sigma = check_sigma(sigma)
    return _on_linear(lambda w: w.uniform_(-sigma, sigma))


def init_layer_norm_gauss():
    """Notebook A: He normal, N(0, sqrt(2 / n_l))."""
    return _on_linear(lambda w: w.normal_(0, np.sqrt(2 / w.size(1))))


def init_layer_norm_uniform():
    """Notebook A: He uniform, U(+-sqrt(6 / n_l))."""
    return _on_linear(lambda w: w.uniform_(-np.sqrt(6 / w.size(1)), np.sqrt(6 / w.size(1))))


def init_layer_standard_normal():
    """Notebook B: ``torch.randn(m, nh)``, N(0, 1)."""
    return _on_linear(lambda w: w.normal_(0, 1))


def init_layer_simplified_kaiming():
    """Notebook B: ``torch.randn(m, nh) / math.sqrt(m)``, N(0, 1 / sqrt(m))."""
    return _on_linear(lambda w: w.normal_(0, 1 / np.sqrt(w.size(1))))


def init_layer_xavier(distribution):
    """Glorot: ``nn.init.xavier_normal_`` (N(0, sqrt(2 / (fan_in + fan_out)))) or
    ``nn.init.xavier_uniform_`` (U(+-sqrt(6 / (fan_in + fan_out)))); the bias is zeroed."""
    return _on_linear({"normal": nn.init.xavier_normal_,
                       "uniform": nn.init.xavier_uniform_}[distribution])


def init_layer_orthogonal(gain):
    """Orthogonal weights times ``gain``: ``nn.init.orthogonal_``."""
    gain = check_sigma(gain, "gain")
    return _on_linear(lambda w: nn.init.orthogonal_(w, gain=gain))


def init_layer_torch_default():
    """What ``nn.Linear`` does when built: weight and bias U(+-1 / sqrt(fan_in))."""
    def init_layer(m):
        if type(m) == nn.Linear:
            m.reset_parameters()
    return init_layer


def init_layer_gain(activation, distribution):
    """Exact gain of ``activation`` (``reference_torch.gain``): Var[w] = gain^2 / fan_in,
    ``distribution`` "normal" or "uniform"; the bias is zeroed."""
    from reference_torch.gain import gain as exact_gain

    g = exact_gain(activation)
    if distribution not in ("normal", "uniform"):
        raise ValueError(f"distribution must be 'normal' or 'uniform', got {distribution!r}")

    def fill(w):
        std = g / np.sqrt(w.size(1))
        if distribution == "normal":
            return w.normal_(0, std)
        return w.uniform_(-np.sqrt(3) * std, np.sqrt(3) * std)
    return _on_linear(fill)


def _lsuv(model, batch):
    from reference_torch.lsuv import lsuv

    lsuv(model, batch)


# The torch side of every row of winit_jax.schemes.SCHEMES, keyed by its name:
# (factory of the function for model.apply, data-dependent step after it or None).
SCHEME_INITS = {
    "uniform": (lambda: init_layer_uniform(UNIFORM_SIGMA), None),
    "he_normal": (init_layer_norm_gauss, None),
    "he_uniform": (init_layer_norm_uniform, None),
    "lecun_normal": (init_layer_simplified_kaiming, None),
    "standard_normal": (init_layer_standard_normal, None),
    "glorot_normal": (lambda: init_layer_xavier("normal"), None),
    "glorot_uniform": (lambda: init_layer_xavier("uniform"), None),
    "orthogonal": (lambda: init_layer_orthogonal(math.sqrt(RELU_GAIN_SQ)), None),
    "torch_default": (init_layer_torch_default, None),
    "lsuv": (lambda: init_layer_orthogonal(1.0), _lsuv),
}


def init_model(model, scheme, batch=None, *, calibrate=True):
    """Initialises ``model`` (any module; its ``nn.Linear`` layers) with the registry scheme
    ``scheme`` by name, then runs its data-dependent step on ``batch`` if it has one
    (unless ``calibrate`` is False: the draw before that step)."""
    try:
        init, post = SCHEME_INITS[scheme]
    except KeyError:
        raise ValueError(f"unknown scheme {scheme!r}; the twin knows {', '.join(SCHEME_INITS)}"
                         ) from None
    model.apply(init())
    if post is not None and calibrate:
        if batch is None:
            raise ValueError(f"scheme {scheme!r} is data-dependent: pass a batch")
        post(model, batch)
    return model
