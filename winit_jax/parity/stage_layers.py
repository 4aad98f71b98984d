"""The layer part of ``check``: every paired layer's input, output and output gradient, per
call, in torch's call order and layout (torch forward hooks; the recording forward on the
nnx side)."""

from __future__ import annotations

import copy
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from winit_jax.kinds import np_copy
from winit_jax.parity.io import Batch
from winit_jax.parity.pairing.transfer import set_from
from winit_jax.parity.report import (
    LayerRow,
    Outcome,
)
from winit_jax.parity.run import Findings, Run, as_float64
from winit_jax.parity.stats import rel_gap
from winit_jax.parity.tolerance import compared, demoted, measured

# The smallest per-layer tolerance in float32: 16 float32 ulps (relative to the layer's
# scale), where torch's own float32-vs-float64 gap is smaller than rounding can explain.
LAYER_FLOOR = {"float32": 16 * float(np.finfo(np.float32).eps), "float64": 1e-10}


def _torch_calls(run: Run, module, names, batch: Batch, *, float64: bool = False
                 ) -> list[list]:
    """``[layer name, input, output, gradient of the loss at that output]`` of every call of
    the named torch layers, in call order, from one forward and one backward pass (eval
    mode; the gradient None where the output is not a tensor)."""
    import torch

    events, handles = [], []
    named = dict(module.named_modules())
    for name in names:
        def hook(mod, inp, out, name=name):
            first = out[0] if isinstance(out, tuple) else out
            events.append([name, as_float64(inp), as_float64(out), None])
            if not (isinstance(first, torch.Tensor) and first.requires_grad):
                return None
            index = len(events) - 1
            # a fresh tensor goes on, so that an in-place op after the layer (ReLU(inplace))
            # cannot change the one whose gradient is read
            fresh = first.clone()
            first.register_hook(lambda g: events[index].__setitem__(3, np_copy(g)))
            return (fresh, *out[1:]) if isinstance(out, tuple) else fresh
        handles.append(named[name].register_forward_hook(hook))
    try:
        module.zero_grad()
        y = run.torch_out(batch.torch_call(module, float64=float64))
        run.call(y, batch.torch_targets(float64=float64)).backward()
    finally:
        for h in handles:
            h.remove()
        module.zero_grad()
    return events


def _moves(ndim: int) -> dict[tuple[int, ...], set[int]]:
    """The axis orders that move at most one axis (channels-last <-> channels-first, heads
    before or after the sequence), each with the axes whose move it can be (none for the
    identity): the layout changes between the frameworks."""
    orders: dict[tuple[int, ...], set[int]] = {tuple(range(ndim)): set()}
    for a in range(ndim):
        rest = [i for i in range(ndim) if i != a]
        for at in range(ndim):
            p = tuple(rest[:at] + [a] + rest[at:])
            if p != tuple(range(ndim)):
                orders.setdefault(p, set()).add(a)
    return orders


def _groups(fine: tuple, coarse: tuple) -> list[list[int]] | None:
    """For each axis of ``coarse`` the axes of ``fine`` merged into it (size-1 axes aside),
    or None where ``coarse`` is not ``fine`` with runs of adjacent axes merged: (B, C, H, W)
    -> (B, C, H*W); (B, T, heads, d) -> (B, T, heads*d)."""
    axes = [i for i, d in enumerate(fine) if d != 1]
    out, i = [], 0
    for d in (d for d in coarse if d != 1):
        group, size = [], 1
        while i < len(axes) and size < d:
            size *= fine[axes[i]]
            group.append(axes[i])
            i += 1
        if size != d:
            return None
        out.append(group)
    return out if i == len(axes) else None


def _fits(shape: tuple, target: tuple, p: tuple, moved: set) -> bool:
    """Whether axis order ``p`` of the port's ``shape``, then merging or splitting adjacent
    axes, gives torch's ``target``, the moved axis (if any) staying an axis of its own."""
    order = tuple(shape[i] for i in p)
    if order == target:
        return True
    groups = _groups(order, target) or _groups(target, order)
    if groups is None:
        return False
    if not moved:
        return True
    merged = _groups(order, target) is not None
    position = {axis: k for k, axis in enumerate(p)}
    alone = (lambda k: [k] in groups) if merged else (
        lambda k: any(g == [k] for g in groups) or all(len(g) == 1 for g in groups))
    return any(alone(position[a]) for a in moved)


