"""Recurrent layers: torch ``LSTM``/``GRU``/``RNN`` (any ``num_layers``, either direction,
``batch_first`` either way) and their cells, against nnx cells, ``nnx.RNN`` and
``nnx.Bidirectional``.

A stacked or bidirectional torch module is split into one layer per ``num_layers`` index
(``rnn.l0``, ``rnn.l1``: torch's ``_l{k}`` tensors, and ``_l{k}_reverse`` for the backward
direction); a one-direction layer pairs with an ``nnx.RNN`` (or a bare cell), a
bidirectional one with an ``nnx.Bidirectional``, and an ``nnx.RNN(reverse=True)`` only
with a backward direction. Gates (i, f, g, o) for an LSTM and (r, z, n) for a GRU, in that
order in both. torch draws every weight and bias U(+-1/sqrt(hidden)).

Two families of nnx cells:

- Flax's own (``LSTMCell``, ``OptimizedLSTMCell``, ``GRUCell``, ``SimpleCell``) hold one
  bias where torch adds two: Flax's is b_ih + b_hh (back to torch: b_ih = that sum,
  b_hh = 0), and torch's tensors are compared as that sum (drawn as the sum of two
  uniforms). ``nnx.GRUCell`` has no b_hn (torch: tanh(W_in x + b_in + r * (W_hn h + b_hn))):
  a torch GRU whose b_hn is not 0 is refused. Forward and gradients agree; SGD steps do not
  (each of torch's two biases takes the gradient, so their sum moves twice as fast), and
  ``check`` says so in the report.
- ``winit_jax.kinds.cells`` (``TorchLSTMCell``, ``TorchGRUCell``, ``TorchRNNCell``) hold
  torch's four tensors per direction and compute what torch computes: every part passes.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from winit_jax.initializers import symmetric_uniform
from winit_jax.kinds._base import Kind, ParityError, np_copy, register, value
from winit_jax.torch_draws import uniform_sum

_BASES = ("weight_ih", "weight_hh", "bias_ih", "bias_hh")


# --- the torch side: one layer of a stacked or bidirectional module --------------------------

class TorchRNNLayer:
    """Layer ``layer`` of a stacked or bidirectional torch RNN (both its directions) as one
    layer: its tensors keep torch's names (``weight_ih_l1``, ``weight_ih_l1_reverse``)."""

    def __init__(self, owner, layer: int):
        self.owner, self.layer = owner, layer
        self.suffixes = [f"_l{layer}"] + ([f"_l{layer}_reverse"] if owner.bidirectional else [])

    def named_parameters(self, *args, **kwargs):
        for s in self.suffixes:
            for base in _BASES:
                p = getattr(self.owner, base + s, None)
                if p is not None:
                    yield base + s, p

    def parameters(self):
        return (p for _, p in self.named_parameters())

    def named_buffers(self, *args, **kwargs):
        return iter(())

    def __getattr__(self, name):
        owner = self.__dict__.get("owner")
        if owner is None:
            raise AttributeError(name)
        return getattr(owner, name)

    def __repr__(self):
        return f"{type(self.owner).__name__} layer {self.layer}"


class LSTMLayer(TorchRNNLayer):
    pass


class GRULayer(TorchRNNLayer):
    pass


class RNNLayer(TorchRNNLayer):
    pass


def _split(view_class):
    def split(module):
        if getattr(module, "num_layers", 1) > 1 or getattr(module, "bidirectional", False):
            return [(f"l{k}", view_class(module, k)) for k in range(module.num_layers)]
        return None
    return split


def _suffixes(t) -> list[str]:
    if isinstance(t, TorchRNNLayer):
        return t.suffixes
    return ["_l0"] if hasattr(t, "weight_ih_l0") else [""]


def _weights(t, s):
    """torch's (w_ih, w_hh, b_ih, b_hh) of one direction as NumPy copies (biases may be
    None)."""
    if getattr(t, "proj_size", 0):
        raise ParityError("LSTM with proj_size has no nnx cell")
    return tuple(None if getattr(t, b + s, None) is None else np_copy(getattr(t, b + s))
                 for b in _BASES)


def _torch_names(s, w_ih, w_hh, b_ih, b_hh) -> dict:
    out = {f"weight_ih{s}": w_ih, f"weight_hh{s}": w_hh}
    if b_ih is not None:
        out[f"bias_ih{s}"] = b_ih
        out[f"bias_hh{s}"] = b_hh
    return out


# --- the Flax side: a cell, an nnx.RNN or an nnx.Bidirectional -------------------------------

def _units(f) -> list[tuple[nnx.Module, str, bool]]:
    """(cell, its path inside ``f``, runs backward) per direction, forward first."""
    if isinstance(f, nnx.Bidirectional):
        return [(f.forward_rnn.cell, "forward_rnn/cell", False),
                (f.backward_rnn.cell, "backward_rnn/cell", True)]
    if isinstance(f, nnx.RNN):
        return [(f.cell, "cell", bool(f.reverse))]
    return [(f, "", False)]


