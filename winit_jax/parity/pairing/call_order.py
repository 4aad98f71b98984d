"""Pairing by what runs: the order in which each side first calls its layers on given
inputs, for what names and shapes leave unpaired, and the check that ``mapping`` entries
agree with it."""

from __future__ import annotations

from flax import nnx

from winit_jax.kinds import ParityError, at_path
from winit_jax.kinds.attention import projection_role
from winit_jax.kinds.parameters import FlaxParameters
from winit_jax.parity.io import first_line, inputs_text
from winit_jax.parity.pairing.layers import fits, flax_layers, label, torch_layers


def call_orders(torch_module, model, batch) -> tuple[list[str], list[str], dict, dict]:
    """(torch layer names, nnx layer paths), each in the order of its first call on
    ``batch``, and for each side ``{layer: the input of its first call}`` (layers
    with the same input are parallel branches, whose call order proves nothing): torch in
    eval mode without gradients (forward pre-hooks), the port run abstractly
    (``jax.eval_shape``: a port built as shapes works, nothing is computed)."""
    named = dict(torch_module.named_modules())
    layers = {name for name, _ in torch_layers(torch_module)}
    t_order, t_input = [], {}
    running: list[tuple[str, object]] = []  # the modules whose forward runs, outermost first

    def enter(mod, inp, name):
        running.append((name, mod))
        if name in layers:
            t_order.append(name)
            t_input.setdefault(name, inp[0] if inp else None)  # kept: ids of freed ones recur

    def leave(mod, inp, out, name):
        if running and running[-1][0] == name:
            running.pop()
    try:
        batch.torch_eval(
            torch_module,
            [(m, lambda mod, inp, name=name: enter(mod, inp, name)) for name, m in named.items()],
            [(m, lambda mod, inp, out, name=name: leave(mod, inp, out, name))
             for name, m in named.items()])
    except Exception as e:
        raise torch_error(e, batch, torch_module, running) from None
    f_order, f_input = port_calls(model, batch)
    return list(dict.fromkeys(t_order)), list(dict.fromkeys(f_order)), t_input, f_input


def torch_error(e: Exception, batch, torch_module, running: list) -> ParityError:
    """The error of torch's forward pass on the inputs, named by the innermost module that
    was running (``running``: ``(name, module)``, outermost first); on the meta device (a
    skeleton), one that needs values (``.item()``, data-dependent control flow) says so and
    what to do instead."""
    where = ""
    if running:
        name, module = running[-1]
        where = f" (inside torch {name or '<root>'} ({type(module).__name__}))"
    on_meta = any(p.is_meta for p in torch_module.parameters())
    if on_meta:
        return ParityError(
            f"torch_module is on the meta device (a skeleton) and its forward needs values"
            f"{where}: {first_line(e)}; pairing by call order runs torch's forward: build the "
            "skeleton on the CPU (no weights are read from it), or pair once where it can "
            "run and save the plan (parity.make_plan(...).save; Plan.load), or pass mapping=")
    return ParityError(f"inputs: {inputs_text(batch, 'torch')} does not fit the torch module"
                       f"{where}: {first_line(e)}")


def port_calls(model, batch) -> tuple[list[str], dict]:
    """The port's layer paths in the order their calls start on ``batch`` (as torch's
    pre-hooks fire; a module's own parameters are "called" when the module is), and ``{path:
    the input of its first call}``: the port run abstractly in eval mode (``jax.eval_shape``).

    Raises:
      ParityError: the port fails on the inputs (``port_error``: the inputs, or the port's
        layer where its own code failed).
    """
    import jax

    from winit_jax.forward import layer_io

    types = tuple({type(at_path(model, path) if path else model)
                   if isinstance(layer, FlaxParameters)
                   else type(layer) for path, layer in flax_layers(model)})
    graph, state = nnx.split(model)
    f_order, f_input, open_calls, done = [], {}, [], []
    args, arrays = batch.flax_arrays()
    static = batch.flax_static()

    def entered(path, layer, x):
        path = "/".join(map(str, path))
        f_order.append(path)
        f_input.setdefault(path, x)
        open_calls.append((path, layer, x))

    def left(k, y):
        done.append(open_calls.pop()[0])
        return y

    def run(state, args, arrays):
        merged = nnx.merge(graph, state)
        merged.eval()
        layer_io(merged, *args, types=types, on_call=entered, on_output=left, **arrays,
                 **static)
        return 0
    try:
        jax.eval_shape(run, state, args, arrays)
    except Exception as e:
        raise port_error(e, batch, open_calls, done) from None
    return f_order, f_input


def port_error(e: Exception, batch, open_calls: list, done: list) -> ParityError:
    """The error of a port's forward pass on the check's inputs: the inputs are blamed only
    where the port rejects them before any of its layers has run; an error that rises
    later is the port's own code, named by the innermost layer that was running (or the
    last one that had run) with the shapes it had."""
    if not done and not open_calls:
        return ParityError(f"inputs: {inputs_text(batch, 'flax')} (after flax_inputs) does not "
                           f"fit the nnx model: {first_line(e)}")
    if open_calls:
        path, layer, x = open_calls[-1]
        shape = getattr(x, "shape", None)
        where = (f"inside nnx layer {path or '<root>'} ({type(layer).__name__}, input shape "
                 f"{tuple(shape) if shape is not None else type(x).__name__})")
        if not done:
            return ParityError(f"inputs: {inputs_text(batch, 'flax')} (after flax_inputs) does "
                               f"not fit the nnx model: {first_line(e)} ({where}, its first "
                               "layer)")
    else:
        where = f"in the port's code after nnx layer {done[-1] or '<root>'}"
    return ParityError(f"the port's forward pass failed {where}: {first_line(e)} ({len(done)} "
                       "layer calls had run; the inputs fit: the error is the port's)")


