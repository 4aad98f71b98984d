"""The layers that draw random numbers in train mode, by class, in both frameworks: the one
table ``check`` reads before it trains (two frameworks never draw the same masks)."""

from __future__ import annotations

from flax import nnx

from winit_jax.kinds._base import _resolve

# (torch class or its dotted path, what its rate is); subclasses match
TORCH_STOCHASTIC = (
    ("torch.nn.modules.dropout._DropoutNd", lambda m: m.p),  # Dropout, Dropout1d/2d/3d, Alpha...
    ("torch.nn.MultiheadAttention", lambda m: m.dropout),
)
FLAX_STOCHASTIC = (
    (nnx.Dropout, lambda m: m.rate),
    (nnx.MultiHeadAttention, lambda m: getattr(m, "dropout_rate", 0.0)),
)


def active_dropout(torch_module, model) -> list[str]:
    """Every layer, on either side, that train mode makes draw random numbers, with its rate
    (``"torch encoder.dropout (Dropout p=0.1)"``); empty when none does."""
    found = []
    for name, m in torch_module.named_modules():
        rate = next((rate(m) for cls, rate in TORCH_STOCHASTIC
                     if isinstance(m, _resolve((cls,)))), 0.0)
        if rate:
            found.append(f"torch {name or '<root>'} ({type(m).__name__} p={rate:g})")
    for path, m in nnx.iter_modules(model):
        rate = next((rate(m) for cls, rate in FLAX_STOCHASTIC if isinstance(m, cls)), 0.0)
        if rate:
            found.append(f"nnx {'/'.join(map(str, path)) or '<root>'} "
                         f"({type(m).__name__} rate={rate:g})")
    return found
