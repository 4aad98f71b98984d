"""The data one ``check`` runs on (``Run``: both models, the pairs, the inputs and batches in
both frameworks, the loss) and what every stage shares: both models restored on an error, the
inputs checked before anything changes, the outputs and gradients of a torch module."""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from winit_jax.kinds import ParityError, np_copy
from winit_jax.parity.losses import regression_loss, target_loss
from winit_jax.parity.pairing import Pair, resolve, tensor_prefix
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


class Batch(NamedTuple):
    """One batch in both frameworks: torch's inputs and targets, and the port's (its inputs
    through ``flax_inputs``); targets None where the loss takes none."""

    x_torch: object
    x_flax: jax.Array
    targets_torch: object | None
    targets_flax: jax.Array | None


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
    call: Callable                 # loss(output, target)
    out_f: Callable                # the port's output -> torch's layout
    flax_inputs: Callable | None   # torch's inputs -> the port's layout

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


def prepare(torch_module, model, inputs, *, loss, steps, batches, flax_inputs, flax_outputs,
             metric, eval_data, mapping, pairing, dtype) -> Run:
    """Everything checked before either model changes: pairs, data, shapes, the loss."""
    import torch

    data = _Data(getattr(torch, dtype), flax_inputs)
    first = data(inputs, "inputs")
    x_torch, targets_torch = first.x_torch, first.targets_torch
    if batches is not None and steps:
        raise ParityError(f"steps: {steps} steps with batches; the batches set the steps "
                          "(one each)")
    schedule = ([data(b, f"batches[{i}]", like=x_torch) for i, b in enumerate(batches)]
                if batches is not None else [first] * steps)
    if (metric is None) != (eval_data is None):
        raise ParityError("metric: metric and eval_data go together")
    held_out = data(eval_data, "eval_data", like=x_torch) if eval_data is not None else None
    out_f = flax_outputs or (lambda y: y)
    paired = resolve(torch_module, model, mapping, pairing, "pairing")
    y_torch, y_flax = _probe(torch_module, model, first, out_f)
    if any((b.targets_torch is None) != (targets_torch is None) for b in schedule):
        raise ParityError("batches: give targets with every batch or with none (as inputs)")
    loss = loss or (regression_loss(y_torch) if targets_torch is None
                    else target_loss(targets_torch))
    call = (lambda y, c: loss(y)) if targets_torch is None else loss
    _probe_loss(call, y_torch, y_flax, first)
    return Run(torch_module, model, paired, dtype, TOLERANCES[dtype], first, schedule,
                held_out, call, out_f, flax_inputs)


class _Data:
    """Turns ``inputs`` / a batch / eval data (an array, or an (inputs, targets) pair) into
    a ``Batch``, checked against the first."""

    def __init__(self, tdtype, flax_inputs):
        self.tdtype, self.flax_inputs = tdtype, flax_inputs

    def __call__(self, item, what, like=None):
        import torch

        x, c = item if isinstance(item, tuple) else (item, None)
        x_torch = x if isinstance(x, torch.Tensor) else torch.as_tensor(np.asarray(x))
        if x_torch.is_floating_point():  # token ids stay integers
            x_torch = x_torch.to(self.tdtype)
        if like is not None and tuple(x_torch.shape[1:]) != tuple(like.shape[1:]):
            raise ParityError(f"{what}: shape {tuple(x_torch.shape)} where inputs have "
                              f"{tuple(like.shape)} (only the batch size may differ)")
        targets_torch = None
        if c is not None:
            targets_torch = c if isinstance(c, torch.Tensor) else torch.as_tensor(np.asarray(c))
            if targets_torch.is_floating_point():
                targets_torch = targets_torch.to(self.tdtype)
            if targets_torch.shape[:1] != x_torch.shape[:1]:
                count = targets_torch.shape[0] if targets_torch.ndim else 0
                raise ParityError(f"{what}: {count} targets for "
                                  f"{x_torch.shape[0]} inputs")
        x_numpy = x_torch.numpy()
        x_flax = jnp.asarray(self.flax_inputs(x_numpy) if self.flax_inputs else x_numpy)
        return Batch(x_torch, x_flax, targets_torch,
                     None if targets_torch is None else jnp.asarray(targets_torch.numpy()))


def first_output(out):
    """A module's output, or the first of the tuple it returns (an LSTM's (y, state))."""
    return out[0] if isinstance(out, tuple) else out


def first_line(e: Exception) -> str:
    return str(e).splitlines()[0] if str(e) else type(e).__name__


def _probe(torch_module, model, first, out_f):
    """Runs both models once on the inputs' shapes (torch in eval mode without gradients,
    the port abstractly) so that inputs that do not fit fail here, before anything changes.
    Returns torch's output and the port's (abstract) one."""
    import torch

    x_torch, x_flax = first.x_torch, first.x_flax
    was = torch_module.training
    try:
        torch_module.eval()
        with torch.no_grad():
            y_torch = first_output(torch_module(x_torch))
    except Exception as e:  # torch's own message, one line, after ours
        raise ParityError(f"inputs: shape {tuple(x_torch.shape)} does not fit the torch module: "
                          f"{first_line(e)}") from None
    finally:
        torch_module.train(was)
    try:
        y_flax = nnx.eval_shape(lambda m, x: out_f(m(x)), _eval_copy(model), x_flax)
    except Exception as e:
        raise ParityError(f"inputs: shape {tuple(x_flax.shape)} (after flax_inputs) does not fit "
                          f"the nnx model: {first_line(e)}") from None
    if tuple(y_flax.shape) != tuple(y_torch.shape):
        raise ParityError(f"outputs: torch {tuple(y_torch.shape)} vs nnx "
                          f"{tuple(y_flax.shape)}; pass "
                          "flax_outputs to map the port's output to torch's layout")
    return y_torch, y_flax


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


def torch_outputs_and_grads(run: Run, module, x_torch, targets_torch, layers=None
                            ) -> tuple[np.ndarray, dict]:
    """A torch module's output and its loss's gradient per paired tensor (eval mode);
    ``layers`` maps the pairs' torch names to ``module``'s layers when it is not the paired
    module itself (torch's float64 copy); the tensors each kind compares
    (``Kind.compares_gradient``)."""
    module.zero_grad()
    y = first_output(module(x_torch))
    run.call(y, targets_torch).backward()
    grads = {}
    for p in run.paired:
        tm = p.torch_module if layers is None else layers[p.torch_name]
        for n, t in tm.named_parameters():
            if t.grad is not None and (p.kind.compares_gradient is None
                                       or p.kind.compares_gradient(n)):
                grads[tensor_prefix(p) + n] = np_copy(t.grad)
    return y.detach().numpy(), grads


def widened(t):
    """A torch tensor in float64 when it is floating (token ids and labels stay integers)."""
    return t.double() if t is not None and t.is_floating_point() else t


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
