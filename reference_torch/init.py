"""The notebooks' initialisation functions, for ``model.apply(...)``.

Each factory returns a function that touches only ``nn.Linear`` layers: the
weight is (out, in), so fan_in = ``m.weight.size(1)``; the bias is zeroed.

Notebook A defines ``init_layer_norm_uniform`` but applies ``init_layer_norm_gauss``
twice; here each name does what the notebook meant.
"""

import numpy as np
import torch.nn as nn

from winit_jax.initializers import check_sigma


def init_layer_uniform(sigma):
    """Notebook A: U(-sigma, sigma)."""
    sigma = check_sigma(sigma)

    def init_layer(m):
        if type(m) == nn.Linear:
            m.weight.data.uniform_(-sigma, sigma)
            m.bias.data.fill_(0)
    return init_layer


def init_layer_norm_gauss():
    """Notebook A: He normal, N(0, sqrt(2 / n_l))."""
    def init_layer(m):
        if type(m) == nn.Linear:
            n_l = m.weight.size(1)
            m.weight.data.normal_(0, np.sqrt(2 / n_l))
            m.bias.data.fill_(0)
    return init_layer


def init_layer_norm_uniform():
    """Notebook A: He uniform, U(+-sqrt(6 / n_l))."""
    def init_layer(m):
        if type(m) == nn.Linear:
            n_l = m.weight.size(1)
            sigma = np.sqrt(6 / n_l)
            m.weight.data.uniform_(-sigma, sigma)
            m.bias.data.fill_(0)
    return init_layer


def init_layer_standard_normal():
    """Notebook B: ``torch.randn(m, nh)``, N(0, 1)."""
    def init_layer(m):
        if type(m) == nn.Linear:
            m.weight.data.normal_(0, 1)
            m.bias.data.fill_(0)
    return init_layer


def init_layer_simplified_kaiming():
    """Notebook B: ``torch.randn(m, nh) / math.sqrt(m)``, N(0, 1 / sqrt(m))."""
    def init_layer(m):
        if type(m) == nn.Linear:
            m_in = m.weight.size(1)
            m.weight.data.normal_(0, 1 / np.sqrt(m_in))
            m.bias.data.fill_(0)
    return init_layer


def init_layer_xavier(distribution):
    """Glorot: ``nn.init.xavier_normal_`` (N(0, sqrt(2 / (fan_in + fan_out)))) or
    ``nn.init.xavier_uniform_`` (U(+-sqrt(6 / (fan_in + fan_out)))); the bias is zeroed."""
    fill = {"normal": nn.init.xavier_normal_, "uniform": nn.init.xavier_uniform_}[distribution]

    def init_layer(m):
        if type(m) == nn.Linear:
            fill(m.weight)
            m.bias.data.fill_(0)
    return init_layer


def init_layer_orthogonal(gain):
    """Orthogonal weights times ``gain``: ``nn.init.orthogonal_``."""
    gain = check_sigma(gain, "gain")

    def init_layer(m):
        if type(m) == nn.Linear:
            nn.init.orthogonal_(m.weight, gain=gain)
            m.bias.data.fill_(0)
    return init_layer


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

    def init_layer(m):
        if type(m) == nn.Linear:
            std = g / np.sqrt(m.weight.size(1))
            if distribution == "normal":
                m.weight.data.normal_(0, std)
            else:
                m.weight.data.uniform_(-np.sqrt(3) * std, np.sqrt(3) * std)
            m.bias.data.fill_(0)
    return init_layer
