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

Whatever is left is an error: with two candidates, one error names both (pass ``mapping``
or name the layers alike); with none, one error says why the nearest one does not fit.
Pairs come back in torch's definition order (``named_modules``), which torch keeps.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping, Sequence

from flax import nnx

from winit_jax.kinds import (
    Kind,
    ParityError,
    at_path,
    flax_variables,
    is_flax_layer,
    kind_for,
    registered,
    torch_kinds,
    torch_tensor_names,
)
from winit_jax.kinds.parameters import FlaxParameters, TorchParameters
from winit_jax.kinds.stack import stack_slice


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
        return (f"torch {_label(self.torch_name, self.torch_module)} <-> "
                f"nnx {_label(self.flax_path, self.flax_layer)}")


_NUMBERED = re.compile(r"^(.*?)(\d+)$")


def tensor_prefix(pair: "Pair") -> str:
    """The prefix of the pair's tensor names in torch's ``state_dict`` ("" at the root)."""
    name = pair.torch_name if pair.torch_owner is None else pair.torch_owner
    return f"{name}." if name else ""


def _natural(path: str, sep: str):
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
    return [(name, layer) for name, layer, _ in _torch_layers(module)]


def _torch_layers(module) -> list[tuple[str, object, str | None]]:
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
                     key=lambda pm: _natural(pm[0], "/"))
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
                f"{sorted(own)} of a kind winit_jax.parity does not know; register the pair "
                "with winit_jax.parity.register_layer")
        if own:
            found.append((path, FlaxParameters(m)))
    return found


def _unstacked(f_all: dict, t_all: dict, model) -> tuple[dict, dict]:
    """Layers of a scanned stack as one view per block: where torch numbers the blocks of a
    container (``blocks.0.linear1`` ... ``blocks.3.linear1``) and the nnx model holds one
    module at that path (``blocks``, built with ``nnx.vmap``), each nnx layer under it
    becomes ``blocks/0/linear1`` ... ``blocks/3/linear1``, views of its index k. Only a
    real stack counts: every variable of the layer with a leading axis of the block count;
    anything else (a ``ConvBNAct`` module where torch numbers a ``Sequential``'s ``0, 1, 2``)
    is an ordinary layer, left to the other rules.
    """
    containers: dict[str, int] = {}
    for name in t_all:
        parts = name.split(".")
        for i, part in enumerate(parts[1:], 1):
            if part.isdigit():
                c = "/".join(parts[:i])
                containers[c] = max(containers.get(c, 0), int(part) + 1)
    out, stack_of = {}, {}
    for path, layer in f_all.items():
        stacks = [c for c in containers if path.startswith(c + "/")
                  and not path[len(c) + 1:].split("/")[0].isdigit()
                  and not isinstance(at_path(model, c), (nnx.List, list, tuple))]
        if not stacks:
            out[path] = layer
            continue
        c = max(stacks, key=len)
        depth = containers[c]
        variables = {n: var.get_value().shape for n, var in flax_variables(layer).items()}
        leads = {shape[:1] for shape in variables.values()}
        if leads != {(depth,)}:
            if len(leads) == 1 and all(len(s) >= 2 for s in variables.values()):
                # every variable stacked along one leading axis, of another length
                name, shape = next(iter(variables.items()))
                raise ParityError(f"nnx {path}/{name}: torch numbers {depth} blocks in {c} "
                                  f"and the nnx model holds one module there (a scanned "
                                  f"stack), but this variable's shape is {shape}, without a "
                                  f"leading axis of {depth}")
            out[path] = layer  # not a stack: an ordinary layer, left to the other rules
            continue
        for k in range(depth):
            out[f"{c}/{k}/{path[len(c) + 1:]}"] = stack_slice(layer, k)
            stack_of[f"{c}/{k}/{path[len(c) + 1:]}"] = (c, depth)
    return out, stack_of


