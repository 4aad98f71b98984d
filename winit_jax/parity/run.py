"""The data one ``check`` runs on (``Run``: both models, the pairs, the inputs and batches in
both frameworks, the loss) and what every stage shares: both models restored on an error, the
inputs checked before anything changes, the outputs and gradients of a torch module."""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from winit_jax.kinds import ParityError, np_copy
from winit_jax.parity.io import (
    Batch,
    Data,
    describe,
    first_line,
    inputs_text,
    is_torch,
    leaves,
    matched,
)
from winit_jax.parity.losses import regression_loss, target_loss
from winit_jax.parity.pairing import Pair, resolve
from winit_jax.parity.pairing.call_order import port_calls
from winit_jax.parity.pairing.layers import tensor_prefix
from winit_jax.parity.pairing.transfer import torch_values
from winit_jax.parity.report import (
    TOLERANCES,
)


@dataclasses.dataclass
class Findings:
    """What one stage of ``check`` found: its checks and notes, and, where it has them, the
    per-layer rows, the loss curves per run and the metric per run."""

    checks: list = dataclasses.field(default_factory=list)
    notes: list = dataclasses.field(default_factory=list)
    layers: list = dataclasses.field(default_factory=list)
    curves: dict = dataclasses.field(default_factory=dict)
    metrics: dict = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class Run:
    """What the stages of one ``check`` read: both models, the pairs, the data, the loss.
    The stages change the models (and restore their modes) but never this record."""

    torch_module: object
    model: nnx.Module
    paired: list[Pair]
    dtype: str
    tol: dict
    inputs: Batch                  # the batch the forward, gradient and layer parts run on
    schedule: list[Batch]          # one per training step
    held_out: Batch | None         # the metric's data
    call: Callable                 # loss(compared output, targets) in either framework
    torch_out: Callable            # torch's output -> what is compared (torch_outputs)
    out_f: Callable                # the port's output -> torch's layout (flax_outputs)
    keys: list                     # [(torch leaf key, port leaf key)] compared
    data: Data                     # how inputs become a Batch (the nearby-input probes)
    notes: list                    # what the reader must know from the preparation
    # in a float64 check, the torch modules called from the first one torch runs in float32
    # on (its output is float32 in the float64 model): judged at float32 precision
    float32_from: frozenset = frozenset()

    def modes(self, training: bool) -> None:
        self.torch_module.train(training)
        (self.model.train if training else self.model.eval)()


class restored:
    """Restores torch's state, gradients and mode at the end, and the nnx model's variables
    and mode when an error leaves the block (on success the port keeps what ``check`` did)."""

    def __init__(self, torch_module, model):
        self.torch_module, self.model = torch_module, model

    def __enter__(self):
        t = self.torch_module
        self.state = copy.deepcopy(t.state_dict())
        self.grads = [(p, None if p.grad is None else p.grad.clone()) for p in t.parameters()]
        self.modes = [(m, m.training) for m in t.modules()]
        self.variables = [(v, v.get_value()) for _, v in nnx.iter_graph(self.model)
                          if isinstance(v, nnx.Variable)]
        self.flax_modes = {id(m): dict(vars(m)) for _, m in nnx.iter_modules(self.model)}
        return self

    def __exit__(self, kind, error, tb):
        self.torch_module.load_state_dict(self.state)
        for p, g in self.grads:
            p.grad = g
        for m, training in self.modes:
            m.training = training
        if error is not None:
            for var, value in self.variables:
                var.set_value(value)
            for _, m in nnx.iter_modules(self.model):
                for k, v in self.flax_modes.get(id(m), {}).items():
                    if isinstance(v, (bool, type(None))) and vars(m).get(k) is not v:
                        setattr(m, k, v)
        return False