def by_call_order(t_left: dict, f_left: dict, orders) -> list[tuple[str, str]]:
    """The layers left, paired by the order of their first calls: the two sequences must
    have as many layers, each place of the same kind and shapes; else one error naming the
    first place they part. Parallel branches (layers that take the same input, neither
    holding the other) are paired only where both sides name their roles alike
    (``PROJECTION_ROLES``: ``to_q`` with ``query``), or by the one branch whose shapes fit
    (``_align_parallel``); else refused, naming both."""
    t_order, f_order, t_input, f_input = orders
    t_seq = [n for n in t_order if n in t_left]
    f_seq = [p for p in f_order if p in f_left]
    _align_parallel(t_seq, f_seq, t_left, f_left, t_input, f_input)
    for seq, left, inputs, other_seq, other_left, side in (
            (t_seq, t_left, t_input, f_seq, f_left, "torch"),
            (f_seq, f_left, f_input, t_seq, t_left, "nnx")):
        sep = "." if side == "torch" else "/"
        for i, a in enumerate(seq[:len(other_seq)]):
            twins = _branches(seq[:len(other_seq)], inputs, a, sep)
            partner = other_seq[i]
            role = projection_role(partner)
            if role is not None and projection_role(a) == role and all(
                    projection_role(b) != role for b in twins):
                continue  # q, k and v named by role on both sides (diffusers' to_q: query)
            for b in twins:
                pair_b = (left[b], other_left[partner]) if side == "torch" else \
                    (other_left[partner], left[b])
                if fits(*pair_b)[1] is None:
                    raise ParityError(
                        f"call order: {side} {a or '<root>'!r} and {b or '<root>'!r} take "
                        f"the same input (parallel branches) and both fit "
                        f"{'nnx' if side == 'torch' else 'torch'} {partner or '<root>'!r}; "
                        "the order they run in cannot tell which is which: "
                        f"pass mapping= (torch name: nnx path) or name them alike")
    for i, (tn, fp) in enumerate(zip(t_seq, f_seq)):
        _, why = fits(t_left[tn], f_left[fp])
        if why is not None:
            raise ParityError(f"call order: the two sides part at call {i + 1} of the "
                              f"layers left unpaired: torch {label(tn, t_left[tn])} vs nnx "
                              f"{label(fp, f_left[fp])}: {why}")
    if len(t_seq) != len(f_seq) or len(t_seq) < len(t_left) or len(f_seq) < len(f_left):
        extra_t = [n for n in t_left if n not in t_seq[:len(f_seq)]]
        extra_f = [p for p in f_left if p not in f_seq[:len(t_seq)]]
        side, name, layer = (("torch", extra_t[0], t_left[extra_t[0]]) if extra_t
                             else ("nnx", extra_f[0], f_left[extra_f[0]]))
        raise ParityError(f"call order: {side} {label(name, layer)} has no partner in the "
                          f"other side's calls ({len(t_seq)} torch and {len(f_seq)} nnx layers "
                          "left unpaired are called)")
    return list(zip(t_seq, f_seq))


def _nested(a: str, b: str, sep: str) -> bool:
    """Whether one layer holds the other (a module and its own first child take the same
    input: that is nesting, not two branches)."""
    return a == "" or b == "" or b.startswith(a + sep) or a.startswith(b + sep)


def _branches(seq: list, inputs: dict, a: str, sep: str) -> list:
    """The layers of ``seq`` that are parallel branches of ``a``: they take the same input
    (the same object) and neither holds the other."""
    x = inputs.get(a)
    return [b for b in seq if b != a and x is not None and inputs.get(b) is x
            and not _nested(a, b, sep)]


def _align_parallel(t_seq: list, f_seq: list, t_left: dict, f_left: dict, t_input: dict,
                    f_input: dict) -> None:
    """Reorders ``f_seq`` in place where the port runs parallel branches (layers that take
    the same input) in another order than torch: a torch layer faces the port's branch of
    its role where both sides name roles (a gated MLP's ``gate_proj``/``up_proj`` and a
    port's ``w1``/``w3``), else the one branch whose shapes fit it. What stays ambiguous is
    refused by ``by_call_order``."""
    for i, a in enumerate(t_seq[:len(f_seq)]):
        here = f_seq[i]
        later = set(_branches(f_seq[i + 1:], f_input, here, "/"))
        branches = [j for j in range(i + 1, len(f_seq)) if f_seq[j] in later]
        if not branches:
            continue
        role = projection_role(a)
        if role is not None and projection_role(here) != role:
            twins_t = _branches(t_seq, t_input, a, ".")
            named = [j for j in branches if projection_role(f_seq[j]) == role]
            if len(named) == 1 and any(projection_role(b) == projection_role(here)
                                       for b in twins_t):
                f_seq[i], f_seq[named[0]] = f_seq[named[0]], f_seq[i]
                continue
        if fits(t_left[a], f_left[here])[1] is not None:
            fitting = [j for j in branches if fits(t_left[a], f_left[f_seq[j]])[1] is None]
            if len(fitting) == 1:
                f_seq[i], f_seq[fitting[0]] = f_seq[fitting[0]], f_seq[i]


def confirm_mapping(found: dict, orders) -> None:
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


__all__ = ["by_call_order", "call_orders", "confirm_mapping", "port_calls",
           "port_error", "torch_error"]
