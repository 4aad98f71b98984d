"""Move weights between a torch module and an ``nnx`` model, both ways, for every common layer.

Layers are paired in their order of definition (torch's ``named_modules``, the nnx model's
attributes in the order they were set), checked by kind and shape; a porter whose orders
differ passes ``mapping={torch name: nnx path}``. Every value is converted and checked
before anything is written, so a mismatch leaves both models as they were. Dtypes are kept
(float32, or float64 with ``jax_enable_x64``): round trips are exact.

Layouts (torch -> Flax):

- Linear: weight (out, in) -> kernel (in, out).
- Conv{1,2,3}d, groups g: (out, in/g, *k) -> (*k, in/g, out); both cross-correlate, no flip.
- ConvTranspose{1,2,3}d: (in, out, *k) -> (*k, out, in) for ``transpose_kernel=True`` (Flax
  flips and swaps itself), or, for the default ``transpose_kernel=False``, the spatially
  flipped (*k, in, out): torch's transposed convolution is the gradient of a convolution.
- Embedding, LayerNorm/GroupNorm/RMSNorm (weight -> scale), BatchNorm (running_mean/var ->
  mean/var; ``num_batches_tracked`` has no Flax twin and is left alone).
- MultiheadAttention: the packed (3E, E) in-projection split into query, key and value,
  each (E, heads, head_dim); out_proj (E, E) -> (heads, head_dim, E).
- LSTM (one layer, one direction): gates (i, f, g, o) in both; Flax's one bias is
  b_ih + b_hh (back to torch: b_ih = that sum, b_hh = 0). GRU likewise for (r, z, n), where
  ``nnx.GRUCell`` has no b_hn: a torch GRU whose b_hn is not 0 is refused.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Mapping

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from winit_jax.models import MLP

_DTYPES = ("float32", "float64")


class ParityError(ValueError):
    """Two models that cannot be paired, or a value that does not fit; nothing was changed."""


# --- the Flax side: layers in definition order -------------------------------------------

FLAX_LEAVES = (nnx.Linear, nnx.Conv, nnx.ConvTranspose, nnx.Embed, nnx.LayerNorm, nnx.GroupNorm,
               nnx.RMSNorm, nnx.BatchNorm, nnx.MultiHeadAttention, nnx.OptimizedLSTMCell,
               nnx.LSTMCell, nnx.GRUCell)


def flax_layers(model) -> list[tuple[str, nnx.Module]]:
    """``(path, layer)`` of every supported layer of ``model`` in definition order (the
    order its attributes were set, list items in order); composites (attention, LSTM and GRU
    cells) are single layers."""
    out, seen = [], set()

    def walk(node, path):
        if id(node) in seen:
            return
        seen.add(id(node))
        if isinstance(node, FLAX_LEAVES):
            out.append(("/".join(map(str, path)), node))
            return
        if isinstance(node, (nnx.List, list, tuple)):
            items = enumerate(node)
        elif isinstance(node, nnx.Module):
            items = vars(node).items()
        else:
            return
        for k, child in items:
            if isinstance(child, (nnx.Module, nnx.List, list, tuple)):
                walk(child, path + (k,))

    walk(model, ())
    return out


# --- converters: one per kind, each way --------------------------------------------------

def _np(t):
    """A NumPy *copy* of a torch tensor: ``.numpy()`` shares torch's memory, and a JAX array
    made from it on the CPU can alias that memory too, so a later in-place torch update
    (BatchNorm's running statistics, an optimiser step) would silently change the nnx model."""
    return t.detach().cpu().numpy().copy()


def _lin_to_flax(t, f):
    out = {"kernel": _np(t.weight).T}
    if t.bias is not None:
        out["bias"] = _np(t.bias)
    return out


def _lin_to_torch(f, t):
    out = {"weight": np.asarray(f.kernel[...]).T}
    if f.bias is not None:
        out["bias"] = np.asarray(f.bias[...])
    return out


def _conv_perm(nd):
    return tuple(range(2, 2 + nd)) + (1, 0)  # (out, in, *k) -> (*k, in, out)


def _conv_to_flax(t, f):
    w = _np(t.weight)
    out = {"kernel": w.transpose(_conv_perm(w.ndim - 2))}
    if t.bias is not None:
        out["bias"] = _np(t.bias)
    return out


def _conv_to_torch(f, t):
    k = np.asarray(f.kernel[...])
    nd = k.ndim - 2
    out = {"weight": k.transpose((nd + 1, nd) + tuple(range(nd)))}
    if f.bias is not None:
        out["bias"] = np.asarray(f.bias[...])
    return out


def _convt_to_flax(t, f):
    w = _np(t.weight)  # (in, out, *k)
    nd = w.ndim - 2
    if f.transpose_kernel:  # Flax flips and swaps: (*k, out, in), as torch stores it
        k = w.transpose(_conv_perm(nd))
    else:  # (*k, in, out), spatially flipped
        k = np.flip(w, axis=tuple(range(2, 2 + nd))).transpose(tuple(range(2, 2 + nd)) + (0, 1))
    out = {"kernel": np.ascontiguousarray(k)}
    if t.bias is not None:
        out["bias"] = _np(t.bias)
    return out


def _convt_to_torch(f, t):
    if f.transpose_kernel:  # the inverse of _conv_perm, as for a convolution
        return _conv_to_torch(f, t)
    k = np.asarray(f.kernel[...])
    nd = k.ndim - 2
    w = np.flip(k.transpose((nd, nd + 1) + tuple(range(nd))), axis=tuple(range(2, 2 + nd)))
    out = {"weight": np.ascontiguousarray(w)}
    if f.bias is not None:
        out["bias"] = np.asarray(f.bias[...])
    return out


def _embed_to_flax(t, f):
    return {"embedding": _np(t.weight)}


def _embed_to_torch(f, t):
    return {"weight": np.asarray(f.embedding[...])}


_NORM_NAMES = (("weight", "scale"), ("bias", "bias"), ("running_mean", "mean"),
               ("running_var", "var"))


def _norm_to_flax(t, f):
    out = {}
    for tn, fn in _NORM_NAMES:
        tv = getattr(t, tn, None)
        if tv is not None and getattr(f, fn, None) is not None:
            out[fn] = _np(tv)
        elif (tv is None) != (getattr(f, fn, None) is None):
            raise ParityError(f"{type(t).__name__} has {tn}={'yes' if tv is not None else 'no'} "
                              f"but {type(f).__name__} has {fn}="
                              f"{'yes' if getattr(f, fn, None) is not None else 'no'}")
    return out


def _norm_to_torch(f, t):
    return {tn: np.asarray(getattr(f, fn)[...]) for tn, fn in _NORM_NAMES
            if getattr(t, tn, None) is not None and getattr(f, fn, None) is not None}


def _mha_to_flax(t, f):
    if not t._qkv_same_embed_dim:
        raise ParityError("MultiheadAttention with kdim/vdim != embed_dim is not supported")
    e, h = t.embed_dim, t.num_heads
    w = _np(t.in_proj_weight)
    out = {}
    for i, name in enumerate(("query", "key", "value")):
        out[f"{name}/kernel"] = w[i * e:(i + 1) * e].T.reshape(e, h, e // h)
        if t.in_proj_bias is not None:
            out[f"{name}/bias"] = _np(t.in_proj_bias)[i * e:(i + 1) * e].reshape(h, e // h)
    wo = _np(t.out_proj.weight)
    out["out/kernel"] = wo.T.reshape(h, e // h, wo.shape[0])
    if t.out_proj.bias is not None:
        out["out/bias"] = _np(t.out_proj.bias)
    return out


def _mha_to_torch(f, t):
    e = t.embed_dim
    ws = [np.asarray(getattr(f, n).kernel[...]).reshape(e, e).T for n in ("query", "key", "value")]
    out = {"in_proj_weight": np.concatenate(ws)}
    if t.in_proj_bias is not None:
        out["in_proj_bias"] = np.concatenate([np.asarray(getattr(f, n).bias[...]).reshape(e)
                                              for n in ("query", "key", "value")])
    ko = np.asarray(f.out.kernel[...])
    out["out_proj.weight"] = ko.reshape(e, ko.shape[-1]).T
    if t.out_proj.bias is not None:
        out["out_proj.bias"] = np.asarray(f.out.bias[...])
    return out


def _rnn_check(t):
    if getattr(t, "num_layers", 1) != 1 or getattr(t, "bidirectional", False):
        raise ParityError(f"{type(t).__name__}: only one layer, one direction maps to an nnx cell")
    if getattr(t, "proj_size", 0):
        raise ParityError("LSTM with proj_size has no nnx cell")


def _rnn_weights(t):
    suffix = "_l0" if hasattr(t, "weight_ih_l0") else ""
    get = (lambda n: getattr(t, f"{n}{suffix}", None))
    return get("weight_ih"), get("weight_hh"), get("bias_ih"), get("bias_hh")


_GATES = ("i", "f", "g", "o")
# nnx.LSTMCell's (input, hidden) Linear of each gate
_LSTM_CELL = {"i": ("ii", "hi"), "f": ("if_", "hf"), "g": ("ig", "hg"), "o": ("io", "ho")}


def _lstm_to_flax(t, f):
    _rnn_check(t)
    w_ih, w_hh, b_ih, b_hh = (None if x is None else _np(x) for x in _rnn_weights(t))
    b = (b_ih if b_ih is not None else 0) + (b_hh if b_hh is not None else 0)
    if isinstance(f, nnx.OptimizedLSTMCell):
        return {"dense_i/kernel": w_ih.T, "dense_h/kernel": w_hh.T,
                "dense_h/bias": np.broadcast_to(b, (w_hh.shape[0],)).astype(w_hh.dtype)}
    h = w_hh.shape[1]
    out = {}
    for k, gate in enumerate(_GATES):
        rows = slice(k * h, (k + 1) * h)
        i_name, h_name = _LSTM_CELL[gate]
        out[f"{i_name}/kernel"] = w_ih[rows].T
        out[f"{h_name}/kernel"] = w_hh[rows].T
        out[f"{h_name}/bias"] = np.broadcast_to(b, (4 * h,))[rows].astype(w_hh.dtype)
    return out


def _lstm_to_torch(f, t):
    if isinstance(f, nnx.OptimizedLSTMCell):
        w_ih, w_hh = np.asarray(f.dense_i.kernel[...]).T, np.asarray(f.dense_h.kernel[...]).T
        b = np.asarray(f.dense_h.bias[...])
    else:
        w_ih = np.concatenate([np.asarray(getattr(f, _LSTM_CELL[g][0]).kernel[...]).T
                               for g in _GATES])
        w_hh = np.concatenate([np.asarray(getattr(f, _LSTM_CELL[g][1]).kernel[...]).T
                               for g in _GATES])
        b = np.concatenate([np.asarray(getattr(f, _LSTM_CELL[g][1]).bias[...]) for g in _GATES])
    return _rnn_out(t, w_ih, w_hh, b)


def _rnn_out(t, w_ih, w_hh, b):
    suffix = "_l0" if hasattr(t, "weight_ih_l0") else ""
    out = {f"weight_ih{suffix}": w_ih, f"weight_hh{suffix}": w_hh}
    if getattr(t, f"bias_ih{suffix}", None) is not None:
        out[f"bias_ih{suffix}"] = b
        out[f"bias_hh{suffix}"] = np.zeros_like(b)
    return out


def _gru_to_flax(t, f):
    _rnn_check(t)
    w_ih, w_hh, b_ih, b_hh = (None if x is None else _np(x) for x in _rnn_weights(t))
    h = w_hh.shape[1]
    if b_hh is not None and np.any(b_hh[2 * h:]):
        raise ParityError("GRU: torch's b_hn (bias_hh[2h:]) is not 0, and nnx.GRUCell has no "
                          "place for it (it sits inside r * (W_hn h + b_hn))")
    b = np.zeros(3 * h, w_ih.dtype) if b_ih is None else b_ih.copy()
    if b_hh is not None:
        b[:2 * h] += b_hh[:2 * h]
    return {"dense_i/kernel": w_ih.T, "dense_h/kernel": w_hh.T, "dense_i/bias": b}


def _gru_to_torch(f, t):
    return _rnn_out(t, np.asarray(f.dense_i.kernel[...]).T, np.asarray(f.dense_h.kernel[...]).T,
                    np.asarray(f.dense_i.bias[...]))


@dataclasses.dataclass(frozen=True)
class Kind:
    """One kind of layer in both frameworks, and its converters."""

    name: str
    torch_types: tuple[str, ...]   # torch.nn class names
    flax_types: tuple[type, ...]
    to_flax: Callable
    to_torch: Callable


KINDS = (
    Kind("Linear", ("Linear", "NonDynamicallyQuantizableLinear"), (nnx.Linear,), _lin_to_flax,
         _lin_to_torch),
    Kind("Conv", ("Conv1d", "Conv2d", "Conv3d"), (nnx.Conv,), _conv_to_flax, _conv_to_torch),
    Kind("ConvTranspose", ("ConvTranspose1d", "ConvTranspose2d", "ConvTranspose3d"),
         (nnx.ConvTranspose,), _convt_to_flax, _convt_to_torch),
    Kind("Embedding", ("Embedding",), (nnx.Embed,), _embed_to_flax, _embed_to_torch),
    Kind("LayerNorm", ("LayerNorm",), (nnx.LayerNorm,), _norm_to_flax, _norm_to_torch),
    Kind("GroupNorm", ("GroupNorm",), (nnx.GroupNorm,), _norm_to_flax, _norm_to_torch),
    Kind("RMSNorm", ("RMSNorm",), (nnx.RMSNorm,), _norm_to_flax, _norm_to_torch),
    Kind("BatchNorm", ("BatchNorm1d", "BatchNorm2d", "BatchNorm3d"), (nnx.BatchNorm,),
         _norm_to_flax, _norm_to_torch),
    Kind("MultiheadAttention", ("MultiheadAttention",), (nnx.MultiHeadAttention,), _mha_to_flax,
         _mha_to_torch),
    Kind("LSTM", ("LSTM", "LSTMCell"), (nnx.OptimizedLSTMCell, nnx.LSTMCell), _lstm_to_flax,
         _lstm_to_torch),
    Kind("GRU", ("GRU", "GRUCell"), (nnx.GRUCell,), _gru_to_flax, _gru_to_torch),
)


def _torch_kind(module) -> Kind | None:
    name = type(module).__name__
    return next((k for k in KINDS if name in k.torch_types), None)


def torch_layers(module) -> list[tuple[str, object]]:
    """``(name, layer)`` of every supported torch layer in definition order; composites
    (MultiheadAttention, LSTM, GRU) are single layers.

    Raises:
      ParityError: for a module with parameters of its own of an unsupported type.
    """
    out, inside = [], set()
    for name, m in module.named_modules():
        if any((p == "" and name) or name.startswith(p + ".") for p in inside):
            continue
        kind = _torch_kind(m)
        if kind is not None:
            out.append((name, m))
            inside.add(name)
        elif any(True for _ in m.parameters(recurse=False)):
            raise ParityError(f"torch layer {name or '<root>'} ({type(m).__name__}) has "
                              "parameters of a kind winit_jax.parity does not know")
    return out


def _flax_kind(layer) -> Kind:
    return next(k for k in KINDS if isinstance(layer, k.flax_types))


def pairs(torch_module, model, mapping: Mapping[str, str] | None = None):
    """The paired layers ``[(torch name, torch layer, nnx path, nnx layer, kind)]``.

    Raises:
      ParityError: different counts, kinds or an unknown mapping entry, naming the first pair
        that does not fit.
    """
    tl_, fl = torch_layers(torch_module), flax_layers(model)
    unknown = [p for p, m in nnx.iter_modules(model) if _own_params(m) and not isinstance(
        m, FLAX_LEAVES) and not any(isinstance(a, FLAX_LEAVES) for a in _ancestors(model, p))]
    if unknown:
        p, m = next((p, m) for p, m in nnx.iter_modules(model) if p == unknown[0])
        raise ParityError(f"nnx layer {'/'.join(map(str, p)) or '<root>'} ({type(m).__name__}) "
                          "has parameters of a kind winit_jax.parity does not know")
    if mapping:
        by_path = dict(fl)
        by_name = dict(tl_)
        for tname, fpath in mapping.items():
            if tname not in by_name:
                raise ParityError(f"mapping: torch has no layer {tname!r}")
            if fpath not in by_path:
                raise ParityError(f"mapping: the nnx model has no layer {fpath!r}")
        rest_t = [(n, m) for n, m in tl_ if n not in mapping]
        rest_f = [(p, m) for p, m in fl if p not in set(mapping.values())]
        ordered = [(n, by_name[n], p, by_path[p]) for n, p in mapping.items()]
        ordered += [(n, m, p, fm) for (n, m), (p, fm) in zip(rest_t, rest_f)]
        n_t, n_f = len(rest_t), len(rest_f)
    else:
        ordered = [(n, m, p, fm) for (n, m), (p, fm) in zip(tl_, fl)]
        n_t, n_f = len(tl_), len(fl)
    for n, m, p, fm in ordered:
        if _torch_kind(m) is not _flax_kind(fm):
            raise ParityError(f"layer pair does not fit: torch {n} ({type(m).__name__}) vs nnx "
                              f"{p} ({type(fm).__name__})")
    if n_t != n_f:
        extra = (f"torch {tl_[len(fl)][0]}" if n_t > n_f else f"nnx {fl[len(tl_)][0]}")
        raise ParityError(f"torch has {len(tl_)} layers and the nnx model {len(fl)}; the first "
                          f"without a partner: {extra}")
    return [(n, m, p, fm, _torch_kind(m)) for n, m, p, fm in ordered]


def _own_params(m) -> bool:
    return any(isinstance(v, nnx.Variable) for v in vars(m).values())


def _ancestors(model, path):
    """The model and every module above ``path`` in it."""
    node, out = model, [model]
    for part in path[:-1]:
        node = node[part] if isinstance(node, (nnx.List, list, tuple)) else getattr(node, part)
        out.append(node)
    return out


def _lookup(layer, path: str):
    node = layer
    for part in path.split("/"):
        node = getattr(node, part)
    return node


def _check_dtype(dtype, where: str) -> str:
    name = np.dtype(dtype).name
    if name not in _DTYPES:
        raise ParityError(f"{where}: dtype {name} (supported: {', '.join(_DTYPES)})")
    if name == "float64" and not jax.config.jax_enable_x64:
        raise ParityError(f"{where}: a float64 model needs jax_enable_x64=True")
    return name


def from_torch(torch_module, model=None, *, mapping: Mapping[str, str] | None = None):
    """Copies ``torch_module``'s parameters and buffers into the nnx ``model`` in place, and
    returns it. With no ``model``, ``torch_module`` must be an ``nn.Sequential`` of
    Linear/ReLU and a ``winit_jax.MLP`` is built for it.

    Raises:
      ParityError: unpaired or mismatched layers, shapes or dtypes (a ValueError);
        nothing is written then.
    """
    if model is None:
        model = _mlp_for(torch_module)
    updates = []
    for tname, tm, fpath, fm, kind in pairs(torch_module, model, mapping):
        values = kind.to_flax(tm, fm)
        for sub, value in values.items():
            var = _lookup(fm, sub)
            where = f"torch {tname} -> nnx {fpath}/{sub}"
            want = tuple(var.get_value().shape)
            if tuple(value.shape) != want:
                raise ParityError(f"{where}: shape {tuple(value.shape)} (converted) vs {want}")
            dtype = _check_dtype(value.dtype, where)
            if dtype != np.dtype(var.get_value().dtype).name and isinstance(var, nnx.Param):
                raise ParityError(f"{where}: torch dtype {dtype} vs nnx "
                                  f"{np.dtype(var.get_value().dtype).name}")
            updates.append((var, jnp.asarray(value, var.get_value().dtype)))
    for var, value in updates:
        var.set_value(value)
    return model


def to_torch(model, torch_module=None, *, mapping: Mapping[str, str] | None = None):
    """Copies the nnx ``model``'s parameters and batch statistics into ``torch_module`` in
    place, and returns it. With no ``torch_module``, ``model`` must be a ReLU
    ``winit_jax.MLP`` and the matching ``nn.Sequential`` is built.

    Raises:
      ParityError: as ``from_torch``; nothing is written then.
    """
    import torch

    if torch_module is None:
        torch_module = _sequential_for(model)
    updates = []
    for tname, tm, fpath, fm, kind in pairs(torch_module, model, mapping):
        buffers = dict(tm.named_buffers())
        state = dict(tm.named_parameters()) | buffers
        for sub, value in kind.to_torch(fm, tm).items():
            where = f"nnx {fpath} -> torch {tname}.{sub}"
            if sub in buffers:  # nnx keeps BatchNorm statistics in float32 whatever param_dtype
                value = np.asarray(value).astype(str(buffers[sub].dtype).removeprefix("torch."))
            if sub not in state:
                raise ParityError(f"{where}: the torch layer has no such tensor")
            target = state[sub]
            if tuple(value.shape) != tuple(target.shape):
                raise ParityError(f"{where}: shape {tuple(value.shape)} (converted) vs "
                                  f"{tuple(target.shape)}")
            if str(target.dtype) != f"torch.{np.dtype(value.dtype).name}":
                raise ParityError(f"{where}: nnx dtype {np.dtype(value.dtype).name} vs torch "
                                  f"{str(target.dtype).removeprefix('torch.')}")
            updates.append((target, torch.from_numpy(np.ascontiguousarray(value).copy())))
    with torch.no_grad():
        for target, value in updates:
            target.copy_(value)
    return torch_module


# --- the notebooks' MLP: the special case of an nn.Sequential of Linear/ReLU ---------------

def _mlp_for(sequential) -> MLP:
    import torch.nn as nn

    if not isinstance(sequential, nn.Sequential):
        raise ParityError(f"from_torch without a model needs an nn.Sequential of Linear/ReLU, "
                          f"got {type(sequential).__name__}")
    mods = list(sequential)
    if not mods or len(mods) % 2 == 0:
        raise ParityError(f"from_torch needs Linear (ReLU Linear)*, got {len(mods)} modules")
    for i, m in enumerate(mods):
        want = nn.Linear if i % 2 == 0 else nn.ReLU
        if type(m) is not want:
            raise ParityError(f"from_torch needs Linear (ReLU Linear)*; module {i} is "
                              f"{type(m).__name__}, expected {want.__name__}")
    linears = mods[::2]
    for i, (a, b) in enumerate(zip(linears, linears[1:])):
        if a.out_features != b.in_features:
            raise ParityError(f"from_torch: layer {i} gives {a.out_features} features "
                              f"but layer {i + 1} takes {b.in_features}")
    for i, m in enumerate(linears):
        if m.bias is None:
            raise ParityError(f"from_torch: Linear {i} has no bias")
    dtypes = {str(m.weight.dtype).removeprefix("torch.") for m in linears}
    if len(dtypes) != 1:
        raise ParityError(f"from_torch needs one dtype among {_DTYPES} for all layers")
    dtype = _check_dtype(dtypes.pop(), "from_torch")
    sizes = [linears[0].in_features] + [m.out_features for m in linears]
    return MLP(sizes, kernel_init=nnx.initializers.zeros_init(), param_dtype=jnp.dtype(dtype),
               rngs=nnx.Rngs(0))


def _sequential_for(mlp):
    import torch
    import torch.nn as nn

    if not isinstance(mlp, MLP) or mlp.activation is not jax.nn.relu:
        raise ParityError("to_torch without a torch module supports ReLU winit_jax.MLPs only")
    dtype = getattr(torch, np.dtype(mlp.layers[0].kernel[...].dtype).name)
    layers = []
    for n_in, n_out in zip(mlp.sizes[:-1], mlp.sizes[1:]):
        layers += [nn.Linear(n_in, n_out, dtype=dtype), nn.ReLU()]
    return nn.Sequential(*layers[:-1])


# --- the harness -------------------------------------------------------------------------

# Tolerances, relative to the largest entry of the reference tensor (the scale of the
# tensor, not of each element: near-zero entries would otherwise dominate).
# float64: both frameworks compute the same sums in a different order; rounding alone
# leaves gaps of ~1e-15 relative, measured up to 5e-14 after 5 training steps (README).
# float32: HF transformers' PT<->Flax forward tolerance 1e-5; measured gaps on the built-in
# models are 1e-7..4e-6 (README), gradients up to 1e-5, steps grow them, hence 1e-4.
TOLERANCES = {
    "float64": {"forward": 1e-10, "gradient": 1e-9, "step": 1e-8},
    "float32": {"forward": 1e-5, "gradient": 1e-4, "step": 1e-3},
}
NOISE_FACTOR = 10.0  # how far beyond torch's own float32 rounding gap a port may be
KS_ALPHA = 1e-3  # per test, Bonferroni-corrected over the tensors compared
MIN_KS_VALUES = 8  # below this a tensor is compared by its range only (KS has no power)


@dataclasses.dataclass(frozen=True)
class Check:
    """One comparison: what, its figure, its threshold, and whether it passed."""

    part: str      # "init", "forward", "gradient", "step", "batch_stats"
    name: str      # tensor or output
    value: float   # gap (relative), or p-value for "init"
    tol: float
    ok: bool
    how: str = ""


@dataclasses.dataclass
class ParityReport:
    """What ``check`` found; ``ok`` when every check passed."""

    dtype: str
    checks: list[Check]
    # per training step, the loss of each run: "torch", "flax", and (float32) "torch_float64"
    curves: dict[str, list[float]] = dataclasses.field(default_factory=dict)
    # the metric on the held-out data after training, per run (same keys as curves)
    metrics: dict[str, float] = dataclasses.field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks)

    def failures(self) -> list[Check]:
        return [c for c in self.checks if not c.ok]

    def worst(self, part: str) -> Check | None:
        """The check of ``part`` farthest beyond (or nearest to) its threshold."""
        cs = [c for c in self.checks if c.part == part]
        if not cs:
            return None
        if part == "init":
            return min(cs, key=lambda c: c.value / c.tol)
        return max(cs, key=lambda c: c.value / c.tol if c.tol else c.value)

    def assert_ok(self) -> None:
        """Raises one readable ``AssertionError`` naming the worst failing check."""
        bad = self.failures()
        if bad:
            worst = max(bad, key=lambda c: (c.part != "init") * c.value / max(c.tol, 1e-300)
                        + (c.part == "init") * c.tol / max(c.value, 1e-300))
            raise AssertionError(
                f"parity failed in {len(bad)} of {len(self.checks)} checks; worst: {worst.part} "
                f"{worst.name}: {'p' if worst.part == 'init' else 'gap'} {worst.value:.3g} vs "
                f"{'threshold' if worst.part == 'init' else 'tolerance'} {worst.tol:.3g} "
                f"({worst.how})")

    def summary(self) -> list[dict]:
        """Per part: how many checks, how many passed, the worst figure and its threshold."""
        out = []
        for part in dict.fromkeys(c.part for c in self.checks):
            cs = [c for c in self.checks if c.part == part]
            w = self.worst(part)
            out.append({"part": part, "checks": len(cs), "passed": sum(c.ok for c in cs),
                        "worst": w.name, "value": w.value, "tol": w.tol})
        return out

    def table(self) -> str:
        """A plain-text table of ``summary()``."""
        rows = [("part", "checks", "passed", "worst tensor", "figure", "threshold")]
        rows += [(s["part"], str(s["checks"]), str(s["passed"]), s["worst"], f"{s['value']:.3g}",
                  f"{s['tol']:.3g}") for s in self.summary()]
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in rows)

    def to_json(self) -> dict:
        return {"dtype": self.dtype, "ok": self.ok, "summary": self.summary(),
                "checks": [dataclasses.asdict(c) for c in self.checks], "curves": self.curves,
                "metrics": self.metrics}


def _rel_gap(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.shape != b.shape:
        return float("inf")
    scale = np.abs(b).max() if b.size else 0.0
    gap = np.abs(a - b).max() if b.size else 0.0
    return float(gap / scale) if scale > 0 else float(gap)


def _torch_tensors(paired, source, torch_override=None):
    """{torch tensor name: array} over the ``pairs``: ``source`` "torch" reads torch (or the
    module ``torch_override`` maps a torch layer to); "flax" converts the nnx layers' values
    to torch's layout (through the same converters as ``to_torch``)."""
    out = {}
    for tname, tm, _, fm, kind in paired:
        if torch_override is not None:
            tm = torch_override[tname]
        if source == "torch" and kind.name in ("LSTM", "GRU"):
            # torch's two biases as the one Flax holds: b_ih + b_hh (b_hn stays apart in a GRU)
            prefix = f"{tname}." if tname else ""
            out.update({prefix + n: v for n, v in _rnn_canonical(tm, kind).items()})
            continue
        prefix = f"{tname}." if tname else ""
        if source == "torch":
            names = kind.to_torch(fm, tm).keys()
            state = dict(tm.named_parameters()) | dict(tm.named_buffers())
            out.update({prefix + n: _np(state[n]) for n in names})
        else:
            out.update({prefix + n: np.asarray(v) for n, v in kind.to_torch(fm, tm).items()})
    return out


def _rnn_canonical(tm, kind) -> dict:
    """A torch LSTM/GRU's tensors as ``to_torch`` writes them from a Flax cell."""
    w_ih, w_hh, b_ih, b_hh = (None if x is None else _np(x) for x in _rnn_weights(tm))
    if b_ih is None:
        return _rnn_out(tm, w_ih, w_hh, None)
    b = b_ih + b_hh
    if kind.name == "GRU":
        h = w_hh.shape[1]
        b[2 * h:] = b_ih[2 * h:]
    return _rnn_out(tm, w_ih, w_hh, b)


def _reset_torch(module):
    """What constructing ``module`` again draws: every submodule's ``reset_parameters`` (or
    ``_reset_parameters``), children before parents (MultiheadAttention zeroes the bias its
    out_proj Linear drew)."""
    for m in reversed(list(module.modules())):
        reset = getattr(m, "reset_parameters", None) or getattr(m, "_reset_parameters", None)
        if reset is not None:
            reset()


def _init_checks(torch_module, model, paired, seeds, overrides, fresh_torch):
    import torch
    from scipy import stats

    from winit_jax import torch_like

    ours, theirs = {}, {}
    for seed in range(seeds):
        torch_like.init(model, jax.random.key(seed), overrides=overrides)
        for k, v in _torch_tensors(paired, "flax").items():
            ours.setdefault(k, []).append(v.ravel())
        torch.manual_seed(seed)
        if fresh_torch is None:
            _reset_torch(torch_module)
            layers = None
        else:
            fresh = fresh_torch().to(next(torch_module.parameters()).dtype)
            layers = dict(torch_layers(fresh))
            if set(layers) != {n for n, *_ in paired}:
                raise ParityError("fresh_torch builds a module with other layers than torch_module")
        for k, v in _torch_tensors(paired, "torch", layers).items():
            theirs.setdefault(k, []).append(v.ravel())
    ours = {k: np.concatenate(v).astype(np.float64) for k, v in ours.items()}
    theirs = {k: np.concatenate(v).astype(np.float64) for k, v in theirs.items()}
    random = [k for k in theirs if np.ptp(theirs[k]) > 0]
    checks = []
    threshold = KS_ALPHA / max(1, len(random))
    for k in theirs:
        if k in random and min(len(theirs[k]), len(ours[k])) >= MIN_KS_VALUES:
            p = float(stats.ks_2samp(ours[k], theirs[k]).pvalue)
            checks.append(Check("init", k, p, threshold, p >= threshold,
                                f"KS, {len(theirs[k])} values each, {seeds} seeds"))
        elif k in random:  # too few values for a KS test: the port must stay in torch's range
            lo, hi = theirs[k].min(), theirs[k].max()
            span = hi - lo
            inside = bool(np.all((ours[k] >= lo - span) & (ours[k] <= hi + span)))
            checks.append(Check("init", k, 1.0 if inside else 0.0, threshold, inside,
                                f"{len(theirs[k])} values: within torch's range +- its width"))
        else:  # a constant in torch: must be that constant here
            gap = float(np.abs(ours[k] - theirs[k][0]).max()) if ours[k].size else 0.0
            checks.append(Check("init", k, 1.0 if gap == 0 else 0.0, threshold, gap == 0,
                                f"constant {theirs[k][0]:g} in torch"))
    return checks


def check(torch_module, model, inputs, *, loss: Callable | None = None, steps: int = 0,
          batches: Iterable | None = None, learning_rate: float = 0.01, momentum: float = 0.0,
          init_seeds: int = 4, init_overrides: Mapping | None = None,
          fresh_torch: Callable | None = None, train: bool = False,
          flax_inputs: Callable | None = None, flax_outputs: Callable | None = None,
          metric: Callable | None = None, eval_data=None,
          mapping: Mapping[str, str] | None = None,
          dtype: str | None = None) -> ParityReport:
    """Checks that an nnx port initialises, computes, differentiates and trains like the torch
    module it ports, in one call.

    1. init (``init_seeds`` > 0): every paired tensor drawn by ``torch_like.init`` against
       torch's own fresh initialisation (``reset_parameters`` under ``torch.manual_seed``),
       pooled over the seeds: KS with p >= 1e-3 / (tensors) (Bonferroni); constants exactly.
       A model whose constructor re-initialises (torchvision's ResNet) passes
       ``fresh_torch`` (a factory) and the matching ``init_overrides`` (its recipe).
    2. forward: torch's weights copied across (``from_torch``); outputs compared, the gap
       relative to the largest |output| (relative so that a net whose outputs are 1e4 or
       1e-9 is judged alike).
    3. gradient: of the loss for every tensor, relative to that gradient's largest entry.
    4. steps: SGD steps (``learning_rate``, ``momentum``: torch.optim.SGD and optax.sgd) from
       the same start, ``steps`` of them on ``inputs``, or one per item of ``batches`` (an
       epoch, in the order given); the loss gap per step (``report.curves`` holds both
       curves) and every tensor's gap after the last step. With ``train`` the models run in
       training mode (BatchNorm uses and updates batch statistics); torch's momentum 0.1 is
       Flax's 0.9, and torch updates the running variance with the unbiased batch variance
       where Flax uses the biased one, so running variances are compared with a tolerance of
       that factor, 1 / (n - 1) relative, n the values per channel.
    5. metric (with ``eval_data``): ``metric(output, target)`` (e.g. ``accuracy``) of both
       trained models on held-out data, in eval mode.
    Dropout must be off in both (``dropout=0``).

    The loss takes the output (a torch tensor or a JAX array), or the output and the target
    when the data come as ``(inputs, targets)`` pairs, and returns a scalar. Defaults:
    mean((y - c)^2) for a fixed random c (see ``_default_loss``: the sum of squares is
    degenerate after a final LayerNorm); with targets, ``cross_entropy`` for integer targets
    and the mean squared error for real ones.

    Args:
      torch_module: the original (its weights are restored at the end).
      model: the nnx port (left holding torch's weights, trained ``steps`` steps).
      inputs: a batch in torch's layout (NumPy or torch), or an ``(inputs, targets)`` pair;
        ``flax_inputs`` maps inputs to the port's layout (e.g. NCHW -> NHWC), and
        ``flax_outputs`` the port's output back to torch's (e.g. NHWC -> NCHW); default
        unchanged.
      batches: training batches, each like ``inputs``; excludes ``steps``.
      metric, eval_data: a metric of (output, target) and an ``(inputs, targets)`` pair.
      dtype: "float32" or "float64" (default: the torch module's); tolerances per dtype in
        ``TOLERANCES``.

    Returns:
      A ``ParityReport``: ``ok``, ``assert_ok()``, ``table()``, ``to_json()``, ``curves``.

    Raises:
      ParityError: models that cannot be paired, inputs or batches that do not fit them,
        outputs of different shapes, ``steps`` with ``batches``, a ``metric`` without
        ``eval_data``; raised before either model is changed.
    """
    import copy

    import optax
    import torch

    first = next(iter(torch_module.parameters()))
    dtype = dtype or str(first.dtype).removeprefix("torch.")
    _check_dtype(dtype, "check")
    tol = TOLERANCES[dtype]
    tdtype = getattr(torch, dtype)
    data = _Data(tdtype, flax_inputs)
    x_t, x_f, c_t, c_f = data(inputs, "inputs")
    if batches is not None and steps:
        raise ParityError(f"steps: {steps} steps with batches; the batches set the steps (one each)")
    schedule = ([data(b, f"batches[{i}]", like=x_t) for i, b in enumerate(batches)]
                if batches is not None else [(x_t, x_f, c_t, c_f)] * steps)
    if (metric is None) != (eval_data is None):
        raise ParityError("metric: metric and eval_data go together")
    held_out = data(eval_data, "eval_data", like=x_t) if eval_data is not None else None
    out_f = flax_outputs or (lambda y: y)
    paired = pairs(torch_module, model, mapping)  # once: nnx.jit may reorder attributes later
    _probe(torch_module, model, x_t, x_f, out_f)
    if any((b[2] is None) != (c_t is None) for b in schedule):
        raise ParityError("batches: give targets with every batch or with none (as inputs)")
    loss = loss or (_default_loss(x_t, torch_module) if c_t is None else _target_loss(c_t))
    call = (lambda y, c: loss(y)) if c_t is None else loss
    saved = copy.deepcopy(torch_module.state_dict())
    checks, curves, metrics = [], {}, {}
    try:
        if init_seeds:
            checks += _init_checks(torch_module, model, paired, init_seeds, init_overrides,
                                   fresh_torch)
            torch_module.load_state_dict(saved)
        from_torch(torch_module, model, mapping=mapping)

        def modes(training):
            torch_module.train(training)
            (model.train if training else model.eval)()

        # forward and gradient, in eval mode (no batch-statistic updates)
        modes(False)
        torch_module.zero_grad()
        y_t = _first(torch_module(x_t))
        call(y_t, c_t).backward()
        y_f = out_f(model(x_f))
        checks.append(Check("forward", "output", _rel_gap(y_f, y_t.detach().numpy()),
                            tol["forward"], True, "max |diff| / max |torch output|"))
        # an LSTM/GRU's bias_hh gets the same gradient as bias_ih (r, z, and the LSTM's all):
        # Flax's one bias is compared with bias_ih
        grads_t = {(f"{n}.{p}" if n else p): _np(t.grad) for n, m, _, _, kind in paired
                   for p, t in m.named_parameters() if t.grad is not None
                   and not (kind.name in ("LSTM", "GRU") and p.startswith("bias_hh"))}
        grads = nnx.grad(lambda m: call(out_f(m(x_f)), c_f))(model)
        # read the gradients through the model's own structure (a merged copy would list its
        # attributes sorted, not in definition order)
        param_vars = [v for _, v in nnx.iter_graph(model) if isinstance(v, nnx.Param)]
        originals = [v.get_value() for v in param_vars]
        nnx.update(model, grads)
        grads_f = _torch_tensors(paired, "flax")
        for var, value in zip(param_vars, originals):
            var.set_value(value)
        for k, g in grads_t.items():
            checks.append(Check("gradient", k, _rel_gap(grads_f[k], g), tol["gradient"], True,
                                "max |diff| / max |torch gradient|"))
        # float32: the gap that float32 rounding alone makes, measured on torch itself (the
        # same steps in float64 from the same start); the port may differ from torch by
        # NOISE_FACTOR times that, since two float32 runs each err by about as much.
        ref = (copy.deepcopy(torch_module).double()
               if dtype == "float32" and (schedule or held_out) else None)
        if schedule:
            checks += _step_checks(torch_module, model, ref, paired, schedule, call, out_f,
                                   modes, train, learning_rate, momentum, tol, curves, optax)
        if held_out is not None:
            modes(False)
            value_t, value_r, value_f = _metric_values(torch_module, ref, model, held_out,
                                                       metric, out_f)
            metrics.update(torch=value_t, flax=value_f)
            if ref is not None:
                metrics["torch_float64"] = value_r
            noise = _rel_gap(value_t, value_r) if ref is not None else 0.0
            checks.append(Check("metric", getattr(metric, "__name__", "metric"),
                                _rel_gap(value_f, value_t), max(tol["step"], NOISE_FACTOR * noise),
                                True, f"torch {value_t:.6g}, port {value_f:.6g}; torch's own "
                                      f"float32 gap {noise:.2g}"))
    finally:
        torch_module.load_state_dict(saved)
    checks = [dataclasses.replace(c, ok=c.ok and (c.value <= c.tol if c.part != "init"
                                                  else c.value >= c.tol)) for c in checks]
    return ParityReport(dtype, checks, curves, metrics)


def _first(out):
    """A module's output, or the first of the tuple it returns (an LSTM's (y, state))."""
    return out[0] if isinstance(out, tuple) else out


class _Data:
    """Turns ``inputs`` / a batch / eval data (an array, or an (inputs, targets) pair) into
    (torch inputs, Flax inputs, torch targets, Flax targets), checked against the first."""

    def __init__(self, tdtype, flax_inputs):
        self.tdtype, self.flax_inputs = tdtype, flax_inputs

    def __call__(self, item, what, like=None):
        import torch

        x, c = item if isinstance(item, tuple) else (item, None)
        x_t = x if isinstance(x, torch.Tensor) else torch.as_tensor(np.asarray(x))
        if x_t.is_floating_point():  # token ids stay integers
            x_t = x_t.to(self.tdtype)
        if like is not None and tuple(x_t.shape[1:]) != tuple(like.shape[1:]):
            raise ParityError(f"{what}: shape {tuple(x_t.shape)} where inputs have "
                              f"{tuple(like.shape)} (only the batch size may differ)")
        c_t = None
        if c is not None:
            c_t = c if isinstance(c, torch.Tensor) else torch.as_tensor(np.asarray(c))
            if c_t.is_floating_point():
                c_t = c_t.to(self.tdtype)
            if c_t.shape[:1] != x_t.shape[:1]:
                raise ParityError(f"{what}: {c_t.shape[0] if c_t.ndim else 0} targets for "
                                  f"{x_t.shape[0]} inputs")
        x_np = x_t.numpy()
        x_f = jnp.asarray(self.flax_inputs(x_np) if self.flax_inputs else x_np)
        return x_t, x_f, c_t, None if c_t is None else jnp.asarray(c_t.numpy())


def _first_line(e: Exception) -> str:
    return str(e).splitlines()[0] if str(e) else type(e).__name__


def _probe(torch_module, model, x_t, x_f, out_f):
    """Runs both models once on the inputs' shapes (torch in eval mode without gradients,
    the port abstractly) so that inputs that do not fit fail here, before anything changes."""
    import torch

    was = torch_module.training
    try:
        torch_module.eval()
        with torch.no_grad():
            y_t = _first(torch_module(x_t))
    except Exception as e:  # torch's own message, one line, after ours
        raise ParityError(f"inputs: shape {tuple(x_t.shape)} does not fit the torch module: "
                          f"{_first_line(e)}") from None
    finally:
        torch_module.train(was)
    try:
        y_f = nnx.eval_shape(lambda m, x: out_f(m(x)), _eval_copy(model), x_f)
    except Exception as e:
        raise ParityError(f"inputs: shape {tuple(x_f.shape)} (after flax_inputs) does not fit "
                          f"the nnx model: "
                          f"{_first_line(e)}") from None
    if tuple(y_f.shape) != tuple(y_t.shape):
        raise ParityError(f"outputs: torch {tuple(y_t.shape)} vs nnx {tuple(y_f.shape)}; pass "
                          "flax_outputs to map the port's output to torch's layout")


def _eval_copy(model):
    """An eval-mode view of ``model`` that shares no mutable state with it."""
    graph, state = nnx.split(model)
    copy = nnx.merge(graph, state)
    copy.eval()
    return copy


def _step_checks(torch_module, model, ref, paired, schedule, call, out_f, modes, train,
                 learning_rate, momentum, tol, curves, optax):
    import torch

    modes(train)
    if ref is not None:
        ref.train(train)
    runs = [(torch_module, False)] + ([(ref, True)] if ref is not None else [])
    opts = [torch.optim.SGD(m.parameters(), lr=learning_rate, momentum=momentum)
            for m, _ in runs]
    opt_f = nnx.Optimizer(model, optax.sgd(learning_rate, momentum=momentum or None),
                          wrt=nnx.Param)

    @nnx.jit
    def step(model, opt, x, c):
        val, g = nnx.value_and_grad(lambda m: call(out_f(m(x)), c))(model)
        opt.update(model, g)
        return val

    checks = []
    names = ["torch", "torch_float64"][:len(runs)]
    curves.update({n: [] for n in ["torch", "flax", *names[1:]]})
    for s, (x_t, x_f, c_t, c_f) in enumerate(schedule):
        lt = []
        for (m, wide), opt in zip(runs, opts):
            opt.zero_grad()
            value = call(_first(m(_wide(x_t) if wide else x_t)), _wide(c_t) if wide else c_t)
            value.backward()
            opt.step()
            lt.append(value.item())
        lf = float(step(model, opt_f, x_f, c_f))
        for n, v in zip(names, lt):
            curves[n].append(v)
        curves["flax"].append(lf)
        noise = _rel_gap(lt[0], lt[1]) if ref is not None else 0.0
        checks.append(Check("step", f"loss {s}", _rel_gap(lf, lt[0]),
                            max(tol["step"], NOISE_FACTOR * noise), True,
                            f"|diff| / |torch loss|; torch's own float32 gap {noise:.2g}"))
    ours = _torch_tensors(paired, "flax")
    theirs = _torch_tensors(paired, "torch")
    wide = _torch_tensors(paired, "torch", dict(torch_layers(ref))) if ref is not None else theirs
    n_per_channel = _values_per_channel(torch_module, schedule[-1][0])
    for k, t in theirs.items():
        noise = _rel_gap(t, wide[k]) if ref is not None else 0.0
        tol_k = max(tol["step"], NOISE_FACTOR * noise)
        how = f"after {len(schedule)} steps; torch's own float32 gap {noise:.2g}"
        if k.endswith("running_var"):
            bessel = 1.0 / max(1, n_per_channel(k) - 1)
            checks.append(Check("batch_stats", k, _rel_gap(ours[k], t), tol_k + bessel,
                                True, f"{how}; + 1/(n-1) = {bessel:.2g}: Flax uses the "
                                      "biased batch variance, torch the unbiased"))
        elif k.endswith("running_mean"):
            checks.append(Check("batch_stats", k, _rel_gap(ours[k], t), tol_k, True, how))
        else:
            checks.append(Check("step", k, _rel_gap(ours[k], t), tol_k, True, how))
    return checks


EVAL_CHUNK = 1000  # examples per forward pass when evaluating a metric (bounds memory)


def _metric_values(torch_module, ref, model, held_out, metric, out_f):
    """``metric`` of torch, its float64 twin (or None) and the port on the held-out data."""
    import torch

    x_t, x_f, c_t, c_f = held_out
    chunks = range(0, x_t.shape[0], EVAL_CHUNK)
    with torch.no_grad():
        y_t = torch.cat([_first(torch_module(x_t[i:i + EVAL_CHUNK])) for i in chunks])
        y_r = (torch.cat([_first(ref.eval()(_wide(x_t[i:i + EVAL_CHUNK]))) for i in chunks])
               if ref is not None else None)
    forward = nnx.jit(lambda m, x: out_f(m(x)))
    y_f = jnp.concatenate([forward(model, x_f[i:i + EVAL_CHUNK]) for i in chunks])
    return (float(metric(y_t, c_t)), None if y_r is None else float(metric(y_r, c_t)),
            float(metric(y_f, c_f)))


def cross_entropy(logits, labels):
    """Mean softmax cross-entropy of integer ``labels``, in whichever framework ``logits``
    come from (torch.nn.functional.cross_entropy or optax's), so one loss serves both."""
    import torch
    if isinstance(logits, torch.Tensor):
        return torch.nn.functional.cross_entropy(logits, labels)
    import optax
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()


def accuracy(logits, labels) -> float:
    """The fraction of ``labels`` that ``argmax(logits)`` gets right, in either framework."""
    def as_np(a):
        return _np(a) if hasattr(a, "detach") else np.asarray(a)
    return float(np.mean(np.argmax(as_np(logits), -1) == as_np(labels)))


def _wide(t):
    """A torch tensor in float64 when it is floating (token ids and labels stay integers)."""
    return t.double() if t is not None and t.is_floating_point() else t


def _target_loss(c_t):
    """The default loss with targets: cross-entropy for integer targets, else mean((y-c)^2)."""
    if c_t.is_floating_point():
        return lambda y, c: ((y - c) ** 2).mean()
    return cross_entropy


def _default_loss(x_t, torch_module):
    """mean((y - c)^2) against a fixed N(0, 1) target c of the output's shape (seed 0).

    Not the sum of squares of the output: after a final LayerNorm (a post-norm Transformer)
    sum(y^2) is nearly constant, its gradient is a cancellation of O(1) terms down to ~1e-5,
    and float32 rounding then differs by percents between the frameworks (measured: 2 %).
    A regression to a random target has no such degeneracy; the mean keeps SGD steps stable.
    """
    import torch

    with torch.no_grad():
        was = torch_module.training
        torch_module.eval()
        y = torch_module(x_t)
        torch_module.train(was)
    y = _first(y)
    target = np.random.default_rng(0).standard_normal(tuple(y.shape)).astype(
        str(y.dtype).removeprefix("torch."))

    def loss(y):
        c = torch.from_numpy(target) if isinstance(y, torch.Tensor) else jnp.asarray(target)
        return ((y - c) ** 2).mean()
    return loss


def _values_per_channel(torch_module, x_t):
    """name of a BatchNorm's running_var -> n, the values per channel of that layer's input
    (every axis but the channel's), read with forward hooks on one eval-mode pass."""
    import torch

    sizes, handles = {}, []
    for name, m in torch_module.named_modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            prefix = f"{name}." if name else ""

            def hook(mod, inp, key=prefix + "running_var"):  # returns None: input unchanged
                sizes.setdefault(key, inp[0].numel() // inp[0].shape[1])
            handles.append(m.register_forward_pre_hook(hook))
    was = torch_module.training
    try:
        torch_module.eval()
        with torch.no_grad():
            torch_module(x_t)
    finally:
        torch_module.train(was)
        for h in handles:
            h.remove()
    return lambda key: sizes.get(key, 2)
