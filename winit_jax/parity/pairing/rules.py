"""Which torch layer is which nnx layer: rules that never read attribute order.

``nnx.jit``, ``nnx.update``, an optimiser step and ``nnx.split``/``merge`` hand a model back
with its attributes sorted by name, so the order in which a port's attributes were set is
not a fact one can rely on. Pairs are found by these rules, in this order; each pairs only
what it proves:

1. ``mapping``: the porter's ``{torch name: nnx path}``.
2. Names: torch's ``a.b.0.c`` is nnx's ``a/b/0/c``.
3. Forced: a layer that fits exactly one layer of the other side (same kind, every tensor
   of the same shape, the same tensors present) pairs with it; repeated until nothing
   changes.
4. List order: layers left that differ only by list indices or trailing numbers on each
   side (torch ``net.0, net.2, net.4`` or ``layers.encoder_layer_0 ...``, nnx ``layers/0,
   layers/1, layers/2``), one such group on each side with as many layers, pair in
   numeric order.
5. Call order, where inputs are given (``call_order.py``): what is left pairs by the order
   in which each side first calls its layers.

Tied torch layers need no partner (``ties.py``); what each side's layers are, and whether
two fit, is ``layers.py``. Whatever is left is an error: with two candidates, one error names both (pass ``mapping``
or name the layers alike); with none, one error says why the nearest one does not fit.
Pairs come back in torch's definition order (``named_modules``), which torch keeps.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

from flax import nnx

from winit_jax.kinds import (
    Kind,
    ParityError,
    at_path,
    flax_variables,
    registered,
)
from winit_jax.kinds.stack import stack_slice
from winit_jax.parity.pairing.call_order import by_call_order, call_orders, confirm_mapping
from winit_jax.parity.pairing.layers import (
    fits,
    flax_layers,
    label,
    natural,
    template,
    torch_layers_with_owners,
)
from winit_jax.parity.pairing.ties import refuse_untied, refuse_untied_left, tied_layers, torch_ties


@dataclasses.dataclass(frozen=True)
class Pair:
    """One torch layer and its nnx twin.

    Attributes:
      torch_name: the layer's name in ``torch_module.named_modules()`` ("" for the root).
      torch_module: the torch layer.
      flax_path: its nnx path, "/"-joined ("" for the root).
      flax_layer: the nnx layer.
      kind: the registry's ``Kind`` of the pair.
      rule: which rule paired them: "mapping", "name", "forced" or "list order".
      torch_owner: the module whose ``state_dict`` names the tensors ("rnn" for layer 1 of
        a stacked ``rnn``, whose tensors are ``rnn.weight_ih_l1``); the torch name
        otherwise.
      stack: ``(nnx path, blocks)`` of the scanned stack the nnx layer is a block of, or None.
    """

    torch_name: str
    torch_module: object
    flax_path: str
    flax_layer: nnx.Module
    kind: Kind
    rule: str
    torch_owner: str | None = None
    stack: tuple[str, int] | None = None

    def describe(self) -> str:
        return (f"torch {label(self.torch_name, self.torch_module)} <-> "
                f"nnx {label(self.flax_path, self.flax_layer)}")


def _unstacked(f_all: dict, t_all: dict, model) -> tuple[dict, dict, list[str]]:
    """Layers of a scanned stack as one view per block: where torch numbers the blocks of a
    container (``blocks.0.linear1`` ... ``blocks.3.linear1``) and the nnx model holds one
    module at that path (``blocks``, built with ``nnx.vmap``), each nnx layer under it
    becomes ``blocks/0/linear1`` ... ``blocks/3/linear1``, views of its index k. Only a
    real stack counts: every variable of every layer under the container with a leading axis
    of the block count; anything else (a ``ConvBNAct`` module where torch numbers a
    ``Sequential``'s ``0, 1, 2``) is an ordinary layer, left to the other rules. Also returns,
    for a container whose variables all share a leading axis of another length, the message
    that names it, raised only if pairing then leaves layers unpaired.
    """
    containers: dict[str, int] = {}
    for name in t_all:
        parts = name.split(".")
        for i, part in enumerate(parts[1:], 1):
            if part.isdigit():
                c = "/".join(parts[:i])
                containers[c] = max(containers.get(c, 0), int(part) + 1)
    out, stack_of = {}, {}
    under: dict[str, list[str]] = {}
    container_of: dict[str, str] = {}
    for path in f_all:
        stacks = [c for c in containers if path.startswith(c + "/")
                  and not path[len(c) + 1:].split("/")[0].isdigit()
                  and not isinstance(at_path(model, c), (nnx.List, list, tuple))]
        if stacks:
            container_of[path] = max(stacks, key=len)
            under.setdefault(container_of[path], []).append(path)
    # a stack only where every variable of every layer under the container has the leading
    # axis of the block count; anything else is an ordinary layer, left to the other rules
    real, hints = set(), []
    for c, paths in under.items():
        shapes = [(f"{p}/{n}", var.get_value().shape) for p in paths
                  for n, var in flax_variables(f_all[p]).items()]
        leads = {shape[:1] for _, shape in shapes}
        if leads == {(containers[c],)}:
            real.add(c)
        elif len(leads) == 1 and all(len(shape) >= 2 for _, shape in shapes):
            # every variable stacked along one leading axis, of another length: said only if
            # the layers are then left unpaired (an ordinary module may look like this)
            name, shape = shapes[0]
            hints.append(f"nnx {name}: torch numbers {containers[c]} blocks in {c} and the "
                         f"nnx model holds one module there (a scanned stack), but this "
                         f"variable's shape is {shape}, without a leading axis of "
                         f"{containers[c]}")
    for path, layer in f_all.items():
        c = container_of.get(path)
        if c not in real:
            out[path] = layer
            continue
        depth = containers[c]
        for k in range(depth):
            out[f"{c}/{k}/{path[len(c) + 1:]}"] = stack_slice(layer, k)
            stack_of[f"{c}/{k}/{path[len(c) + 1:]}"] = (c, depth)
    return out, stack_of, hints


def stacks(paired) -> dict[str, int]:
    """``{nnx path: blocks}`` of the scanned stacks among ``paired`` (for torch_like.init)."""
    return dict(p.stack for p in paired if p.stack is not None)


class Pairing(tuple):
    """The pairs of one torch module and one nnx model, computed once by :func:`pair` and
    passed to ``from_torch``, ``to_torch``, ``translate_optimizer`` and ``check``: a tuple
    of :class:`Pair` in torch's definition order, which remembers the two models it pairs.
    """

    torch_module: object
    model: object
    # {torch tensor name: the name it is tied to}: tensors torch holds under several names
    # (GPT-2's lm_head.weight is transformer.wte.weight), held by no pair of their own
    ties: dict

    def __new__(cls, items, torch_module, model, ties=None):
        self = super().__new__(cls, items)
        self.torch_module, self.model, self.ties = torch_module, model, dict(ties or {})
        return self

    def stacks(self) -> dict[str, int]:
        """``{nnx path: blocks}`` of the scanned stacks among the pairs."""
        return stacks(self)


def resolve(torch_module, model, mapping: Mapping[str, str] | None, pairing: Pairing | None,
            where: str, batch=None) -> Pairing:
    """``pairing`` when it was computed for these two models, else ``pair(...)`` with
    ``mapping`` (and the call order on ``batch``, an ``io.Batch``, where names do not
    suffice); one ``ParityError`` naming ``where``'s argument otherwise."""
    if pairing is None:
        return _pair(torch_module, model, mapping,
                     None if batch is None else (lambda: call_orders(torch_module, model,
                                                                     batch)))
    if not isinstance(pairing, Pairing):
        raise ParityError(f"{where}: pairing must come from winit_jax.parity.pair(...), got "
                          f"{type(pairing).__name__}")
    if mapping is not None:
        raise ParityError(f"{where}: pass mapping to parity.pair, or a pairing; not both")
    if pairing.torch_module is not torch_module or pairing.model is not model:
        side = "torch module" if pairing.torch_module is not torch_module else "nnx model"
        raise ParityError(f"{where}: the pairing was computed for another {side}; call "
                          "parity.pair on these two")
    return pairing


def pair(torch_module, model, *, mapping: Mapping[str, str] | None = None,
         kinds: Sequence[Kind] = (), inputs=None, kwargs: Mapping | None = None,
         flax_inputs=None) -> Pairing:
    """The paired layers of ``torch_module`` and ``model``, in torch's definition order:
    compute it once, pass it as ``pairing=`` to ``from_torch``, ``to_torch``, ``check`` and
    to ``translate_optimizer``.

    The same pairs before and after ``nnx.jit``, ``nnx.update``, an optimiser step,
    ``nnx.split``/``merge`` or ``copy.deepcopy`` of the model (no rule reads attribute
    order; see the module's docstring for the rules).

    Args:
      torch_module: the torch original.
      model: the nnx port.
      mapping: ``{torch name: nnx path}`` for layers the other rules cannot pair.
      kinds: layer kinds for this pairing only, ahead of the registered ones (e.g. a
        ``Kind`` for HF's ``Conv1D``); the pairs keep them, so ``from_torch``, ``to_torch``,
        ``check`` and ``torch_like.init(..., pairing=)`` use them too.
      inputs: as ``check``'s: with them, what names and shapes leave
        unpaired is paired by the order in which each side calls its layers on them (torch
        forward hooks; the port's recording forward, run abstractly), kind and every shape
        agreeing at each place; where the two call sequences part, one error names both
        layers there. ``mapping`` entries are confirmed by that order too.
      kwargs: as ``inputs`` (above).
      flax_inputs: as ``inputs`` (above).

    Returns:
      A ``Pairing``: a tuple of ``Pair``.

    Raises:
      ParityError: a mapping entry that names no layer; a pair that does not fit (naming
        both layers and why); two candidates for one layer (naming both); a layer left
        without a partner (naming it).
    """
    with registered(*kinds):
        order = None
        if inputs is not None:
            import torch

            from winit_jax.parity.io import Data

            dtype = next(iter(torch_module.parameters()), torch.zeros(())).dtype
            batch = Data(dtype, flax_inputs)(inputs, kwargs, None, "inputs")

            def order():
                return call_orders(torch_module, model, batch)
        return _pair(torch_module, model, mapping, order)


def _pair(torch_module, model, mapping, order=None) -> Pairing:
    found_t = torch_layers_with_owners(torch_module)
    t_all = {name: layer for name, layer, _ in found_t}
    owners = {name: owner for name, _, owner in found_t}
    f_all, stack_of, stack_hints = _unstacked(dict(flax_layers(model)), t_all, model)
    t_left, f_left = dict(t_all), dict(f_all)
    found: dict[str, tuple[str, Kind, str]] = {}

    def take(tname, fpath, rule):
        t, f = t_left.pop(tname), f_left.pop(fpath)
        kind, why = fits(t, f)
        if why is not None:
            raise ParityError(f"layer pair does not fit ({rule}): torch {label(tname, t)} vs "
                              f"nnx {label(fpath, f)}: {why}")
        found[tname] = (fpath, kind, rule)

    mapping = dict(mapping or {})
    if len(set(mapping.values())) != len(mapping):
        dup = next(p for p in mapping.values() if list(mapping.values()).count(p) > 1)
        raise ParityError(f"mapping: nnx layer {dup!r} is given to two torch layers")
    for tname, fpath in mapping.items():
        if tname not in t_all:
            raise ParityError(f"mapping: torch has no layer {tname!r} (its layers: "
                              f"{', '.join(repr(n) for n in list(t_all)[:8])}...)")
        if fpath not in f_all:
            raise ParityError(f"mapping: the nnx model has no layer {fpath!r} (its layers: "
                              f"{', '.join(repr(p) for p in list(f_all)[:8])}...)")
        take(tname, fpath, "mapping")
    for tname in list(t_left):
        if tname.replace(".", "/") in f_left:
            take(tname, tname.replace(".", "/"), "name")

    changed = True
    while changed and t_left:
        changed = False
        fit = {tn: [fp for fp, f in f_left.items() if fits(t, f)[1] is None]
               for tn, t in t_left.items()}
        back = {fp: [tn for tn, fps in fit.items() if fp in fps] for fp in f_left}
        for tn, fps in fit.items():
            if len(fps) == 1 and tn in t_left and fps[0] in f_left:
                take(tn, fps[0], "forced")
                changed = True
        for fp, tns in back.items():
            if len(tns) == 1 and fp in f_left and tns[0] in t_left:
                take(tns[0], fp, "forced")
                changed = True
        if changed:
            continue
        # list order: one torch template, one nnx template, as many layers, all fitting
        by_t: dict[tuple, list[str]] = {}
        for tn in t_left:
            by_t.setdefault(template(tn, "."), []).append(tn)
        for tns in by_t.values():
            fps = {fp for tn in tns for fp in fit[tn]}
            templates = {template(fp, "/") for fp in fps}
            if len(templates) != 1:
                continue
            group = [fp for fp in f_left if template(fp, "/") in templates]
            if len(group) != len(tns) or any(
                    set(back[fp]) - set(tns) for fp in group):
                continue
            tns = sorted(tns, key=lambda n: natural(n, "."))
            group = sorted(group, key=lambda p: natural(p, "/"))
            for tn, fp in zip(tns, group):
                take(tn, fp, "list order")
            changed = True
            break

    if stack_hints and (t_left or f_left):
        raise ParityError(stack_hints[0])
    ties = torch_ties(torch_module)

    def pairs() -> list[Pair]:
        """What is paired so far, in torch's definition order."""
        return [Pair(tn, t, found[tn][0], f_all[found[tn][0]], found[tn][1], found[tn][2],
                     owners[tn], stack_of.get(found[tn][0]))
                for tn, t in t_all.items() if tn in found]

    def untied():
        """Pairing is failing: a port that unties what torch ties is named first, whatever
        else is ambiguous (two pairs holding one torch tensor, or a tied layer left that an
        nnx layer with tensors of its own fits)."""
        refuse_untied(pairs(), ties)
        refuse_untied_left(t_left, f_left, owners, ties)
    orders = None
    if order is not None and (t_left or f_left or any(r == "mapping"
                                                      for _, _, r in found.values())):
        orders = order()
    held = tied_layers(t_left, t_all, owners, set(found), ties)
    if orders is not None:
        confirm_mapping(found, orders)
        if t_left or f_left:
            try:
                matched = by_call_order(t_left, f_left, orders)
            except ParityError:
                untied()
                raise
            for tn, fp in matched:
                take(tn, fp, "call order")
    if t_left or f_left:
        untied()
        hint = ("; pass the inputs (pair(..., inputs=x), or check's) to pair what is left by "
                "call order" if order is None else "")
        raise ParityError(_unpaired_message(t_left, f_left) + hint)
    out = pairs()
    refuse_untied(out, ties)
    return Pairing(out, torch_module, model, held)


def _unpaired_message(t_left, f_left) -> str:
    """One line: two candidates for a layer, or a layer without a partner and why."""
    for side, left, others in (("torch", t_left, f_left), ("nnx", f_left, t_left)):
        other_side = "nnx" if side == "torch" else "torch"
        for name, layer in left.items():
            cands = [o for o, ol in others.items()
                     if fits(*((layer, ol) if side == "torch" else (ol, layer)))[1] is None]
            if len(cands) >= 2:
                hint = ({name: cands[0]} if side == "torch" else {cands[0]: name})
                return (f"ambiguous: {side} {label(name, layer)} fits {other_side} "
                        f"{label(cands[0], others[cands[0]])} and {other_side} "
                        f"{label(cands[1], others[cands[1]])} alike; pass mapping={hint} (torch "
                        "name: nnx path) or give the layers the same names in both")
    side, (name, layer) = (("torch", next(iter(t_left.items()))) if t_left
                           else ("nnx", next(iter(f_left.items()))))
    others = f_left if side == "torch" else t_left
    why = ""
    for other, o in others.items():
        t, f = (layer, o) if side == "torch" else (o, layer)
        kind, reason = fits(t, f)
        if kind is not None:
            why = f"; nearest: {'nnx' if side == 'torch' else 'torch'} {label(other, o)}: {reason}"
            break
    return (f"{side} layer {label(name, layer)} has no partner ({len(t_left)} torch and "
            f"{len(f_left)} nnx layers left unpaired){why}")


__all__ = ["Pair", "Pairing", "pair", "resolve", "stacks"]
