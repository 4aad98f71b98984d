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
