"""Tied weights: a torch tensor held under several names (GPT-2's ``lm_head.weight`` is
``transformer.wte.weight``) pairs with the port's one variable; a port that unties it is
refused."""

from __future__ import annotations

from winit_jax.kinds import ParityError, torch_tensor_names
from winit_jax.parity.pairing.layers import fits, label, tensor_prefix


def torch_ties(torch_module) -> dict[str, str]:
    """``{tensor name: the name it is tied to}`` for every parameter torch holds under
    several names (tied embeddings, a shared layer): the first name in definition order
    owns it (the one ``state_dict`` keeps first)."""
    first, ties = {}, {}
    for name, p in torch_module.named_parameters(remove_duplicate=False):
        if id(p) in first:
            ties[name] = first[id(p)]
        else:
            first[id(p)] = name
    return ties


def _full(tname: str, owner: str | None, tensor: str) -> str:
    prefix = tname if owner is None else owner
    return f"{prefix}.{tensor}" if prefix else tensor


def _layer_of(tensor: str | None, t_all: dict) -> str | None:
    """The torch layer (of ``t_all``) that holds the tensor named ``tensor``."""
    if tensor is None:
        return None
    return max((n for n in t_all if n == "" or tensor.startswith(n + ".")), key=len,
               default=None)


def refuse_untied(paired: list, ties: dict) -> None:
    """A torch tensor held by two pairs whose nnx layers differ: the port unties what torch
    ties (two variables where torch has one), so that training and ``to_torch`` would part
    them: one error naming the tie and both nnx layers."""
    by_tensor: dict[int, list] = {}
    for p in paired:
        if not hasattr(p.torch_module, "named_parameters"):
            continue
        for n, t in p.torch_module.named_parameters():
            by_tensor.setdefault(id(t), []).append((p, tensor_prefix(p) + n))
    for holders in by_tensor.values():
        layers = {id(p.flax_layer) for p, _ in holders}
        if len(holders) > 1 and len(layers) > 1:
            (a, name_a), (b, name_b) = holders[:2]
            raise ParityError(f"tied weights: torch ties {name_b} to {name_a} (one tensor) and "
                              f"the port holds nnx {b.flax_path or '<root>'} and "
                              f"{a.flax_path or '<root>'} (two variables); use one variable "
                              "for both (e.g. nnx.Embed.attend for a tied head), or untie "
                              "them in torch")


def refuse_untied_left(t_left: dict, f_left: dict, owners: dict, ties: dict) -> None:
    """Where pairing is failing: a torch layer left whose tensors torch ties to others (BERT's
    decoder: its weight is the word embeddings', its bias the head's ``bias``) that an nnx
    layer left fits, with tensors of its own: the port unties what torch ties. One error
    naming the ties and the nnx layer(s), whatever else is ambiguous; else nothing."""
    for tname, t in t_left.items():
        names = [_full(tname, owners.get(tname), n) for n in torch_tensor_names(t)]
        tied = [n for n in names if n in ties]
        if not tied:
            continue
        holders = [p for p, f in f_left.items() if fits(t, f)[1] is None]
        if holders:
            what = " and ".join(f"{n} to {ties[n]}" for n in tied)
            layers = " or ".join(label(p, f_left[p]) for p in holders)
            raise ParityError(f"tied weights: torch ties {what} (one tensor each), and the port "
                              f"holds tensors of its own for them in nnx {layers}: the port "
                              "unties them; use one variable for both (e.g. nnx.Embed.attend "
                              "for a tied head, plus the head's own bias), or untie them in "
                              "torch")


def tied_layers(t_left: dict, t_all: dict, owners: dict, paired: set, ties: dict) -> dict:
    """Takes out of ``t_left`` the torch layers whose every tensor is tied to a tensor of a
    paired layer (GPT-2's ``lm_head``): they need no partner. Returns ``{tensor name: the
    name it is tied to}`` for their tensors."""
    held = {}
    for tname, t in list(t_left.items()):
        names = [_full(tname, owners[tname], n) for n in torch_tensor_names(t)]
        owner_layers = {_layer_of(ties.get(n), t_all) for n in names}
        if names and all(n in ties for n in names) and owner_layers <= paired:
            held.update({n: ties[n] for n in names})
            del t_left[tname]
    return held


__all__ = ["refuse_untied", "refuse_untied_left", "tied_layers", "torch_ties"]