def _directions(t, f):
    """[(torch suffix, nnx cell, its path)] or a ParityError saying how they differ."""
    suffixes, units = _suffixes(t), _units(f)
    if len(suffixes) != len(units):
        raise ParityError(f"torch's layer runs {len(suffixes)} direction(s), the nnx "
                          f"{type(f).__name__} {len(units)} (a bidirectional torch layer pairs "
                          "with an nnx.Bidirectional)")
    out = []
    for s, (cell, path, backward) in zip(suffixes, units):
        if s.endswith("_reverse") != backward:
            raise ParityError(f"direction: torch's {'backward' if s.endswith('_reverse') else 'forward'}"
                              f" direction vs an nnx.RNN that runs "
                              f"{'backward' if backward else 'forward'}")
        out.append((s, cell, path))
    return out


def _join(prefix: str, path: str) -> str:
    return f"{prefix}/{path}" if prefix else path


def _bias_note(name: str, cell: str) -> str:
    """Why training steps cannot agree for a port built from Flax's own cells."""
    return (f"{name}: Flax's cell holds one bias where torch adds two (b_ih + b_hh); SGD "
            "moves torch's sum twice as fast, so training steps part on those biases (forward "
            f"and gradients agree). Port with winit_jax.kinds.cells.{cell} to train alike.")


def _recurrent(name, torch_classes, view, cells, *, to_cell, from_cell, cell_init,
               canonical=None, training_note=""):
    """One recurrent kind from its per-direction pieces:

    - ``to_cell(cell, w_ih, w_hh, b_ih, b_hh, torch_layer) -> {path in cell: array}``;
    - ``from_cell(cell) -> (w_ih, w_hh, b_ih, b_hh)`` in torch's layout;
    - ``cell_init(cell) -> {path in cell: initialiser}``;
    - ``canonical(w_ih, w_hh, b_ih, b_hh)``: torch's tensors as ``from_cell`` writes them,
      where the cell holds less than torch (None: the same)."""
    def to_flax(t, f):
        out = {}
        for s, cell, prefix in _directions(t, f):
            values = to_cell(cell, *_weights(t, s), t)
            out.update({_join(prefix, k): v for k, v in values.items()})
        return out

    def to_torch(f, t):
        out = {}
        for s, cell, _ in _directions(t, f):
            out.update(_torch_names(s, *from_cell(cell)))
        return out

    def torch_values(t):
        out = {}
        for s in _suffixes(t):
            out.update(_torch_names(s, *canonical(*_weights(t, s))))
        return out

    def init(f):
        return {_join(prefix, k): fn for cell, prefix, _ in _units(f)
                for k, fn in cell_init(cell).items()}

    return register(Kind(
        name, torch_classes + (view,), cells + (nnx.RNN, nnx.Bidirectional), to_flax, to_torch,
        init=init, torch_values=torch_values if canonical else None,
        # Flax's one bias is compared with bias_ih: bias_hh's gradient is the same
        compares_gradient=(lambda n: not n.startswith("bias_hh")) if canonical else None,
        training_note=training_note,
        flax_accepts=lambda f: isinstance(_units(f)[0][0], cells), torch_split=_split(view),
        hint="the gate order (LSTM i, f, g, o; GRU r, z, n), time_major against torch's "
             "batch_first, the biases, the direction"))


def _uniform(cell):
    return symmetric_uniform(1 / math.sqrt(cell.hidden_features))


def _summed(w_ih, w_hh, b_ih, b_hh):
    """torch's two biases as the one a Flax cell holds: (w_ih, w_hh, b_ih + b_hh, 0)."""
    if b_ih is None:
        return w_ih, w_hh, None, None
    b = (b_ih + b_hh).astype(b_ih.dtype)
    return w_ih, w_hh, b, np.zeros_like(b)


# --- LSTM, Flax's cells ----------------------------------------------------------------------

_GATES = ("i", "f", "g", "o")
# nnx.LSTMCell's (input, hidden) Linear of each gate
_LSTM_CELL = {"i": ("ii", "hi"), "f": ("if_", "hf"), "g": ("ig", "hg"), "o": ("io", "ho")}


def _lstm_to_cell(cell, w_ih, w_hh, b_ih, b_hh, t):
    _, _, b, _ = _summed(w_ih, w_hh, b_ih, b_hh)
    if isinstance(cell, nnx.OptimizedLSTMCell):
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


def _lstm_from_cell(cell):
    if isinstance(cell, nnx.OptimizedLSTMCell):
        w_ih, w_hh = value(cell.dense_i.kernel).T, value(cell.dense_h.kernel).T
        b = None if cell.dense_h.bias is None else value(cell.dense_h.bias)
    else:
        names = [_LSTM_CELL[g] for g in _GATES]
        w_ih = np.concatenate([value(getattr(cell, i).kernel).T for i, _ in names])
        w_hh = np.concatenate([value(getattr(cell, h).kernel).T for _, h in names])
        b = (None if getattr(cell, names[0][1]).bias is None
             else np.concatenate([value(getattr(cell, h).bias) for _, h in names]))
    return w_ih, w_hh, b, None if b is None else np.zeros_like(b)


