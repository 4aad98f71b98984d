"""Measures what Flax's own default initialisation draws against torch's, layer by layer:
the variance ratio Var[Flax default] / Var[torch default] per parameter (docs/guides/porting.md's
"Porting a PyTorch model" table). Prints a Markdown table.

    python bench/flax_vs_torch_defaults.py
"""

from __future__ import annotations

import jax
import numpy as np
import torch
from flax import nnx

import winit_jax.torch_like as tl

nn = torch.nn
SEEDS = 32


def _var(arrays):
    v = np.concatenate([np.asarray(a, np.float64).ravel() for a in arrays])
    return float(np.mean(v ** 2))  # second moment: the means are 0 in theory


def flax_default(build, get):
    return {k: _var([get(build(nnx.Rngs(s)))[k] for s in range(SEEDS)]) for k in get(
        build(nnx.Rngs(0)))}


def flax_torch_like(build, get):
    out = {}
    for s in range(SEEDS):
        for k, a in get(tl.init(build(nnx.Rngs(0)), jax.random.key(s))).items():
            out.setdefault(k, []).append(a)
    return {k: _var(v) for k, v in out.items()}


def torch_default(build, get):
    out = {}
    for s in range(SEEDS):
        torch.manual_seed(s)
        with torch.no_grad():
            for k, a in get(build()).items():
                out.setdefault(k, []).append(a.numpy())
    return {k: _var(v) for k, v in out.items()}


def v(x):
    return np.asarray(x[...])


CASES = [
    ("Linear(512, 256)", lambda r: nnx.Linear(512, 256, rngs=r),
     lambda m: {"weight": v(m.kernel), "bias": v(m.bias)}, lambda: nn.Linear(512, 256),
     lambda m: {"weight": m.weight, "bias": m.bias}),
    ("Conv2d(64, 128, 3)", lambda r: nnx.Conv(64, 128, (3, 3), rngs=r),
     lambda m: {"weight": v(m.kernel), "bias": v(m.bias)}, lambda: nn.Conv2d(64, 128, 3),
     lambda m: {"weight": m.weight, "bias": m.bias}),
    ("Conv2d(64, 128, 3, groups=4)", lambda r: nnx.Conv(64, 128, (3, 3), feature_group_count=4,
                                                        rngs=r),
     lambda m: {"weight": v(m.kernel), "bias": v(m.bias)},
     lambda: nn.Conv2d(64, 128, 3, groups=4), lambda m: {"weight": m.weight, "bias": m.bias}),
    ("ConvTranspose2d(128, 64, 4)", lambda r: nnx.ConvTranspose(128, 64, (4, 4), rngs=r),
     lambda m: {"weight": v(m.kernel), "bias": v(m.bias)},
     lambda: nn.ConvTranspose2d(128, 64, 4), lambda m: {"weight": m.weight, "bias": m.bias}),
    ("Embedding(1000, 64)", lambda r: nnx.Embed(1000, 64, rngs=r),
     lambda m: {"weight": v(m.embedding)}, lambda: nn.Embedding(1000, 64),
     lambda m: {"weight": m.weight}),
    ("MultiheadAttention(64, 4)", lambda r: nnx.MultiHeadAttention(4, 64, decode=False, rngs=r),
     lambda m: {"in_proj_weight": np.concatenate([v(getattr(m, n).kernel).ravel()
                                                  for n in ("query", "key", "value")]),
                "out_proj.weight": v(m.out.kernel)},
     lambda: nn.MultiheadAttention(64, 4, batch_first=True),
     lambda m: {"in_proj_weight": m.in_proj_weight, "out_proj.weight": m.out_proj.weight}),
    ("LSTM(32, 64)", lambda r: nnx.OptimizedLSTMCell(32, 64, rngs=r),
     lambda m: {"weight_ih": v(m.dense_i.kernel), "weight_hh": v(m.dense_h.kernel),
                "bias_ih + bias_hh": v(m.dense_h.bias)}, lambda: nn.LSTM(32, 64),
     lambda m: {"weight_ih": m.weight_ih_l0, "weight_hh": m.weight_hh_l0,
                "bias_ih + bias_hh": m.bias_ih_l0 + m.bias_hh_l0}),
    ("GRU(32, 64)", lambda r: nnx.GRUCell(32, 64, rngs=r),
     lambda m: {"weight_ih": v(m.dense_i.kernel), "weight_hh": v(m.dense_h.kernel)},
     lambda: nn.GRU(32, 64), lambda m: {"weight_ih": m.weight_ih_l0, "weight_hh": m.weight_hh_l0}),
]


def main():
    print(f"{SEEDS} seeds each; E[w^2] of Flax's default and of torch_like.init, over torch's.\n")
    print("| torch layer | parameter | Flax default / torch | torch_like / torch |")
    print("| --- | --- | ---: | ---: |")
    for name, fb, fg, tb, tg in CASES:
        f, o, t = flax_default(fb, fg), flax_torch_like(fb, fg), torch_default(tb, tg)
        for k in t:
            ratio = f[k] / t[k]
            print(f"| {name} | {k} | {ratio:.3g} | {o[k] / t[k]:.3f} |"
                  if t[k] > 0 else f"| {name} | {k} | (torch: 0) | |")


if __name__ == "__main__":
    main()