def _aligned(mine, theirs):
    """The port's activation in torch's layout where exactly one layout change maps it there:
    at most one axis moved as a whole (a channels-first norm such as torchvision's
    LayerNorm2d against an NHWC port), then runs of adjacent axes merged or split
    (diffusers' attention GroupNorm on (B, C, H*W) against NHWC; fused heads against split
    ones; positions (T,) against (1, T)). Returns (array, "") or (None, why it is not
    compared): none fits, or several do (equal sizes that shapes cannot tell apart)."""
    if mine is None or theirs is None or np.shape(mine) == np.shape(theirs):
        return mine, ""
    shape, target = tuple(np.shape(mine)), tuple(np.shape(theirs))
    why = f"torch {target} vs port {shape}"
    if np.size(mine) != int(np.prod(target)):
        return None, why
    fits = [p for p, moved in _moves(len(shape)).items() if _fits(shape, target, p, moved)]
    if len(fits) == 1:
        return np.reshape(np.transpose(mine, fits[0]), target), ""
    return None, why + (f" ({len(fits)} layouts fit)" if fits else "")


def _in_torch_layout(paired: dict, items) -> dict[str, list]:
    """torch name -> per call, the nnx values of ``items`` (``(layer, [(value, which)])``,
    in call order) in torch's layout through each pair's kind; calls of unpaired layers
    are dropped."""
    by_id = {id(p.flax_layer): p for p in paired.values()}
    out: dict[str, list] = {}
    for layer, values in items:
        p = by_id.get(id(layer))
        if p is not None:
            convert = p.kind.activation_to_torch or (lambda x, layer, which: x)
            out.setdefault(p.torch_name, []).append(tuple(
                None if v is None else convert(as_float64(v), p.flax_layer, which)
                for v, which in values))
    return out


def _nth(calls: dict, name: str, k: int, width: int) -> tuple:
    """Call ``k`` of ``name`` (Nones where the port called it fewer times)."""
    return (calls.get(name, []) + [(None,) * width] * (k + 1))[k]


TRAIN_PART = "layer (train mode)"


def layer_stage(run: Run, ref, kink: bool) -> Findings:
    """Every paired layer's input and output, per call, in torch's call order, in torch's
    layout (through the kind), in eval mode; each output's gap is a check ("layer"):
    tolerance 10x torch's own float32-vs-float64 gap at that layer, floored at
    ``LAYER_FLOOR``. Pairs that are not one called module on each side (bare parameters, a
    stacked RNN's layers, scanned blocks) are not recorded. ``kink``: the forward/gradient
    part found a kink flip at these inputs, so a failing layer check is inconclusive (the
    same flip moves the layers after it)."""
    run.modes(False)
    return _layer_stage(run, run.torch_module, ref.eval() if ref is not None else None,
                        kink, "layer")


def train_mode_layers(run: Run, float32: bool, state: dict) -> Findings:
    """The layer rows and checks (part ``TRAIN_PART``) in train mode from torch's
    ``state`` (a ``state_dict``, e.g. the training's start), where batch statistics act:
    a slip only they show (Flax's one-pass variance) is localised to its layer. Runs on
    copies of the torch module in that state (``float32``: and its float64 copy, the
    tolerances' yardstick); the port's variables are put back after."""
    module = copy.deepcopy(run.torch_module)
    module.load_state_dict(state)
    module.train()
    ref = copy.deepcopy(module).double() if float32 else None
    saved = [(v, v.get_value()) for _, v in nnx.iter_graph(run.model)
             if isinstance(v, nnx.Variable)]
    try:
        set_from(run.paired, module)
        run.model.train()
        return _layer_stage(run, module, ref, False, TRAIN_PART)
    finally:
        for var, value in saved:
            var.set_value(value)


