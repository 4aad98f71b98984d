"""Attention: torch ``nn.MultiheadAttention`` <-> ``nnx.MultiHeadAttention``.

torch's packed (3E, E) in-projection is split into query, key and value, each
(E, heads, head_dim) in Flax (with ``kdim``/``vdim`` torch keeps three separate weights
(E, kdim), (E, vdim): each goes to its own kernel); out_proj (E, E) -> (heads, head_dim, E).
torch draws ``xavier_uniform_`` of the packed matrix (so Var = 2 / (E + 3E)), or of each
separate weight, biases 0, and out_proj's weight the Linear default.
"""

from __future__ import annotations

import numpy as np
from flax import nnx

from winit_jax.kinds._base import Kind, ParityError, np_copy, register, value
from winit_jax.torch_draws import constant, packed_xavier_uniform, torch_linear_kernel

_QKV = ("query", "key", "value")


def _check(t):
    if getattr(t, "bias_k", None) is not None:
        raise ParityError("MultiheadAttention(add_bias_kv=True) has no nnx.MultiHeadAttention "
                          "twin")


def _to_flax(t, f):
    _check(t)
    e, h = t.embed_dim, t.num_heads
    if t._qkv_same_embed_dim:
        w = np_copy(t.in_proj_weight)
        weights = [w[i * e:(i + 1) * e] for i in range(3)]
    else:
        weights = [np_copy(getattr(t, f"{n}_proj_weight")) for n in "qkv"]
    out = {}
    for i, (name, w) in enumerate(zip(_QKV, weights)):
        out[f"{name}/kernel"] = w.T.reshape(w.shape[1], h, e // h)
        if t.in_proj_bias is not None:
            out[f"{name}/bias"] = np_copy(t.in_proj_bias)[i * e:(i + 1) * e].reshape(h, e // h)
    wo = np_copy(t.out_proj.weight)
    out["out/kernel"] = wo.T.reshape(h, e // h, wo.shape[0])
    if t.out_proj.bias is not None:
        out["out/bias"] = np_copy(t.out_proj.bias)
    return out


def _to_torch(f, t):
    e = t.embed_dim
    ws = [value(getattr(f, n).kernel) for n in _QKV]
    ws = [k.reshape(k.shape[0], -1).T for k in ws]
    out = ({"in_proj_weight": np.concatenate(ws)} if t._qkv_same_embed_dim
           else {f"{n}_proj_weight": w for n, w in zip("qkv", ws)})
    if f.query.bias is not None:
        out["in_proj_bias"] = np.concatenate([value(getattr(f, n).bias).reshape(e) for n in _QKV])
    ko = value(f.out.kernel)
    out["out_proj.weight"] = ko.reshape(-1, ko.shape[-1]).T
    if f.out.bias is not None:
        out["out_proj.bias"] = value(f.out.bias)
    return out


def _init(layer):
    same = all(getattr(layer, n).in_features == layer.query.in_features for n in ("key", "value"))
    # one packed (3E, E) matrix when q, k, v take the same width; else three (E, d) ones
    proj = packed_xavier_uniform(n_packed=3 if same else 1, in_axis=0, out_axis=(1, 2))
    out = {}
    for name in _QKV:
        out[f"{name}/kernel"] = proj
        if getattr(layer, name).bias is not None:
            out[f"{name}/bias"] = constant(0.0)
    # out_proj: the Linear default on (H, D, E_out): fan_in = H D
    out["out/kernel"] = torch_linear_kernel(in_axis=(0, 1), out_axis=2)
    if layer.out.bias is not None:
        out["out/bias"] = constant(0.0)
    return out


MULTIHEAD_ATTENTION = register(Kind(
    "MultiheadAttention", ("torch.nn.MultiheadAttention",), (nnx.MultiHeadAttention,),
    _to_flax, _to_torch, init=_init,
    hint="the head split, the q/k/v order of the packed projection, the mask, the scaling"))


# The names real code gives an attention block's projections, by role: torch's own
# MultiheadAttention and Flax's (query/key/value/out), diffusers (to_q/to_k/to_v/to_out,
# and its old Flax AttentionBlock's proj_attn), Hugging Face (q_proj..o_proj, q/k/v/o in
# T5, q_lin..out_lin in DistilBERT), Meta's LLaMA (wq..wo). They take the same input, so the
# order they run in cannot tell them apart; their names can, where both sides name a role.
PROJECTION_ROLES = {
    "q": ("q", "query", "to_q", "q_proj", "q_lin", "wq"),
    "k": ("k", "key", "to_k", "k_proj", "k_lin", "wk"),
    "v": ("v", "value", "to_v", "v_proj", "v_lin", "wv"),
    "out": ("o", "out", "to_out", "o_proj", "out_proj", "out_lin", "proj_attn", "wo"),
    # a gated MLP's two parallel input projections: HF's, Meta's LLaMA (w1, w3), T5's (wi_0/1)
    "gate": ("gate_proj", "w1", "wi_0", "gate"),
    "up": ("up_proj", "w3", "wi_1", "up"),
}
_ROLE_OF = {name: role for role, names in PROJECTION_ROLES.items() for name in names}


def projection_role(path: str) -> str | None:
    """The role (``"q"``, ``"k"``, ``"v"``, ``"out"``) an attention projection's name gives
    it, or None: the last component of a torch name or nnx path that is not a number
    (``to_out.0`` -> ``"out"``; ``attn/query`` -> ``"q"``)."""
    parts = [p for p in path.replace("/", ".").split(".") if p and not p.isdigit()]
    return _ROLE_OF.get(parts[-1]) if parts else None
