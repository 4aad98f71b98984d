"""Recurrent cells: torch LSTM/LSTMCell and GRU/GRUCell (one layer, one direction) <->
``nnx.LSTMCell`` / ``nnx.OptimizedLSTMCell`` and ``nnx.GRUCell``.

Gates (i, f, g, o) for an LSTM and (r, z, n) for a GRU, in that order in both. Flax's
cells hold one bias where torch adds two: Flax's is b_ih + b_hh (back to torch: b_ih = that
sum, b_hh = 0), and torch's tensors are compared as that sum. ``nnx.GRUCell`` computes
tanh(W_in x + b_in + r * W_hn h) where torch has r * (W_hn h + b_hn): a torch GRU whose b_hn
is not 0 is refused. torch draws every weight and bias U(+-1/sqrt(hidden)); the one Flax
bias is drawn as the sum of two such uniforms (the bias the gate effectively adds), the
GRU's n gate as b_in alone.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from winit_jax.initializers import symmetric_uniform, uniform_sum
from winit_jax.parity.kinds._base import Kind, ParityError, np_copy, register, value

_GATES = ("i", "f", "g", "o")
# nnx.LSTMCell's (input, hidden) Linear of each gate
_LSTM_CELL = {"i": ("ii", "hi"), "f": ("if_", "hf"), "g": ("ig", "hg"), "o": ("io", "ho")}


def _suffix(t) -> str:
    return "_l0" if hasattr(t, "weight_ih_l0") else ""


def _weights(t):
    """torch's (w_ih, w_hh, b_ih, b_hh) as NumPy copies (biases None without bias)."""
    if getattr(t, "num_layers", 1) != 1 or getattr(t, "bidirectional", False):
        raise ParityError(f"{type(t).__name__}(num_layers={getattr(t, 'num_layers', 1)}, "
                          f"bidirectional={getattr(t, 'bidirectional', False)}): one layer in "
                          "one direction maps to one nnx cell; stacked or bidirectional "
                          "layers are not supported yet")
    if getattr(t, "proj_size", 0):
        raise ParityError("LSTM with proj_size has no nnx cell")
    s = _suffix(t)
    return tuple(None if getattr(t, f"{n}{s}", None) is None else np_copy(getattr(t, f"{n}{s}"))
                 for n in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"))


def _torch_out(t, w_ih, w_hh, b):
    s = _suffix(t)
    out = {f"weight_ih{s}": w_ih, f"weight_hh{s}": w_hh}
    if b is not None:
        out[f"bias_ih{s}"] = b
        out[f"bias_hh{s}"] = np.zeros_like(b)
    return out


def _bias_sum(b_ih, b_hh, rows):
    if b_ih is None:
        return None
    return (b_ih + b_hh).astype(b_ih.dtype)[:rows] if b_hh is not None else b_ih[:rows]


# --- LSTM -------------------------------------------------------------------------------------

def _lstm_to_flax(t, f):
    w_ih, w_hh, b_ih, b_hh = _weights(t)
    b = _bias_sum(b_ih, b_hh, len(w_hh))
    if isinstance(f, nnx.OptimizedLSTMCell):
        out = {"dense_i/kernel": w_ih.T, "dense_h/kernel": w_hh.T}
        if b is not None:
            out["dense_h/bias"] = b
        return out
    h = w_hh.shape[1]
    out = {}
    for k, gate in enumerate(_GATES):
        rows = slice(k * h, (k + 1) * h)
        i_name, h_name = _LSTM_CELL[gate]
        out[f"{i_name}/kernel"] = w_ih[rows].T
        out[f"{h_name}/kernel"] = w_hh[rows].T
        if b is not None:
            out[f"{h_name}/bias"] = b[rows]
    return out


def _lstm_to_torch(f, t):
    if isinstance(f, nnx.OptimizedLSTMCell):
        w_ih, w_hh = value(f.dense_i.kernel).T, value(f.dense_h.kernel).T
        b = None if f.dense_h.bias is None else value(f.dense_h.bias)
    else:
        cells = [_LSTM_CELL[g] for g in _GATES]
        w_ih = np.concatenate([value(getattr(f, i).kernel).T for i, _ in cells])
        w_hh = np.concatenate([value(getattr(f, h).kernel).T for _, h in cells])
        b = (None if getattr(f, cells[0][1]).bias is None
             else np.concatenate([value(getattr(f, h).bias) for _, h in cells]))
    return _torch_out(t, w_ih, w_hh, b)


def _lstm_values(t):
    w_ih, w_hh, b_ih, b_hh = _weights(t)
    return _torch_out(t, w_ih, w_hh, _bias_sum(b_ih, b_hh, len(w_hh)))


def _lstm_init(layer):
    h = layer.hidden_features
    out = {}
    for parts, sub in nnx.iter_modules(layer):
        if parts and isinstance(sub, nnx.Linear):
            path = "/".join(map(str, parts))
            out[f"{path}/kernel"] = symmetric_uniform(1 / math.sqrt(h))
            if sub.bias is not None:  # the bias torch splits in two: b_ih + b_hh
                out[f"{path}/bias"] = uniform_sum(bound=1 / math.sqrt(h))
    return out


LSTM = register(Kind(
    "LSTM", ("torch.nn.LSTM", "torch.nn.LSTMCell"), (nnx.OptimizedLSTMCell, nnx.LSTMCell),
    _lstm_to_flax, _lstm_to_torch, init=_lstm_init, torch_values=_lstm_values))


# --- GRU --------------------------------------------------------------------------------------

def _gru_bias(t):
    """Flax's one (3h,) bias: b_ih + b_hh for r and z, b_in alone for n (b_hn must be 0)."""
    w_ih, w_hh, b_ih, b_hh = _weights(t)
    h = w_hh.shape[1]
    if b_hh is not None and np.any(b_hh[2 * h:]):
        raise ParityError("GRU: torch's b_hn (bias_hh[2h:]) is not 0, and nnx.GRUCell has no "
                          "place for it (it sits inside r * (W_hn h + b_hn))")
    if b_ih is None:
        return w_ih, w_hh, None
    b = b_ih.copy()
    if b_hh is not None:
        b[:2 * h] += b_hh[:2 * h]
    return w_ih, w_hh, b


def _gru_to_flax(t, f):
    w_ih, w_hh, b = _gru_bias(t)
    out = {"dense_i/kernel": w_ih.T, "dense_h/kernel": w_hh.T}
    if b is not None:
        out["dense_i/bias"] = b
    return out


def _gru_to_torch(f, t):
    return _torch_out(t, value(f.dense_i.kernel).T, value(f.dense_h.kernel).T,
                      None if f.dense_i.bias is None else value(f.dense_i.bias))


def _gru_values(t):
    """r, z: b_ih + b_hh; n: b_in (b_hn has no place in nnx.GRUCell: bias_hh reads 0)."""
    w_ih, w_hh, b_ih, b_hh = _weights(t)
    h = w_hh.shape[1]
    b = None
    if b_ih is not None:
        b = b_ih.copy()
        b[:2 * h] += b_hh[:2 * h]
    return _torch_out(t, w_ih, w_hh, b)


def _gru_init(layer):
    h = layer.hidden_features
    out = {"dense_i/kernel": symmetric_uniform(1 / math.sqrt(h)),
           "dense_h/kernel": symmetric_uniform(1 / math.sqrt(h))}
    if layer.dense_i.bias is not None:
        out["dense_i/bias"] = _gru_bias_init(h)
    return out


def _gru_bias_init(hidden: int):
    """dense_i's (3h,) bias: r and z are b_i + b_h (two uniforms), n is b_in alone."""
    two, one = uniform_sum(bound=1 / math.sqrt(hidden)), symmetric_uniform(1 / math.sqrt(hidden))

    def init(key, shape, dtype=None, out_sharding=None):
        k1, k2 = jax.random.split(key)
        return jnp.concatenate([two(k1, (2 * hidden,), dtype),
                                one(k2, (hidden,), dtype)]).reshape(shape)
    return init


GRU = register(Kind(
    "GRU", ("torch.nn.GRU", "torch.nn.GRUCell"), (nnx.GRUCell,), _gru_to_flax, _gru_to_torch,
    init=_gru_init, torch_values=_gru_values))