def stacks(paired) -> dict[str, int]:
    """``{nnx path: blocks}`` of the scanned stacks among ``paired`` (for torch_like.init)."""
    return dict(p.stack for p in paired if p.stack is not None)


def misfit(kind: Kind, t, f) -> str | None:
    """Why torch layer ``t`` cannot hold ``f``'s tensors under ``kind`` (None if it can):
    a converter's refusal, a tensor one side has and the other lacks, or a shape."""
    try:
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


def _fits(t, f) -> tuple[Kind | None, str | None]:
    kind = kind_for(t, f)
    if kind is None:
        return None, "no layer kind pairs these two (winit_jax.parity.register_layer adds one)"
    return kind, misfit(kind, t, f)


def _template(name: str, sep: str) -> tuple:
    """The name with list indices and trailing numbers as ``#``: layers that share a
    template differ only by their position in a list."""
    return tuple(_NUMBERED.sub(lambda m: m.group(1) + "#", p) for p in name.split(sep))


def _label(name: str, module) -> str:
    if isinstance(module, TorchParameters):
        what = (f"{type(module.owner).__name__}'s own parameters "
                f"{', '.join(n for n, _ in module.named_parameters())}")
    elif isinstance(module, FlaxParameters):
        what = f"{module.owner_type}'s own parameters {', '.join(flax_variables(module))}"
    else:
        what = type(module).__name__
    return f"{name or '<root>'} ({what})"


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
      inputs, kwargs, flax_inputs: as ``check``'s: with them, what names and shapes leave
        unpaired is paired by the order in which each side calls its layers on them (torch
        forward hooks; the port's recording forward, run abstractly), kind and every shape
        agreeing at each place; where the two call sequences part, one error names both
        layers there. ``mapping`` entries are confirmed by that order too.

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


def call_orders(torch_module, model, batch) -> tuple[list[str], list[str], dict, dict]:
    """(torch layer names, nnx layer paths), each in the order of its first call on
    ``batch``, and for each side ``{layer: the input of its first call}`` (layers
    with the same input are parallel branches, whose call order proves nothing): torch in
    eval mode without gradients (forward pre-hooks), the port run abstractly
    (``jax.eval_shape``: a port built as shapes works, nothing is computed)."""
    import jax
    import torch

    from winit_jax.forward import layer_io

    named = dict(torch_module.named_modules())
    t_order, t_input, handles = [], {}, []

    def seen(mod, inp, name):
        t_order.append(name)
        t_input.setdefault(name, inp[0] if inp else None)  # kept: ids of freed ones recur
    for name, _ in torch_layers(torch_module):
        if name in named:
            handles.append(named[name].register_forward_pre_hook(
                lambda mod, inp, name=name: seen(mod, inp, name)))
    was = torch_module.training
    try:
        torch_module.eval()
        with torch.no_grad():
            batch.torch_call(torch_module)
    finally:
        torch_module.train(was)
        for h in handles:
            h.remove()
    types = tuple({type(layer) for _, layer in flax_layers(model)
                   if not isinstance(layer, FlaxParameters)})
    graph, state = nnx.split(model)
    f_order, f_input = [], {}
    args, arrays = batch.flax_arrays()
    static = batch.flax_static()

    def run(state, args, arrays):
        merged = nnx.merge(graph, state)
        merged.eval()
        _, calls = layer_io(merged, *args, types=types, **arrays, **static)
        for c in calls:
            path = "/".join(map(str, c.path))
            f_order.append(path)
            f_input.setdefault(path, c.input)
        return 0
    jax.eval_shape(run, state, args, arrays)
    return list(dict.fromkeys(t_order)), list(dict.fromkeys(f_order)), t_input, f_input


def _pair(torch_module, model, mapping, order=None) -> Pairing:
    found_t = _torch_layers(torch_module)
    t_all = {name: layer for name, layer, _ in found_t}
    owners = {name: owner for name, _, owner in found_t}
    f_all, stack_of = _unstacked(dict(flax_layers(model)), t_all, model)
    t_left, f_left = dict(t_all), dict(f_all)
    found: dict[str, tuple[str, Kind, str]] = {}

    def take(tname, fpath, rule):
        t, f = t_left.pop(tname), f_left.pop(fpath)
        kind, why = _fits(t, f)
        if why is not None:
            raise ParityError(f"layer pair does not fit ({rule}): torch {_label(tname, t)} vs "
                              f"nnx {_label(fpath, f)}: {why}")
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
        fit = {tn: [fp for fp, f in f_left.items() if _fits(t, f)[1] is None]
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
            by_t.setdefault(_template(tn, "."), []).append(tn)
        for tns in by_t.values():
            fps = {fp for tn in tns for fp in fit[tn]}
            templates = {_template(fp, "/") for fp in fps}
            if len(templates) != 1:
                continue
            group = [fp for fp in f_left if _template(fp, "/") in templates]
            if len(group) != len(tns) or any(
                    set(back[fp]) - set(tns) for fp in group):
                continue
            tns = sorted(tns, key=lambda n: _natural(n, "."))
            group = sorted(group, key=lambda p: _natural(p, "/"))
            for tn, fp in zip(tns, group):
                take(tn, fp, "list order")
            changed = True
            break

    ties = torch_ties(torch_module)
    orders = None
    if order is not None and (t_left or f_left or any(r == "mapping"
                                                      for _, _, r in found.values())):
        orders = order()
    held = {}  # tied torch layers left unpaired: their tensors are their owners'
    for tname, t in list(t_left.items()):
        names = [_full(tname, owners[tname], n) for n in torch_tensor_names(t)]
        owner_layers = {_layer_of(ties.get(n), t_all) for n in names}
        if names and all(n in ties for n in names) and owner_layers <= set(found):
            held.update({n: ties[n] for n in names})
            del t_left[tname]
    if orders is not None:
        _confirm_mapping(found, orders)
        if t_left or f_left:
            for tn, fp in _by_call_order(t_left, f_left, orders):
                take(tn, fp, "call order")
    if t_left or f_left:
        hint = ("; pass the inputs (pair(..., inputs=x), or check's) to pair what is left by "
                "call order" if order is None else "")
        raise ParityError(_unpaired_message(t_left, f_left) + hint)
    out = []
    for tn, t in t_all.items():
        if tn not in found:
            continue
        fpath, kind, rule = found[tn]
        out.append(Pair(tn, t, fpath, f_all[fpath], kind, rule, owners[tn],
                        stack_of.get(fpath)))
    _refuse_untied(out, ties)
    return Pairing(out, torch_module, model, held)


def _by_call_order(t_left: dict, f_left: dict, orders) -> list[tuple[str, str]]:
    """The layers left, paired by the order of their first calls: the two sequences must
    have as many layers, each place of the same kind and shapes; else one error naming the
    first place they part."""
    t_order, f_order, t_input, f_input = orders
    t_seq = [n for n in t_order if n in t_left]
    f_seq = [p for p in f_order if p in f_left]
    for seq, left, inputs, other_seq, other_left, side in (
            (t_seq, t_left, t_input, f_seq, f_left, "torch"),
            (f_seq, f_left, f_input, t_seq, t_left, "nnx")):
        for i, a in enumerate(seq[:len(other_seq)]):
            twins = [b for b in seq[:len(other_seq)] if b != a and inputs.get(b) is not None
                     and inputs.get(b) is inputs.get(a)]
            partner = other_seq[i]
            for b in twins:
                pair_b = (left[b], other_left[partner]) if side == "torch" else \
                    (other_left[partner], left[b])
                if _fits(*pair_b)[1] is None:
                    raise ParityError(
                        f"call order: {side} {a!r} and {b!r} take the same input (parallel "
                        f"branches) and both fit {'nnx' if side == 'torch' else 'torch'} "
                        f"{partner!r}; the order they run in cannot tell which is which: "
                        f"pass mapping= (torch name: nnx path) or name them alike")
    for i, (tn, fp) in enumerate(zip(t_seq, f_seq)):
        _, why = _fits(t_left[tn], f_left[fp])
        if why is not None:
            raise ParityError(f"call order: the two sides part at the {_nth(i)} call of the "
                              f"layers left unpaired: torch {_label(tn, t_left[tn])} vs nnx "
                              f"{_label(fp, f_left[fp])}: {why}")
    if len(t_seq) != len(f_seq) or len(t_seq) < len(t_left) or len(f_seq) < len(f_left):
        extra_t = [n for n in t_left if n not in t_seq[:len(f_seq)]]
        extra_f = [p for p in f_left if p not in f_seq[:len(t_seq)]]
        side, name, layer = (("torch", extra_t[0], t_left[extra_t[0]]) if extra_t
                             else ("nnx", extra_f[0], f_left[extra_f[0]]))
        raise ParityError(f"call order: {side} {_label(name, layer)} has no partner in the "
                          f"other side's calls ({len(t_seq)} torch and {len(f_seq)} nnx layers "
                          "left unpaired are called)")
    return list(zip(t_seq, f_seq))


def _nth(i: int) -> str:
    return f"{i + 1}{'th' if 10 <= (i + 1) % 100 <= 20 else {1: 'st', 2: 'nd', 3: 'rd'}.get((i + 1) % 10, 'th')}"


def _confirm_mapping(found: dict, orders) -> None:
    """Mapping entries in the order both sides call them: a swap that shapes cannot tell
    (``to_q`` given the port's ``to_k``) is refused, naming both."""
    t_order, f_order = orders[:2]
    t_index = {n: i for i, n in enumerate(t_order)}
    f_index = {p: i for i, p in enumerate(f_order)}
    mapped = sorted((t_index[tn], f_index[fp], tn, fp) for tn, (fp, _, rule) in found.items()
                    if rule == "mapping" and tn in t_index and fp in f_index)
    for (_, fa, ta, pa), (_, fb, tb, pb) in zip(mapped, mapped[1:]):
        if fb < fa:
            raise ParityError(f"mapping: torch calls {ta} before {tb}, but the port calls "
                              f"{pb} (mapped to {tb}) before {pa} (mapped to {ta}); the two "
                              "entries look swapped")


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


def _refuse_untied(paired: list, ties: dict) -> None:
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


def _unpaired_message(t_left, f_left) -> str:
    """One line: two candidates for a layer, or a layer without a partner and why."""
    for side, left, others in (("torch", t_left, f_left), ("nnx", f_left, t_left)):
        other_side = "nnx" if side == "torch" else "torch"
        for name, layer in left.items():
            cands = [o for o, ol in others.items()
                     if _fits(*((layer, ol) if side == "torch" else (ol, layer)))[1] is None]
            if len(cands) >= 2:
                hint = ({name: cands[0]} if side == "torch" else {cands[0]: name})
                return (f"ambiguous: {side} {_label(name, layer)} fits {other_side} {cands[0]!r} "
                        f"and {other_side} {cands[1]!r} alike; pass mapping={hint} (torch name: "
                        "nnx path) or give the layers the same names in both")
    side, (name, layer) = (("torch", next(iter(t_left.items()))) if t_left
                           else ("nnx", next(iter(f_left.items()))))
    others = f_left if side == "torch" else t_left
    why = ""
    for other, o in others.items():
        t, f = (layer, o) if side == "torch" else (o, layer)
        kind, reason = _fits(t, f)
        if kind is not None:
            why = f"; nearest: {'nnx' if side == 'torch' else 'torch'} {_label(other, o)}: {reason}"
            break
    return (f"{side} layer {_label(name, layer)} has no partner ({len(t_left)} torch and "
            f"{len(f_left)} nnx layers left unpaired){why}")


__all__ = ["Pair", "Pairing", "flax_layers", "misfit", "pair", "resolve", "stacks",
           "tensor_prefix", "torch_layers"]