def _flax_cell_init(cell):
    """Every kernel U(+-1/sqrt(h)); the one bias of each gate the sum of two such."""
    out = {}
    for parts, sub in nnx.iter_modules(cell):
        if parts and isinstance(sub, nnx.Linear):
            path = "/".join(map(str, parts))
            out[f"{path}/kernel"] = _uniform(cell)
            if sub.bias is not None:  # the bias torch splits in two: b_ih + b_hh
                out[f"{path}/bias"] = uniform_sum(bound=1 / math.sqrt(cell.hidden_features))
    return out


LSTM = _recurrent("LSTM", ("torch.nn.LSTM", "torch.nn.LSTMCell"), LSTMLayer,
                  (nnx.OptimizedLSTMCell, nnx.LSTMCell), to_cell=_lstm_to_cell,
                  from_cell=_lstm_from_cell, cell_init=_flax_cell_init, canonical=_summed,
                  training_note=_bias_note("LSTM", "TorchLSTMCell"))


# --- GRU, Flax's cell ------------------------------------------------------------------------

def _gru_to_cell(cell, w_ih, w_hh, b_ih, b_hh, t):
    h = w_hh.shape[1]
    if b_hh is not None and np.any(b_hh[2 * h:]):
        raise ParityError("GRU: torch's b_hn (bias_hh[2h:]) is not 0, and nnx.GRUCell has no "
                          "place for it (it sits inside r * (W_hn h + b_hn)); port with "
                          "winit_jax.kinds.cells.TorchGRUCell")
    out = {"dense_i/kernel": w_ih.T, "dense_h/kernel": w_hh.T}
    if b_ih is not None:
        out["dense_i/bias"] = _gru_canonical(w_ih, w_hh, b_ih, b_hh)[2]
    return out


def _gru_canonical(w_ih, w_hh, b_ih, b_hh):
    """r, z: b_ih + b_hh; n: b_in (b_hn has no place in nnx.GRUCell: bias_hh reads 0)."""
    if b_ih is None:
        return w_ih, w_hh, None, None
    h = w_hh.shape[1]
    b = b_ih.copy()
    b[:2 * h] += b_hh[:2 * h]
    return w_ih, w_hh, b, np.zeros_like(b)


def _gru_from_cell(cell):
    b = None if cell.dense_i.bias is None else value(cell.dense_i.bias)
    return (value(cell.dense_i.kernel).T, value(cell.dense_h.kernel).T, b,
            None if b is None else np.zeros_like(b))


def _gru_init(cell):
    h = cell.hidden_features
    out = {"dense_i/kernel": _uniform(cell), "dense_h/kernel": _uniform(cell)}
    if cell.dense_i.bias is not None:
        two, one = uniform_sum(bound=1 / math.sqrt(h)), _uniform(cell)

        def bias(key, shape, dtype=None, out_sharding=None):
            """r and z: b_i + b_h (two uniforms); n: b_in alone."""
            k1, k2 = jax.random.split(key)
            return jnp.concatenate([two(k1, (2 * h,), dtype), one(k2, (h,), dtype)]).reshape(shape)
        out["dense_i/bias"] = bias
    return out


GRU = _recurrent("GRU", ("torch.nn.GRU", "torch.nn.GRUCell"), GRULayer, (nnx.GRUCell,),
                 to_cell=_gru_to_cell, from_cell=_gru_from_cell, cell_init=_gru_init,
                 canonical=_gru_canonical, training_note=_bias_note("GRU", "TorchGRUCell"))


# --- RNN (tanh / relu), Flax's SimpleCell ---------------------------------------------------

def _nonlinearity(cell) -> str:
    fn = getattr(cell, "activation_fn", None)
    return getattr(cell, "nonlinearity", None) or getattr(fn, "__name__", repr(fn))


def _simple_to_cell(cell, w_ih, w_hh, b_ih, b_hh, t):
    if getattr(cell, "residual", False):
        raise ParityError("SimpleCell(residual=True) has no torch twin")
    if _nonlinearity(cell) != t.nonlinearity:
        raise ParityError(f"nonlinearity: torch's {t.nonlinearity} vs the cell's "
                          f"{_nonlinearity(cell)}")
    out = {"dense_i/kernel": w_ih.T, "dense_h/kernel": w_hh.T}
    if b_ih is not None:
        out["dense_i/bias"] = _summed(w_ih, w_hh, b_ih, b_hh)[2]
    return out


def _simple_from_cell(cell):
    b = None if cell.dense_i.bias is None else value(cell.dense_i.bias)
    return (value(cell.dense_i.kernel).T, value(cell.dense_h.kernel).T, b,
            None if b is None else np.zeros_like(b))


SIMPLE = _recurrent("RNN", ("torch.nn.RNN", "torch.nn.RNNCell"), RNNLayer, (nnx.SimpleCell,),
                    to_cell=_simple_to_cell, from_cell=_simple_from_cell,
                    cell_init=_flax_cell_init, canonical=_summed,
                    training_note=_bias_note("RNN", "TorchRNNCell"))