def prepare(torch_module, model, inputs, *, kwargs, targets, loss, steps, batches,
            flax_inputs, torch_outputs, flax_outputs, metric, eval_data, mapping, pairing,
            dtype) -> Run:
    """Everything checked before either model changes: pairs, data, outputs, the loss."""
    import torch

    data = Data(getattr(torch, dtype), flax_inputs)
    first = data(inputs, kwargs, targets, "inputs")
    if batches is not None and steps:
        raise ParityError(f"steps: {steps} steps with batches; the batches set the steps "
                          "(one each)")
    schedule = ([data.item(b, f"batches[{i}]", like=first) for i, b in enumerate(batches)]
                if batches is not None else [first] * steps)
    if (metric is None) != (eval_data is None):
        raise ParityError("metric: metric and eval_data go together")
    held_out = data.item(eval_data, "eval_data", like=first) if eval_data is not None else None
    torch_out = torch_outputs or (lambda y: y)
    out_f = flax_outputs or (lambda y: y)
    paired = resolve(torch_module, model, mapping, pairing, "pairing", batch=first)
    y_torch, y_flax, keys = _probe(torch_module, model, first, torch_out, out_f,
                                   picked=torch_outputs is not None)
    notes = []
    if loss is None:
        first_torch, first_flax = keys[0]

        def first_compared(y):
            """The first compared output of either side (the port's dict may come back
            with its keys sorted)."""
            found = leaves(y)
            return (found[first_torch] if any(map(is_torch, found.values()))
                    else found[first_flax])
        base = (regression_loss(first_compared(y_torch)) if first.targets_torch is None
                else target_loss(first.targets_torch))

        def loss(y, *target):
            return base(first_compared(y), *target)
        if len(keys) > 1:
            notes.append(f"the default loss is computed on the first compared output "
                         f"({keys[0][0]}); pass loss= for another")
    call = (lambda y, c: loss(y)) if first.targets_torch is None else loss
    _probe_loss(call, y_torch, y_flax, first)
    tol, after = TOLERANCES[dtype], frozenset()
    if dtype == "float64":
        first32, after = float32_parts(torch_module, first)
        if first32 is not None:
            tol = TOLERANCES["float32"]
            notes.append(f"torch runs {first32} in float32 in its float64 model (its output "
                         "is float32): the forward, gradient and step parts, and the layers "
                         "from it on, are judged at float32 precision")
    return Run(torch_module, model, paired, dtype, tol, first, schedule,
               held_out, call, torch_out, out_f, keys, data, notes, after)


def float32_parts(torch_module, batch: Batch, *, float64: bool = False
                  ) -> tuple[str | None, frozenset]:
    """(the first torch module whose output holds a float32 tensor in a float64 model, the
    names of the modules called from it on), or (None, empty): one eval-mode pass with
    forward hooks on every module."""
    import torch

    calls, first = [], []

    def hook(mod, inp, out, name):
        calls.append(name)
        if not first and any(isinstance(t, torch.Tensor) and t.dtype == torch.float32
                             for t in leaves(out).values()):
            first.append((name, len(calls) - 1))
    batch.torch_eval(torch_module, hooks=[
        (m, lambda mod, inp, out, name=name: hook(mod, inp, out, name))
        for name, m in torch_module.named_modules() if name], float64=float64)
    if not first:
        return None, frozenset()
    name, at = first[0]
    # hooks fire when a module returns: a container's comes after what it calls, so what
    # runs inside it before the float32 part is counted as after it (the safe side)
    return name, frozenset(calls[at:])


def _probe(torch_module, model, first: Batch, torch_out, out_f, *, picked: bool):
    """Runs both models once on the inputs (torch in eval mode without gradients, the port
    abstractly) so that inputs or outputs that do not fit fail here, before anything
    changes. Returns torch's compared output, the port's (abstract) one and the matched
    leaves."""
    try:
        raw = first.torch_eval(torch_module)
    except Exception as e:  # torch's own message, one line, after ours
        hint = ("; a tuple is several positional inputs: pass the loss's targets as "
                "targets=" if len(first.args_torch) == 2 and isinstance(e, TypeError) else "")
        raise ParityError(f"inputs: {inputs_text(first, 'torch')} does not fit the torch "
                          f"module: {first_line(e)}{hint}") from None
    try:
        y_torch = torch_out(raw)
    except Exception as e:
        raise ParityError(f"torch_outputs: fails on torch's output {describe(raw)}: "
                          f"{first_line(e)}") from None
    if picked and not leaves(y_torch):
        raise ParityError(f"torch_outputs: gives {type(y_torch).__name__}, which holds no "
                          "tensor; it must return a tensor or a structure of tensors")
    args, arrays = first.flax_arrays()
    static = first.flax_static()
    try:
        y_flax = nnx.eval_shape(lambda m, a, k: out_f(m(*a, **k, **static)), _eval_copy(model),
                                args, arrays)
    except Exception as e:
        port_calls(model, first)  # raises, naming the inputs or the port's failing layer
        raise ParityError(f"flax_outputs: fails on the port's output: {first_line(e)}"
                          ) from None
    keys = matched(y_torch, y_flax)
    theirs, ours = leaves(y_torch), leaves(y_flax)
    for kt, kf in keys:
        if tuple(theirs[kt].shape) != tuple(ours[kf].shape):
            where = f" {kt}" if kt else ""
            raise ParityError(f"outputs{where}: torch {tuple(theirs[kt].shape)} vs nnx "
                              f"{tuple(ours[kf].shape)}; pass flax_outputs to map the port's "
                              "output to torch's layout")
    return y_torch, y_flax, keys


def _probe_loss(call, y_torch, y_flax, first):
    """The loss must give a scalar in both frameworks (checked on the probe's outputs)."""
    try:
        value_t = call(y_torch, first.targets_torch)
        value_f = jax.eval_shape(lambda y, c: call(y, c), y_flax, first.targets_flax)
    except Exception as e:
        raise ParityError(f"loss: fails on the outputs: {first_line(e)}") from None
    for side, v in (("torch", value_t), ("nnx", value_f)):
        if tuple(getattr(v, "shape", ())) != ():
            raise ParityError(f"loss: gives shape {tuple(v.shape)} on the {side} output; it "
                              "must return a scalar (e.g. .mean())")


