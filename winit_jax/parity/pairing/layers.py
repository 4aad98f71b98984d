"""What each side's layers are (the units pairing works on: every layer some kind matches,
and each module's own bare parameters as one), and whether a torch layer and an nnx layer
fit each other under a kind."""

from __future__ import annotations

import re

from flax import nnx

from winit_jax.kinds import (
    Kind,
    ParityError,
    flax_variables,
    is_flax_layer,
    kind_for,
    torch_kinds,
)
from winit_jax.kinds.parameters import FlaxParameters, TorchParameters

_NUMBERED = re.compile(r"^(.*?)(\d+)$")


def tensor_prefix(pair) -> str:
    """The prefix of a ``Pair``'s tensor names in torch's ``state_dict`` ("" at the root)."""
    name = pair.torch_name if pair.torch_owner is None else pair.torch_owner
    return f"{name}." if name else ""


def natural(path: str, sep: str):
    """A sort key: list indices and trailing numbers (``encoder_layer_10``) as numbers."""
    key = []
    for p in path.split(sep):
        m = _NUMBERED.match(p)
        key.append((m.group(1), int(m.group(2))) if m else (p, -1))
    return tuple(key)


def torch_layers(module) -> list[tuple[str, object]]:
    """``(name, layer)`` of every torch layer some kind matches, in definition order (a
    matched layer's submodules belong to it), and, for every other module with parameters
    of its own, a ``TorchParameters`` view of them under the module's name."""
    return [(name, layer) for name, layer, _ in torch_layers_with_owners(module)]


def torch_layers_with_owners(module) -> list[tuple[str, object, str | None]]:
    """``torch_layers`` with, for each view of a split module, the module's name (its
    tensors keep torch's names: ``rnn.weight_ih_l1``), else None."""
    out, inside = [], []
    for name, m in module.named_modules():
        if any(p == "" or name.startswith(p + ".") for p in inside):
            continue
        kinds_ = torch_kinds(m)
        if kinds_:
            split = kinds_[0].torch_split(m) if kinds_[0].torch_split else None
            for suffix, view in split or [("", m)]:
                out.append((".".join(x for x in (name, suffix) if x), view,
                            name if split else None))
            inside.append(name)
        elif any(True for _ in m.named_parameters(recurse=False)):
            out.append((name, TorchParameters(m), None))
    return out


def flax_layers(model) -> list[tuple[str, nnx.Module]]:
    """``(path, layer)`` of every nnx layer some kind matches, sorted by path (list indices
    as numbers; a matched layer's submodules belong to it, a shared layer counts once), and,
    for every other module with ``nnx.Param``s of its own, a ``FlaxParameters`` view.

    Raises:
      ParityError: a module with batch statistics of its own that no kind matches.
    """
    found, seen = [], set()
    modules = sorted(((("/".join(map(str, p))), m) for p, m in nnx.iter_modules(model)),
                     key=lambda pm: natural(pm[0], "/"))
    for path, m in modules:
        if id(m) in seen or any(p == "" or path.startswith(p + "/") for p, layer in found
                                if not isinstance(layer, FlaxParameters)):
            continue
        seen.add(id(m))
        if is_flax_layer(m):
            found.append((path, m))
            continue
        own = {k: v for k, v in vars(m).items() if isinstance(v, nnx.Variable)
               and isinstance(v, (nnx.Param, nnx.BatchStat))}
        if any(isinstance(v, nnx.BatchStat) for v in own.values()):
            raise ParityError(
                f"nnx layer {path or '<root>'} ({type(m).__name__}) has batch statistics "
                f"{sorted(own)} of a kind winit_jax.parity does not know; build the pair "
                "with winit_jax.parity.layer_kind (kinds=[...])")
        if own:
            found.append((path, FlaxParameters(m)))
    return found


def misfit(kind: Kind, t, f) -> str | None:
    """Why torch layer ``t`` cannot hold ``f``'s tensors under ``kind`` (None if it can):
    a converter's refusal, a tensor one side has and the other lacks, or a shape. The
    conversion is traced, not computed (``lazy.Traced``): no tensor is copied, and a torch
    module on the meta device pairs too."""
    from winit_jax.parity.lazy import Traced, Untraceable

    try:
        try:
            values = kind.to_flax(Traced(t, None), f)
        except Untraceable:
            values = kind.to_flax(t, f)
    except ParityError as e:
        return str(e)
    have = flax_variables(f)
    extra = sorted(set(values) - set(have))
    if extra:
        return f"torch gives {', '.join(extra)}, which the nnx layer does not have"
    missing = sorted(set(have) - set(values))
    if missing:
        return f"the nnx layer has {', '.join(missing)}, which torch does not give"
    for k, v in values.items():
        want = tuple(have[k].get_value().shape)
        if tuple(v.shape) != want:
            return f"{k}: shape {tuple(v.shape)} (from torch) vs {want}"
    return None


def fits(t, f) -> tuple[Kind | None, str | None]:
    kind = kind_for(t, f)
    if kind is None:
        return None, ("no layer kind pairs these two (winit_jax.parity.layer_kind builds one: "
                      "kinds=[...])")
    return kind, misfit(kind, t, f)


def label(name: str, module) -> str:
    if isinstance(module, TorchParameters):
        what = (f"{type(module.owner).__name__}'s own parameters "
                f"{', '.join(n for n, _ in module.named_parameters())}")
    elif isinstance(module, FlaxParameters):
        what = f"{module.owner_type}'s own parameters {', '.join(flax_variables(module))}"
    else:
        what = type(module).__name__
    return f"{name or '<root>'} ({what})"


def template(name: str, sep: str) -> tuple:
    """The name with list indices and trailing numbers as ``#``: layers that share a
    template differ only by their position in a list."""
    return tuple(_NUMBERED.sub(lambda m: m.group(1) + "#", p) for p in name.split(sep))


__all__ = ["fits", "flax_layers", "label", "misfit", "natural", "template", "tensor_prefix", "torch_layers", "torch_layers_with_owners"]