def _layer_stage(run: Run, module, ref, kink: bool, part: str) -> Findings:
    import torch

    from winit_jax.forward import layer_io
    from winit_jax.kinds.parameters import FlaxParameters
    from winit_jax.kinds.stack import is_slice

    found = Findings()
    batch = run.inputs
    paired = {p.torch_name: p for p in run.paired
              if isinstance(p.torch_module, torch.nn.Module) and not is_slice(p.flax_layer)
              and not isinstance(p.flax_layer, FlaxParameters)}
    if not paired:
        return found
    ours = _torch_calls(run, module, paired, batch)
    float64 = (_torch_calls(run, ref, paired, batch, float64=True)
               if ref is not None else ours)
    types = tuple({type(p.flax_layer) for p in paired.values()})
    _, calls = layer_io(run.model, *batch.args_flax, types=types, **batch.kwargs_flax)
    flax_calls = _in_torch_layout(paired, [(c.layer, [(c.input, "input"), (c.output, "output")])
                                           for c in calls])
    seen = {}
    for (name, t_in, t_out, _), (_, w_in, w_out, _) in zip(ours, float64):
        # from a part torch runs in float32 in its float64 model on, float32's floor
        floor = LAYER_FLOOR["float32" if name in run.float32_from else run.dtype]
        k = seen[name] = seen.get(name, -1) + 1
        p = paired[name]
        f_in, f_out = _nth(flax_calls, name, k, 2)
        gaps, tols, skipped = [], [], []
        for which, mine, theirs, exact in (("input", f_in, t_in, w_in),
                                           ("output", f_out, t_out, w_out)):
            mine, why = _aligned(mine, theirs)
            if why:
                skipped.append(f"{which} not compared: {why}")
                gaps.append(float("nan"))
            else:
                gaps.append(float("inf") if mine is None or theirs is None
                            else rel_gap(mine, theirs))
            noise = 0.0 if theirs is None or exact is None else rel_gap(theirs, exact)
            tols.append(measured(noise, floor))
        row = LayerRow(name, p.flax_path, p.kind.name, k, gaps[0], gaps[1], tols[0], tols[1],
                       uncalled=f_in is None and f_out is None,
                       not_compared="; ".join(skipped))
        found.layers.append(row)
        check = compared(part, f"{name or '<root>'} output" + (
                             f" (call {k + 1})" if k else ""),
                         row.output_gap, row.output_tol,
                         f"{name or '<root>'}: the port never calls it" if row.uncalled
                         else "max |diff| / max |torch layer output|; tolerance 10x "
                         f"torch's own float32 gap at this layer, floor {floor:.2g}")
        if np.isnan(row.output_gap):
            check = demoted(check, Outcome.NOT_TESTED, f"not tested: {row.not_compared}")
        found.checks.append(check)
    _backward_layers(run, found, paired, ours, float64, types, calls, part)
    if kink:  # the same flip moves the layers' outputs and gradients after it
        found.checks = [demoted(c, Outcome.INCONCLUSIVE, "inconclusive: a kink flip was found "
                              "at these inputs (see the forward/gradient checks)")
                      if c.part == part and c.outcome is Outcome.FAILED else c
                      for c in found.checks]
    uncalled = list(dict.fromkeys(r.torch_name for r in found.layers if r.uncalled))
    if uncalled:
        found.notes.append(f"layers torch calls and the port never does: "
                           f"{', '.join(n or '<root>' for n in uncalled[:5])}")
    missing = [n for n in paired if n not in seen]
    if missing:
        found.notes.append(f"layers never called by torch's forward pass, not compared: "
                         f"{', '.join(missing[:5])}")
    last = ours[-1] if ours else None
    if last is not None and last[2] is not None and not np.any(last[2]):
        found.notes.append(f"torch's last layer ({last[0] or '<root>'}) outputs only zeros (a "
                         "zero-initialised head?): the output comparison tests nothing there; "
                         "the layer rows before it do")
    return found


def _flax_output_grads(run: Run, types, calls) -> list:
    """The gradient of the port's loss with respect to each watched layer call's output
    (``calls``: the recorded forward's), in call order: a zero added to each output
    (``layer_io``'s ``on_output``), differentiated."""
    from winit_jax.forward import layer_io

    batch = run.inputs
    zeros = [jnp.zeros_like(c.output) if isinstance(c.output, jax.Array) else None
             for c in calls]

    def loss(model, eps):
        def add(k, y):
            return y + eps[k] if eps[k] is not None else y
        y, _ = layer_io(model, *batch.args_flax, types=types, on_output=add,
                        **batch.kwargs_flax)
        return run.call(run.out_f(y), batch.targets_flax)

    # nnx.grad, not jax.grad: a model that runs nnx transforms inside (nnx.RNN's scan) must
    # be handed through, not closed over; the calls come in the same order
    grads = nnx.grad(loss, argnums=1)(run.model, zeros)
    return [(c.layer, [(g, "output")]) for c, g in zip(calls, grads)]


def _backward_layers(run: Run, found: Findings, paired: dict, ours, float64, types,
                     calls, part: str) -> None:
    """Adds to ``found`` each layer row's output-gradient gap (and a "layer" check): torch's
    gradient at that call's output (``ours``, ``float64``: ``_torch_calls``') against the
    port's, in torch's layout, the tolerance 10x torch's own float32 gap there (floor
    ``LAYER_FLOOR``)."""
    flax = _in_torch_layout(paired, _flax_output_grads(run, types, calls))
    # a part torch runs in float32 reaches every gradient (they flow back from the loss)
    floor, seen = LAYER_FLOOR["float32" if run.float32_from else run.dtype], {}
    rows = {(r.torch_name, r.call): i for i, r in enumerate(found.layers)}
    for (name, _, _, g_t), (_, _, _, g_w) in zip(ours, float64):
        k = seen[name] = seen.get(name, -1) + 1
        (g_f,) = _nth(flax, name, k, 1)
        i = rows.get((name, k))
        if i is None or g_t is None or g_f is None or np.shape(g_f) != np.shape(g_t):
            continue
        noise = rel_gap(g_t, g_w) if g_w is not None else 0.0
        row = dataclasses.replace(found.layers[i], grad_gap=rel_gap(g_f, g_t),
                                  grad_tol=measured(noise, floor))
        found.layers[i] = row
        found.checks.append(compared(part, f"{name or '<root>'} output gradient" + (
            f" (call {k + 1})" if k else ""), row.grad_gap, row.grad_tol,
            "max |diff| / max |torch's gradient at this output|; tolerance 10x torch's own "
            f"float32 gap there, floor {floor:.2g}"))
