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
from winit_jax.parity.losses import regression_loss, target_loss
from winit_jax.parity.pairing import Pair, resolve, tensor_prefix
from winit_jax.parity.report import (
    TOLERANCES,
)


@dataclasses.dataclass
class Run:
    """What the stages of one ``check`` share."""

    torch_module: object
    model: nnx.Module
    paired: list[Pair]
    dtype: str
    tol: dict
    inputs: tuple                  # (x_t, x_f, c_t, c_f)
    schedule: list                 # one (x_t, x_f, c_t, c_f) per training step
    held_out: tuple | None
    call: Callable                 # loss(output, target)
    out_f: Callable                # the port's output -> torch's layout
    flax_inputs: Callable | None   # torch's inputs -> the port's layout
    checks: list = dataclasses.field(default_factory=list)
    notes: list = dataclasses.field(default_factory=list)
    layers: list = dataclasses.field(default_factory=list)
    curves: dict = dataclasses.field(default_factory=dict)
    metrics: dict = dataclasses.field(default_factory=dict)
    kink: bool = False             # float32 forward/gradient checks inconclusive: a kink flip

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
    x_t, _, c_t, _ = first
    if batches is not None and steps:
        raise ParityError(f"steps: {steps} steps with batches; the batches set the steps (one each)")
    schedule = ([data(b, f"batches[{i}]", like=x_t) for i, b in enumerate(batches)]
                if batches is not None else [first] * steps)
    if (metric is None) != (eval_data is None):
        raise ParityError("metric: metric and eval_data go together")
    held_out = data(eval_data, "eval_data", like=x_t) if eval_data is not None else None
    out_f = flax_outputs or (lambda y: y)
    paired = resolve(torch_module, model, mapping, pairing, "pairing")
    y_t, y_f = _probe(torch_module, model, first, out_f)
    if any((b[2] is None) != (c_t is None) for b in schedule):
        raise ParityError("batches: give targets with every batch or with none (as inputs)")
    loss = loss or (regression_loss(y_t) if c_t is None else target_loss(c_t))
    call = (lambda y, c: loss(y)) if c_t is None else loss
    _probe_loss(call, y_t, y_f, first)
    return Run(torch_module, model, paired, dtype, TOLERANCES[dtype], first, schedule,
                held_out, call, out_f, flax_inputs)


class _Data:
    """Turns ``inputs`` / a batch / eval data (an array, or an (inputs, targets) pair) into
    (torch inputs, Flax inputs, torch targets, Flax targets), checked against the first."""

    def __init__(self, tdtype, flax_inputs):
        self.tdtype, self.flax_inputs = tdtype, flax_inputs

    def __call__(self, item, what, like=None):
        import torch

        x, c = item if isinstance(item, tuple) else (item, None)
        x_t = x if isinstance(x, torch.Tensor) else torch.as_tensor(np.asarray(x))
        if x_t.is_floating_point():  # token ids stay integers
            x_t = x_t.to(self.tdtype)
        if like is not None and tuple(x_t.shape[1:]) != tuple(like.shape[1:]):
            raise ParityError(f"{what}: shape {tuple(x_t.shape)} where inputs have "
                              f"{tuple(like.shape)} (only the batch size may differ)")
        c_t = None
        if c is not None:
            c_t = c if isinstance(c, torch.Tensor) else torch.as_tensor(np.asarray(c))
            if c_t.is_floating_point():
                c_t = c_t.to(self.tdtype)
            if c_t.shape[:1] != x_t.shape[:1]:
                raise ParityError(f"{what}: {c_t.shape[0] if c_t.ndim else 0} targets for "
                                  f"{x_t.shape[0]} inputs")
        x_np = x_t.numpy()
        x_f = jnp.asarray(self.flax_inputs(x_np) if self.flax_inputs else x_np)
        return x_t, x_f, c_t, None if c_t is None else jnp.asarray(c_t.numpy())


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

    x_t, x_f = first[0], first[1]
    was = torch_module.training
    try:
        torch_module.eval()
        with torch.no_grad():
            y_t = first_output(torch_module(x_t))
    except Exception as e:  # torch's own message, one line, after ours
        raise ParityError(f"inputs: shape {tuple(x_t.shape)} does not fit the torch module: "
                          f"{first_line(e)}") from None
    finally:
        torch_module.train(was)
    try:
        y_f = nnx.eval_shape(lambda m, x: out_f(m(x)), _eval_copy(model), x_f)
    except Exception as e:
        raise ParityError(f"inputs: shape {tuple(x_f.shape)} (after flax_inputs) does not fit "
                          f"the nnx model: {first_line(e)}") from None
    if tuple(y_f.shape) != tuple(y_t.shape):
        raise ParityError(f"outputs: torch {tuple(y_t.shape)} vs nnx {tuple(y_f.shape)}; pass "
                          "flax_outputs to map the port's output to torch's layout")
    return y_t, y_f


def _probe_loss(call, y_t, y_f, first):
    """The loss must give a scalar in both frameworks (checked on the probe's outputs)."""
    try:
        value_t = call(y_t, first[2])
        value_f = jax.eval_shape(lambda y, c: call(y, c), y_f, first[3])
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


def torch_outputs_and_grads(run: Run, module, x_t, c_t, layers=None) -> tuple[np.ndarray, dict]:
    """A torch module's output and its loss's gradient per paired tensor (eval mode);
    ``layers`` maps the pairs' torch names to ``module``'s layers when it is not the paired
    module itself (torch's float64 copy); the tensors each kind compares
    (``Kind.compares_gradient``)."""
    module.zero_grad()
    y = first_output(module(x_t))
    run.call(y, c_t).backward()
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
