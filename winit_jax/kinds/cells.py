"""nnx recurrent cells that compute exactly what torch's do, with torch's parameters.

Flax's ``LSTMCell``/``OptimizedLSTMCell``/``SimpleCell`` hold one bias where torch adds two
(``b_ih + b_hh``): the forward pass agrees, but under SGD torch's two biases each take the
gradient, so their sum moves twice as fast and the training steps part. ``nnx.GRUCell``
has no ``b_hn`` at all (torch's n gate is tanh(W_in x + b_in + r * (W_hn h + b_hn))). A port
built from these cells holds torch's four tensors per direction, in Flax's (in, out) layout,
and passes every part of ``parity.check``, training steps included. Each drops into
``nnx.RNN`` and ``nnx.Bidirectional`` like Flax's cells; gate orders are torch's: (i, f, g,
o) for the LSTM, (r, z, n) for the GRU. Parameters are drawn as torch draws them:
U(+-1/sqrt(hidden)). Their layer kinds (torch's LSTM/GRU/RNN and their cell classes against
``nnx.RNN`` of these cells) are registered here, next to the classes.

Examples:
  >>> import jax.numpy as jnp
  >>> from flax import nnx
  >>> rnn = nnx.RNN(TorchLSTMCell(3, 5, rngs=nnx.Rngs(0)))
  >>> rnn(jnp.ones((2, 7, 3))).shape
  (2, 7, 5)
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import nnx

from winit_jax.initializers import symmetric_uniform
from winit_jax.kinds._base import ParityError, value
from winit_jax.kinds.recurrent import (
    GRULayer,
    LSTMLayer,
    RNNLayer,
    _recurrent,
    _uniform,
)


class _TorchCell(nnx.Module):
    """torch's (kernel_ih, kernel_hh, bias_ih, bias_hh) for ``gates`` gates, Flax's layout."""

    gates = 1

    def __init__(self, in_features: int, hidden_features: int, *, use_bias: bool = True,
                 param_dtype=jnp.float32, rngs: nnx.Rngs):
        self.in_features, self.hidden_features = in_features, hidden_features
        self.param_dtype = param_dtype
        draw = symmetric_uniform(1 / math.sqrt(hidden_features))  # torch's RNNBase
        width = self.gates * hidden_features
        self.kernel_ih = nnx.Param(draw(rngs.params(), (in_features, width), param_dtype))
        self.kernel_hh = nnx.Param(draw(rngs.params(), (hidden_features, width), param_dtype))
        self.bias_ih = nnx.Param(draw(rngs.params(), (width,), param_dtype)) if use_bias else None
        self.bias_hh = nnx.Param(draw(rngs.params(), (width,), param_dtype)) if use_bias else None

    def _affine(self, x, h):
        """(x W_ih^T + b_ih, h W_hh^T + b_hh), as torch's two F.linear."""
        gi, gh = x @ self.kernel_ih[...], h @ self.kernel_hh[...]
        if self.bias_ih is not None:
            gi, gh = gi + self.bias_ih[...], gh + self.bias_hh[...]
        return gi, gh

    def _zeros(self, input_shape):
        return jnp.zeros(tuple(input_shape[:-1]) + (self.hidden_features,), self.param_dtype)

    @property
    def num_feature_axes(self) -> int:
        return 1


class TorchLSTMCell(_TorchCell):
    """``torch.nn.LSTMCell`` in nnx: carry (c, h), as ``nnx.LSTMCell``'s."""

    gates = 4

    def __call__(self, carry, inputs):
        c, h = carry
        gi, gh = self._affine(inputs, h)
        i, f, g, o = jnp.split(gi + gh, 4, axis=-1)
        new_c = jax.nn.sigmoid(f) * c + jax.nn.sigmoid(i) * jnp.tanh(g)
        new_h = jax.nn.sigmoid(o) * jnp.tanh(new_c)
        return (new_c, new_h), new_h

    def initialize_carry(self, input_shape, rngs=None, carry_init=None):
        return self._zeros(input_shape), self._zeros(input_shape)


class TorchGRUCell(_TorchCell):
    """``torch.nn.GRUCell`` in nnx, ``b_hn`` inside ``r * (W_hn h + b_hn)``: carry h."""

    gates = 3

    def __call__(self, carry, inputs):
        gi, gh = self._affine(inputs, carry)
        i_r, i_z, i_n = jnp.split(gi, 3, axis=-1)
        h_r, h_z, h_n = jnp.split(gh, 3, axis=-1)
        r, z = jax.nn.sigmoid(i_r + h_r), jax.nn.sigmoid(i_z + h_z)
        n = jnp.tanh(i_n + r * h_n)
        new_h = (1 - z) * n + z * carry
        return new_h, new_h

    def initialize_carry(self, input_shape, rngs=None, carry_init=None):
        return self._zeros(input_shape)


class TorchRNNCell(_TorchCell):
    """``torch.nn.RNNCell`` (``nonlinearity`` "tanh" or "relu") in nnx: carry h."""

    gates = 1

    def __init__(self, in_features: int, hidden_features: int, *, nonlinearity: str = "tanh",
                 use_bias: bool = True, param_dtype=jnp.float32, rngs: nnx.Rngs):
        if nonlinearity not in ("tanh", "relu"):
            raise ValueError(f"nonlinearity must be 'tanh' or 'relu', got {nonlinearity!r}")
        super().__init__(in_features, hidden_features, use_bias=use_bias,
                         param_dtype=param_dtype, rngs=rngs)
        self.nonlinearity = nonlinearity

    def __call__(self, carry, inputs):
        gi, gh = self._affine(inputs, carry)
        new_h = jnp.tanh(gi + gh) if self.nonlinearity == "tanh" else jax.nn.relu(gi + gh)
        return new_h, new_h

    def initialize_carry(self, input_shape, rngs=None, carry_init=None):
        return self._zeros(input_shape)



# --- the torch-exact cells: torch's four tensors, transposed ---------------------------------

def _exact_to_cell(cell, w_ih, w_hh, b_ih, b_hh, t):
    if isinstance(cell, TorchRNNCell) and cell.nonlinearity != t.nonlinearity:
        raise ParityError(f"nonlinearity: torch's {t.nonlinearity} vs the cell's "
                          f"{cell.nonlinearity}")
    out = {"kernel_ih": w_ih.T, "kernel_hh": w_hh.T}
    if b_ih is not None:
        out.update(bias_ih=b_ih, bias_hh=b_hh)
    return out


def _exact_from_cell(cell):
    return (value(cell.kernel_ih).T, value(cell.kernel_hh).T,
            None if cell.bias_ih is None else value(cell.bias_ih),
            None if cell.bias_hh is None else value(cell.bias_hh))


def _exact_init(cell):
    names = ["kernel_ih", "kernel_hh"] + (["bias_ih", "bias_hh"] if cell.bias_ih is not None
                                          else [])
    return {n: _uniform(cell) for n in names}


for _name, _classes, _view, _cell in (
        ("LSTM", ("torch.nn.LSTM", "torch.nn.LSTMCell"), LSTMLayer, TorchLSTMCell),
        ("GRU", ("torch.nn.GRU", "torch.nn.GRUCell"), GRULayer, TorchGRUCell),
        ("RNN", ("torch.nn.RNN", "torch.nn.RNNCell"), RNNLayer, TorchRNNCell)):
    _recurrent(f"{_name} (torch-exact cell)", _classes, _view, (_cell,), to_cell=_exact_to_cell,
               from_cell=_exact_from_cell, cell_init=_exact_init)


__all__ = ["TorchGRUCell", "TorchLSTMCell", "TorchRNNCell"]