def _eval_copy(model):
    """An eval-mode view of ``model`` that shares no mutable state with it."""
    graph, state = nnx.split(model)
    clone = nnx.merge(graph, state)
    clone.eval()
    return clone


def fill_abstract(model) -> None:
    """A port built as shapes (``nnx.eval_shape``: no Flax initialiser compiles, seconds
    saved cold) holds torch's values once the pairs are copied; what no pair fills is
    either random-stream state (an ``nnx.Rngs`` its Dropout holds: a fixed key, count 0;
    ``check`` runs dropout at rate 0 or in eval mode only) or an error naming it."""
    for path, var in nnx.iter_graph(model):
        if not isinstance(var, nnx.Variable):
            continue
        value = var.get_value()
        if not isinstance(value, jax.ShapeDtypeStruct):
            continue
        name = "/".join(map(str, path))
        if isinstance(var, nnx.RngKey):
            keys = jax.random.split(jax.random.key(0), max(1, int(np.prod(value.shape))))
            var.set_value(keys[0] if value.shape == () else keys.reshape(value.shape))
        elif isinstance(var, nnx.RngCount):
            var.set_value(jnp.zeros(value.shape, value.dtype))
        else:
            raise ParityError(f"model: {name} ({type(var).__name__}) is abstract (a port built "
                              "with nnx.eval_shape) and no torch tensor pairs with it; build "
                              "that variable concretely or pair it (mapping=)")


def port_value_and_grad(run: Run, static: dict) -> Callable:
    """``f(model, args, kwargs, targets) -> ((loss, output), gradients)`` of the port
    (``nnx``); ``static``: the keyword inputs that are not arrays."""
    def loss(m, args, kwargs, c):
        y = run.out_f(m(*args, **kwargs, **static))
        return run.call(y, c), y
    return nnx.value_and_grad(loss, has_aux=True)


def port_outputs_and_grads(run: Run, model, batch: Batch, value_and_grad=None
                            ) -> tuple[dict, dict]:
    """The port's compared outputs (``{torch leaf key: array}``) and its loss's gradient
    per paired tensor, in torch's layout.

    Eager by default (one call: compiling costs more, a warm ViT check took 0.22 s eager,
    2.1 s jitted); the nearby-input probes pass one jitted ``port_value_and_grad`` for
    their ``PROBES`` calls (a MobileNetV2's eager gradient took 2.3 s a call).
    """
    args, arrays = batch.flax_arrays()
    f = value_and_grad or port_value_and_grad(run, batch.flax_static())
    (_, y_flax), grads = f(model, args, arrays, batch.targets_flax)
    # read the gradients in torch's layout through the pairs: write them into the model's
    # parameters for a moment, convert, and put the parameters back
    params = [v for _, v in nnx.iter_graph(model) if isinstance(v, nnx.Param)]
    originals = [v.get_value() for v in params]
    nnx.update(model, grads)
    try:
        grads_flax = torch_values(run.paired, "flax")
    finally:
        for var, value in zip(params, originals):
            var.set_value(value)
    out = leaves(y_flax)
    return {kt: np.asarray(out[kf]) for kt, kf in run.keys}, grads_flax


def torch_outputs_and_grads(run: Run, module, batch: Batch, *, float64: bool = False,
                            layers=None) -> tuple[dict, dict]:
    """A torch module's compared outputs (``{leaf key: array}``) and its loss's gradient
    per paired tensor (eval mode), floating inputs in float64 with ``float64``; ``layers``
    maps the pairs' torch names to ``module``'s layers when it is not the paired module
    itself (torch's float64 copy); the tensors each kind compares
    (``Kind.compares_gradient``)."""
    module.zero_grad()
    y = run.torch_out(batch.torch_call(module, float64=float64))
    run.call(y, batch.torch_targets(float64=float64)).backward()
    grads = {}
    for p in run.paired:
        tm = p.torch_module if layers is None else layers[p.torch_name]
        for n, t in tm.named_parameters():
            if t.grad is not None and (p.kind.compares_gradient is None
                                       or p.kind.compares_gradient(n)):
                grads[tensor_prefix(p) + n] = np_copy(t.grad)
    out = leaves(y)
    return {kt: out[kt].detach().numpy() for kt, _ in run.keys}, grads


def as_float64(value):
    """The first array of a layer's input or output (a tuple: an LSTM's (y, state), an
    attention's (out, weights)), as float64 NumPy; None if there is none."""
    while isinstance(value, (tuple, list)):
        if not value:
            return None
        value = value[0]
    if value is None:
        return None
    if hasattr(value, "detach"):
        return value.detach().cpu().double().numpy()
    return np.asarray(value, np.float64)
