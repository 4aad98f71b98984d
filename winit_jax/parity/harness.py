"""``check``: does an nnx port initialise, compute, differentiate and train like its torch
original? In stages that share one ``_Run``: data, init, forward and gradient, steps,
metric. Every error, in any stage, leaves both models as they were."""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable, Iterable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from winit_jax.kinds import ParityError, np_copy, registered
from winit_jax.kinds.recurrent import flax_cell_bias_note
from winit_jax.parity.losses import regression_loss, target_loss
from winit_jax.parity.optimizer import translate_optimizer
from winit_jax.parity.pairing import Pair, Pairing, resolve, tensor_prefix, torch_layers
from winit_jax.parity.report import (KS_ALPHA, NOISE_FACTOR, TOLERANCES, Check, Divergence,
                                     LayerRow, ParityReport)
from winit_jax.parity.stats import compare_draws, random_tensors, rel_gap
from winit_jax.parity.transfer import check_dtype, flax_updates, torch_values

EVAL_CHUNK = 1000  # examples per forward pass when evaluating a metric (bounds memory)
# A parameter whose float64 gradient is below this times the model's largest is zero in
# exact arithmetic (rounding leaves ~1e-16..1e-14 of the terms summed; real gradients that
# small are not seen in practice): 100x above the noise, far below any signal.
ZERO_GRADIENT = 1e-12
# A step check whose measured tolerance exceeds this fraction of what the steps changed
# could not fail a port whose training is that fraction off (a learning rate or a loss 10 %
# off moves the loss and the tensors by about 10 % of their change over the steps).
CHAOS_FRACTION = 0.1
# nnx's float32 BatchNorm statistics in a float64 model: compared at float32's precision
# (16 ulps of the statistic's scale: a few roundings per update over the steps)
STAT_ULPS = 16


@dataclasses.dataclass
class _Run:
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


def check(torch_module, model, inputs, *, loss: Callable | None = None, steps: int = 0,
          batches: Iterable | None = None, learning_rate: float = 0.01, momentum: float = 0.0,
          init_seeds: int = 4, overrides: Mapping | None = None,
          fresh_torch: Callable | None = None, train: bool = False,
          flax_inputs: Callable | None = None, flax_outputs: Callable | None = None,
          metric: Callable | None = None, eval_data=None,
          mapping: Mapping[str, str] | None = None, pairing: Pairing | None = None,
          kinds: Sequence = (),
          dtype: str | None = None, layers: bool = True,
          make_optimizer: Callable | None = None, make_scheduler: Callable | None = None,
          tx=None, clip_grad_norm: float | None = None) -> ParityReport:
    """Checks that an nnx port initialises, computes, differentiates and trains like the torch
    module it ports, in one call. The parts, each tolerance and the traps are in the README
    ("Checking a port").

    Args:
      torch_module: the original (its weights are restored at the end).
      model: the nnx port (left holding torch's weights, trained ``steps`` steps; on an
        error it is left as it was); it may be built as shapes (``nnx.eval_shape``):
        ``check`` fills it.
      inputs: a batch in torch's layout (NumPy or torch), or an ``(inputs, targets)`` pair.
      loss: ``loss(output)`` or, with targets, ``loss(output, target)`` in either framework,
        a scalar; default: a regression to a fixed random target, or with targets
        ``cross_entropy`` (integer) / mean squared error (real).
      steps: training steps on ``inputs``; or ``batches``: one step per item, in order.
      learning_rate, momentum: ``torch.optim.SGD`` and ``optax.sgd``'s (without
        ``make_optimizer``).
      make_optimizer: ``f(torch_module) -> torch.optim.Optimizer``, called once per torch
        copy the check trains (it gets the module so that it can build param groups by
        name); the port trains with its exact optax translation
        (``winit_jax.parity.translate_optimizer``), or with ``tx``.
      make_scheduler: ``f(torch_optimizer) -> LR scheduler``, stepped after each step.
      tx: the porter's own ``optax.GradientTransformation`` for the port, checked against
        torch's optimiser (``make_optimizer``, ``make_scheduler``, ``clip_grad_norm``).
      clip_grad_norm: ``torch.nn.utils.clip_grad_norm_(parameters, clip_grad_norm)``
        before each torch step (and torch's clipping, translated, on the port's side
        unless ``tx`` is given).
      init_seeds: seeds of the init comparison (0: none); ``overrides`` the recipe
        (``torch_like.init``'s ``overrides``) and ``fresh_torch`` a factory for a model whose
        constructor re-initialises (torchvision's ResNet).
      train: run the steps in training mode (BatchNorm batch statistics).
      flax_inputs, flax_outputs: inputs to the port's layout (NCHW -> NHWC), the port's
        outputs back to torch's.
      metric, eval_data: ``metric(output, target)`` on an ``(inputs, targets)`` pair after
        training (e.g. ``accuracy``).
      mapping: ``{torch name: nnx path}`` for layers the pairing rules cannot pair.
      pairing: the two models' ``parity.pair(...)``, computed once (instead of ``mapping``).
      kinds: layer kinds for this check only, ahead of the registered ones.
      dtype: "float32" or "float64" (default: the torch module's).
      layers: compare every paired layer's input and output in the forward pass (torch
        forward hooks, the recording forward on the nnx side) and name the first place
        where the two part (``report.first_divergence``, ``report.layer_table()``).

    Returns:
      A ``ParityReport``: ``ok``, ``assert_ok()``, ``table()``, ``to_json()``, ``curves``.

    Raises:
      ParityError: models that cannot be paired, inputs or batches that do not fit them,
        outputs of different shapes, a loss that is not a scalar, ``steps`` with
        ``batches``, a ``metric`` without ``eval_data``. Whatever is raised, both models
        are left as they were.
    """
    with registered(*kinds):
        return _check(torch_module, model, inputs, loss=loss, steps=steps, batches=batches,
                      learning_rate=learning_rate, momentum=momentum, init_seeds=init_seeds,
                      overrides=overrides, fresh_torch=fresh_torch, train=train,
                      flax_inputs=flax_inputs, flax_outputs=flax_outputs, metric=metric,
                      eval_data=eval_data, mapping=mapping, pairing=pairing, dtype=dtype,
                      layers=layers, make_optimizer=make_optimizer,
                      make_scheduler=make_scheduler, tx=tx, clip_grad_norm=clip_grad_norm)


def _check(torch_module, model, inputs, *, loss, steps, batches, learning_rate, momentum,
           init_seeds, overrides, fresh_torch, train, flax_inputs, flax_outputs, metric,
           eval_data, mapping, pairing, dtype, layers, make_optimizer, make_scheduler, tx,
           clip_grad_norm) -> ParityReport:
    first = next(iter(torch_module.parameters()))
    dtype = check_dtype(dtype or str(first.dtype).removeprefix("torch."), "check")
    if (make_optimizer is None) and (make_scheduler is not None or tx is not None):
        raise ParityError("make_optimizer: make_scheduler and tx are checked against a torch "
                          "optimiser; pass make_optimizer=lambda m: torch.optim...("
                          "m.parameters(), ...)")
    for name, factory in (("make_optimizer", make_optimizer), ("make_scheduler", make_scheduler)):
        if factory is not None and not callable(factory):
            raise ParityError(f"{name}: must be a function that builds it (got a "
                              f"{type(factory).__name__}: pass lambda m: ..., not the object)")
    run = _prepare(torch_module, model, inputs, loss=loss, steps=steps, batches=batches,
                   flax_inputs=flax_inputs, flax_outputs=flax_outputs, metric=metric,
                   eval_data=eval_data, mapping=mapping, pairing=pairing, dtype=dtype)
    training = _Training(make_optimizer, make_scheduler, tx, clip_grad_norm, learning_rate,
                         momentum)
    if train and run.schedule:
        active = _active_dropout(torch_module, model)
        if active:
            raise ParityError(f"train: dropout is active in train mode ({'; '.join(active[:3])})"
                              ": the two frameworks draw different masks, so the steps would "
                              "compare noise; set its rate to 0 for the check")
    with _restored(torch_module, model):
        if init_seeds:
            _init_stage(run, init_seeds, overrides, fresh_torch)
        for var, value in flax_updates(run.paired):
            var.set_value(value)
        _fill_abstract(model)
        # torch in float64 from the same start: the yardstick of every float32 tolerance
        ref = copy.deepcopy(torch_module).double() if dtype == "float32" else None
        _forward_and_gradient_stage(run, ref)
        if layers:
            _layer_stage(run, ref)
        if run.schedule:
            _step_stage(run, ref, train, training)
        if run.held_out is not None:
            _metric_stage(run, ref, metric)
    checks = [dataclasses.replace(c, ok=c.inconclusive or (c.ok and (
        c.value <= c.tol if c.part != "init" else c.value >= c.tol))) for c in run.checks]
    if run.schedule:
        run.notes += dict.fromkeys(n for p in run.paired if (n := flax_cell_bias_note(p.kind)))
    return ParityReport(dtype, checks, run.curves, run.metrics, run.notes, run.layers,
                        None if run.kink else _first_divergence(run.layers, run.paired))


class _restored:
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


# --- data ------------------------------------------------------------------------------------

def _prepare(torch_module, model, inputs, *, loss, steps, batches, flax_inputs, flax_outputs,
             metric, eval_data, mapping, pairing, dtype) -> _Run:
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
    return _Run(torch_module, model, paired, dtype, TOLERANCES[dtype], first, schedule,
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


def _first(out):
    """A module's output, or the first of the tuple it returns (an LSTM's (y, state))."""
    return out[0] if isinstance(out, tuple) else out


def _first_line(e: Exception) -> str:
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
            y_t = _first(torch_module(x_t))
    except Exception as e:  # torch's own message, one line, after ours
        raise ParityError(f"inputs: shape {tuple(x_t.shape)} does not fit the torch module: "
                          f"{_first_line(e)}") from None
    finally:
        torch_module.train(was)
    try:
        y_f = nnx.eval_shape(lambda m, x: out_f(m(x)), _eval_copy(model), x_f)
    except Exception as e:
        raise ParityError(f"inputs: shape {tuple(x_f.shape)} (after flax_inputs) does not fit "
                          f"the nnx model: {_first_line(e)}") from None
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
        raise ParityError(f"loss: fails on the outputs: {_first_line(e)}") from None
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


def _fill_abstract(model) -> None:
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


# --- 1. init ---------------------------------------------------------------------------------

def _reset_torch(module):
    """What constructing ``module`` again draws: every submodule's ``reset_parameters`` (or
    ``_reset_parameters``), children before parents (MultiheadAttention zeroes the bias its
    out_proj Linear drew)."""
    for m in reversed(list(module.modules())):
        reset = getattr(m, "reset_parameters", None) or getattr(m, "_reset_parameters", None)
        if reset is not None:
            reset()


def _init_stage(run: _Run, seeds, overrides, fresh_torch):
    """Every paired tensor drawn by ``torch_like.init`` against torch's own draw, pooled
    over the seeds: KS with p >= 1e-3 / (tensors) (Bonferroni); constants exactly."""
    import torch

    from winit_jax import torch_like

    ours, theirs = {}, {}
    names = {p.torch_name for p in run.paired}
    saved = copy.deepcopy(run.torch_module.state_dict())
    for seed in range(seeds):
        torch_like.init(run.model, jax.random.key(seed), overrides=overrides,
                        pairing=run.paired)
        for k, v in torch_values(run.paired, "flax").items():
            ours.setdefault(k, []).append(v.ravel())
        torch.manual_seed(seed)
        if fresh_torch is None:
            _reset_torch(run.torch_module)
            layers = None
        else:
            fresh = fresh_torch().to(next(run.torch_module.parameters()).dtype)
            layers = dict(torch_layers(fresh))
            if set(layers) != names:
                raise ParityError("fresh_torch builds a module with other layers than torch_module")
        for k, v in torch_values(run.paired, "torch", layers).items():
            theirs.setdefault(k, []).append(v.ravel())
    ours = {k: np.concatenate(v) for k, v in ours.items()}
    theirs = {k: np.concatenate(v) for k, v in theirs.items()}
    threshold = KS_ALPHA / max(1, len(random_tensors(theirs)))
    for d in compare_draws(ours, theirs, threshold):
        run.checks.append(Check("init", d.name, d.p, threshold, d.ok, f"{d.how}, {seeds} seeds"))
    run.torch_module.load_state_dict(saved)


# --- 2, 3. forward and gradient ---------------------------------------------------------------

def _outputs_and_grads(run: _Run, module, x_t, c_t, layers=None) -> tuple[np.ndarray, dict]:
    """A torch module's output and its loss's gradient per paired tensor (eval mode);
    ``layers`` maps the pairs' torch names to ``module``'s layers when it is not the paired
    module itself (torch's float64 copy). An LSTM/GRU's bias_hh gets the same gradient as
    bias_ih (r, z, and the LSTM's all) and Flax's one bias is compared with bias_ih, so
    bias_hh is left out for those kinds."""
    module.zero_grad()
    y = _first(module(x_t))
    run.call(y, c_t).backward()
    grads = {}
    for p in run.paired:
        tm = p.torch_module if layers is None else layers[p.torch_name]
        for n, t in tm.named_parameters():
            if t.grad is not None and not (p.kind.torch_values is not None
                                           and n.startswith("bias_hh")):
                grads[tensor_prefix(p) + n] = np_copy(t.grad)
    return y.detach().numpy(), grads


PROBES = 8  # nearby inputs tried when a float32 forward/gradient check fails
PROBE_ULPS = 4  # how near: each input entry moved by +-4 float32 ulps (relative)


def _port_value_and_grad(run: _Run) -> Callable:
    """``f(model, x_f, c_f) -> ((loss, output), gradients)`` of the port (``nnx``)."""
    def loss(m, x, c):
        y = run.out_f(m(x))
        return run.call(y, c), y
    return nnx.value_and_grad(loss, has_aux=True)


def _port_outputs_and_grads(run: _Run, model, x_f, c_f, value_and_grad=None
                            ) -> tuple[np.ndarray, dict]:
    """The port's output and its loss's gradient per paired tensor, in torch's layout.

    Eager by default (one call: compiling costs more, a warm ViT check took 0.22 s eager,
    2.1 s jitted); the nearby-input probes pass one jitted ``_port_value_and_grad`` for
    their ``PROBES`` calls (a MobileNetV2's eager gradient took 2.3 s a call).
    """
    (_, y_f), grads = (value_and_grad or _port_value_and_grad(run))(model, x_f, c_f)
    # read the gradients in torch's layout through the pairs: write them into the model's
    # parameters for a moment, convert, and put the parameters back
    params = [v for _, v in nnx.iter_graph(model) if isinstance(v, nnx.Param)]
    originals = [v.get_value() for v in params]
    nnx.update(model, grads)
    try:
        grads_f = torch_values(run.paired, "flax")
    finally:
        for var, value in zip(params, originals):
            var.set_value(value)
    return np.asarray(y_f), grads_f


def _forward_and_gradient_stage(run: _Run, ref):
    """Eval mode (no batch-statistic updates): the outputs, then every tensor's gradient.

    float32: each tolerance is measured on the run, as the steps' are: torch's own
    float32-vs-float64 gap on the same inputs (``ref``: torch in float64), times
    ``NOISE_FACTOR``, floored at ``TOLERANCES``. Where the port still fails, both are rerun
    on ``PROBES`` nearby inputs (each entry moved by +-``PROBE_ULPS`` float32 ulps, a fixed
    seed): if on one of them the port is within tolerance of torch's float64 result, the
    port computes torch's function and the gap at the given inputs is a rounding flip at a
    kink (ReLU6, max-pooling ties): the check is marked inconclusive, neither passed nor
    failed. A port that differs stays off on every nearby input and fails.
    """
    x_t, x_f, c_t, c_f = run.inputs
    run.modes(False)
    y_t, grads_t = _outputs_and_grads(run, run.torch_module, x_t, c_t)
    ref_layers = dict(torch_layers(ref)) if ref is not None else None
    y_r, grads_r = (_outputs_and_grads(run, ref.eval(), _wide(x_t), _wide(c_t), ref_layers)
                    if ref is not None else (y_t, grads_t))
    y_f, grads_f = _port_outputs_and_grads(run, run.model, x_f, c_f)
    measured = ref is not None
    rows = [("forward", "output", y_f, y_t, y_r, "max |diff| / max |torch output|")]
    rows += [("gradient", k, grads_f[k], g, grads_r[k], "max |diff| / max |torch gradient|")
             for k, g in grads_t.items()]
    checks = []
    for part, name, ours, theirs, wide, how in rows:
        noise = rel_gap(theirs, wide) if measured else 0.0
        tol = max(run.tol[part], NOISE_FACTOR * noise)
        if measured:
            how = f"{how}; torch's own float32 gap {noise:.2g}"
        checks.append(Check(part, name, rel_gap(ours, theirs), tol, True, how))
    # identically zero on both sides (a zero-initialised head, a parameter the loss does not
    # reach): 0 vs 0 tests nothing
    zero = {name for part, name, ours, theirs, _, _ in rows
            if not np.any(theirs) and not np.any(ours)}
    checks = [dataclasses.replace(c, inconclusive=True, how=(
        "not tested: zero in both frameworks" + (
            " (a zero-initialised head?); the layer rows compare the layers before it"
            if c.part == "forward" else " (the loss does not depend on it here)")))
        if c.name in zero else c for c in checks]
    failing = {c.name: c for c in checks if c.value > c.tol and not c.inconclusive}
    if failing and measured and x_t.is_floating_point():
        nearby = _nearby_gaps(run, ref, ref_layers, x_t, c_t, c_f)
        checks = [dataclasses.replace(
            c, inconclusive=True, how=f"{c.how}; within tolerance of torch's float64 result "
                                      f"on a nearby input ({nearby[c.name]:.2g}): inconclusive")
                  if c.name in failing and nearby[c.name] <= c.tol else c for c in checks]
    run.checks += checks
    if zero:
        run.notes.append(f"not tested, zero in both frameworks: {', '.join(sorted(zero)[:5])}"
                         + (" ..." if len(zero) > 5 else ""))
    unsure = [c for c in checks if c.inconclusive and c.name not in zero]
    run.kink = bool(unsure)
    if unsure:
        run.notes.append(
            f"{len(unsure)} forward/gradient checks are inconclusive in float32 at these "
            "inputs: the port is off there but agrees with torch's float64 result on an input "
            f"{PROBE_ULPS} float32 ulps away (a rounding flip at a kink, e.g. ReLU6); "
            "compare in float64 (jax_enable_x64, a float64 torch module) to decide")


def _nearby_gaps(run, ref, ref_layers, x_t, c_t, c_f) -> dict[str, float]:
    """Per output/gradient, the port's smallest gap to torch's float64 result over
    ``PROBES`` inputs moved by +-``PROBE_ULPS`` float32 ulps (fixed seed)."""
    import torch

    rng = np.random.default_rng(0)
    step = np.float32(PROBE_ULPS * np.finfo(np.float32).eps)
    x = x_t.numpy()
    out = {}
    value_and_grad = nnx.jit(_port_value_and_grad(run))  # compiled once for the probes
    for _ in range(PROBES):
        sign = rng.choice(np.float32([-1, 1]), size=x.shape)
        xp = x * (np.float32(1) + step * sign)
        y_r, grads_r = _outputs_and_grads(run, ref, torch.from_numpy(xp).double(), _wide(c_t),
                                          ref_layers)
        x_fp = jnp.asarray(run.flax_inputs(xp) if run.flax_inputs else xp)
        y_f, grads_f = _port_outputs_and_grads(run, run.model, x_fp, c_f, value_and_grad)
        gaps = {"output": rel_gap(y_f, y_r), **{k: rel_gap(grads_f[k], g)
                                                 for k, g in grads_r.items()}}
        out = {k: min(out.get(k, np.inf), v) for k, v in gaps.items()}
    return out


# --- 2b. layer by layer ------------------------------------------------------------------

# The smallest per-layer tolerance in float32: 16 float32 ulps (relative to the layer's
# scale), where torch's own float32-vs-float64 gap is smaller than rounding can explain.
LAYER_FLOOR = {"float32": 16 * float(np.finfo(np.float32).eps), "float64": 1e-10}


def _as_np(value):
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


def _torch_calls(module, names, x_t, c_t, call) -> list[list]:
    """``[layer name, input, output, gradient of the loss at that output]`` of every call of
    the named torch layers, in call order, from one forward and one backward pass (eval
    mode; the gradient None where the output is not a tensor)."""
    import torch

    events, handles = [], []
    named = dict(module.named_modules())
    for name in names:
        def hook(mod, inp, out, name=name):
            first = out[0] if isinstance(out, tuple) else out
            events.append([name, _as_np(inp), _as_np(out), None])
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
        call(_first(module(x_t)), c_t).backward()
    finally:
        for h in handles:
            h.remove()
        module.zero_grad()
    return events


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
                None if v is None else convert(_as_np(v), p.flax_layer, which)
                for v, which in values))
    return out


def _nth(calls: dict, name: str, k: int, width: int) -> tuple:
    """Call ``k`` of ``name`` (Nones where the port called it fewer times)."""
    return (calls.get(name, []) + [(None,) * width] * (k + 1))[k]


def _layer_stage(run: _Run, ref):
    """Every paired layer's input and output, per call, in torch's call order, in torch's
    layout (through the kind); each output's gap is a check ("layer"): tolerance 10x torch's
    own float32-vs-float64 gap at that layer, floored at ``LAYER_FLOOR``. Pairs that are not
    one called module on each side (bare parameters, a stacked RNN's layers, scanned blocks)
    are not recorded."""
    import torch

    from winit_jax.forward import layer_io
    from winit_jax.kinds.parameters import FlaxParameters
    from winit_jax.kinds.stack import is_slice

    x_f = run.inputs[1]
    paired = {p.torch_name: p for p in run.paired
              if isinstance(p.torch_module, torch.nn.Module) and not is_slice(p.flax_layer)
              and not isinstance(p.flax_layer, FlaxParameters)}
    if not paired:
        return
    run.modes(False)
    x_t, _, c_t, _ = run.inputs
    ours = _torch_calls(run.torch_module, paired, x_t, c_t, run.call)
    wide = (_torch_calls(ref.eval(), paired, _wide(x_t), _wide(c_t), run.call)
            if ref is not None else ours)
    types = tuple({type(p.flax_layer) for p in paired.values()})
    _, calls = layer_io(run.model, x_f, types=types)
    flax_calls = _in_torch_layout(paired, [(c.layer, [(c.input, "input"), (c.output, "output")])
                                           for c in calls])
    floor, seen = LAYER_FLOOR[run.dtype], {}
    for (name, t_in, t_out, _), (_, w_in, w_out, _) in zip(ours, wide):
        k = seen[name] = seen.get(name, -1) + 1
        p = paired[name]
        f_in, f_out = _nth(flax_calls, name, k, 2)
        gaps, tols = [], []
        for mine, theirs, exact in ((f_in, t_in, w_in), (f_out, t_out, w_out)):
            gaps.append(float("inf") if mine is None or theirs is None else rel_gap(mine, theirs))
            noise = 0.0 if theirs is None or exact is None else rel_gap(theirs, exact)
            tols.append(max(floor, NOISE_FACTOR * noise))
        row = LayerRow(name, p.flax_path, p.kind.name, k, gaps[0], gaps[1], tols[0], tols[1])
        run.layers.append(row)
        run.checks.append(Check("layer", f"{name or '<root>'} output" + (f" (call {k + 1})"
                                                                          if k else ""),
                                row.output_gap, row.output_tol, True,
                                "max |diff| / max |torch layer output|; tolerance 10x torch's "
                                f"own float32 gap at this layer, floor {floor:.2g}"))
    _backward_layers(run, paired, ours, wide, types, calls)
    if run.kink:  # the same flip moves the layers' outputs and gradients after it
        run.checks = [dataclasses.replace(c, inconclusive=True, how=(
            f"{c.how}; inconclusive: a kink flip was found at these inputs (see the "
            "forward/gradient checks)")) if c.part == "layer" and c.value > c.tol else c
            for c in run.checks]
    missing = [n for n in paired if n not in seen]
    if missing:
        run.notes.append(f"layers never called by torch's forward pass, not compared: "
                         f"{', '.join(missing[:5])}")
    last = ours[-1] if ours else None
    if last is not None and last[2] is not None and not np.any(last[2]):
        run.notes.append(f"torch's last layer ({last[0] or '<root>'}) outputs only zeros (a "
                         "zero-initialised head?): the output comparison tests nothing there; "
                         "the layer rows before it do")


def _flax_output_grads(run: _Run, types, calls) -> list:
    """The gradient of the port's loss with respect to each watched layer call's output
    (``calls``: the recorded forward's), in call order: a zero added to each output
    (``layer_io``'s ``on_output``), differentiated."""
    from winit_jax.forward import layer_io

    _, x_f, _, c_f = run.inputs
    zeros = [jnp.zeros_like(c.output) if isinstance(c.output, jax.Array) else None
             for c in calls]

    def loss(model, eps):
        def add(k, y):
            return y + eps[k] if eps[k] is not None else y
        y, _ = layer_io(model, x_f, types=types, on_output=add)
        return run.call(run.out_f(y), c_f)

    # nnx.grad, not jax.grad: a model that runs nnx transforms inside (nnx.RNN's scan) must
    # be handed through, not closed over; the calls come in the same order
    grads = nnx.grad(loss, argnums=1)(run.model, zeros)
    return [(c.layer, [(g, "output")]) for c, g in zip(calls, grads)]


def _backward_layers(run: _Run, paired: dict, ours, wide, types, calls) -> None:
    """Adds each layer row's output-gradient gap (and a "layer" check for it): torch's
    gradient at that call's output (``ours``, ``wide``: ``_torch_calls``') against the
    port's, in torch's layout, the tolerance 10x torch's own float32 gap there (floor
    ``LAYER_FLOOR``)."""
    flax = _in_torch_layout(paired, _flax_output_grads(run, types, calls))
    floor, seen = LAYER_FLOOR[run.dtype], {}
    rows = {(r.torch_name, r.call): i for i, r in enumerate(run.layers)}
    for (name, _, _, g_t), (_, _, _, g_w) in zip(ours, wide):
        k = seen[name] = seen.get(name, -1) + 1
        (g_f,) = _nth(flax, name, k, 1)
        i = rows.get((name, k))
        if i is None or g_t is None or g_f is None or np.shape(g_f) != np.shape(g_t):
            continue
        noise = rel_gap(g_t, g_w) if g_w is not None else 0.0
        row = dataclasses.replace(run.layers[i], grad_gap=rel_gap(g_f, g_t),
                                  grad_tol=max(floor, NOISE_FACTOR * noise))
        run.layers[i] = row
        run.checks.append(Check("layer", f"{name or '<root>'} output gradient" + (
            f" (call {k + 1})" if k else ""), row.grad_gap, row.grad_tol, True,
            "max |diff| / max |torch's gradient at this output|; tolerance 10x torch's own "
            f"float32 gap there, floor {floor:.2g}"))


def _first_divergence(rows: list, paired: list) -> Divergence | None:
    """The first call, in torch's order, whose input or output is off; with none, the last
    call whose output gradient is off (the backward pass runs in reverse)."""
    kinds = {p.torch_name: p.kind for p in paired}
    recorded = {r.torch_name for r in rows}
    unrecorded = [n for n in kinds if n not in recorded]
    for i, r in reversed(list(enumerate(rows)) if all(r.forward_ok for r in rows) else []):
        if not r.backward_ok:
            after = rows[i + 1].torch_name if i + 1 < len(rows) else "the loss"
            return Divergence(r.torch_name, r.flax_path, r.kind, r.call, "backward", r.grad_gap,
                              r.grad_tol, f"the backward of the code after this layer (up to "
                              f"{after or '<root>'}'s output): a stop_gradient, a custom_vjp, "
                              "an op whose derivative differs at a kink (jnp.maximum vs ReLU at "
                              "0), the loss")
    for i, r in enumerate(rows):
        if r.forward_ok:
            continue
        kind = kinds[r.torch_name]
        if r.input_gap > r.input_tol:
            before = rows[i - 1].torch_name if i else "the model's input"
            hint = (f"the code between {before or '<root>'} and this layer: an activation "
                    "(GELU's tanh approximation? ReLU for ReLU6?), a residual, padding, a "
                    "reshape or flatten order, the inputs' layout")
            if unrecorded:  # pairs with no per-call record may sit in between
                hint += ("; or a pair not recorded layer by layer (a stacked RNN's layers, "
                         "scanned blocks, bare parameters): " + ", ".join(unrecorded[:4])
                         + (" ..." if len(unrecorded) > 4 else ""))
            return Divergence(r.torch_name, r.flax_path, r.kind, r.call, "before", r.input_gap,
                              r.input_tol, hint)
        return Divergence(r.torch_name, r.flax_path, r.kind, r.call, "inside", r.output_gap,
                          r.output_tol, kind.hint)
    return None


# --- 4. steps --------------------------------------------------------------------------------

def _active_dropout(torch_module, model) -> list[str]:
    """Dropout that train mode switches on, on either side: torch's Dropout family and
    attention dropout, nnx's Dropout and attention ``dropout_rate``."""
    import torch

    found = []
    for name, m in torch_module.named_modules():
        p = (m.p if isinstance(m, torch.nn.modules.dropout._DropoutNd) else
             m.dropout if isinstance(m, torch.nn.MultiheadAttention) else 0.0)
        if p:
            found.append(f"torch {name or '<root>'} ({type(m).__name__} p={p:g})")
    for path, m in nnx.iter_modules(model):
        rate = (m.rate if isinstance(m, nnx.Dropout) else
                getattr(m, "dropout_rate", 0.0) if isinstance(m, nnx.MultiHeadAttention)
                else 0.0)
        if rate:
            found.append(f"nnx {'/'.join(map(str, path)) or '<root>'} "
                         f"({type(m).__name__} rate={rate:g})")
    return found


def _wide(t):
    """A torch tensor in float64 when it is floating (token ids and labels stay integers)."""
    return t.double() if t is not None and t.is_floating_point() else t


@dataclasses.dataclass(frozen=True)
class _Training:
    """How both sides train: torch's optimiser (default SGD) and its translation, or the
    porter's ``tx``."""

    make_optimizer: Callable | None
    make_scheduler: Callable | None
    tx: object
    clip: float | None
    learning_rate: float
    momentum: float

    def torch(self, module):
        """(optimiser, scheduler or None) for a torch module."""
        import torch

        if self.make_optimizer is None:
            opt = torch.optim.SGD(module.parameters(), lr=self.learning_rate,
                                  momentum=self.momentum)
        else:
            try:
                opt = self.make_optimizer(module)
            except TypeError as e:  # e.g. a factory of parameters: lambda ps: SGD(ps, ...)
                raise ParityError(
                    "make_optimizer: it is called with the torch module and must return a "
                    "torch.optim.Optimizer (lambda m: torch.optim.SGD(m.parameters(), lr=...));"
                    f" calling it raised TypeError: {_first_line(e)}") from None
            if not isinstance(opt, torch.optim.Optimizer):
                raise ParityError(f"make_optimizer: the factory returned {type(opt).__name__}, "
                                  "not a torch.optim.Optimizer")
        return opt, (self.make_scheduler(opt) if self.make_scheduler is not None else None)

    def port(self, pairing, opt, sched, steps):
        """The port's optax transformation: ``tx``, or the exact translation of torch's."""
        import optax

        if self.tx is not None:
            return self.tx
        if self.make_optimizer is None and self.clip is None:
            return optax.sgd(self.learning_rate, momentum=self.momentum or None)
        return translate_optimizer(opt, pairing, scheduler=sched, steps=steps,
                                   clip_grad_norm=self.clip)



def _zero_gradients(run: _Run, ref) -> dict[str, str]:
    """torch names of parameters whose gradient is zero in exact arithmetic (a conv bias
    before BatchNorm, attention key biases): in float64, their largest gradient entry is
    below ZERO_GRADIENT times the model's largest; name -> how it was measured."""
    x_t, _, c_t, _ = run.schedule[0]
    probe = copy.deepcopy(ref if ref is not None else run.torch_module)  # its BN stats move
    _, grads = _outputs_and_grads(run, probe, _wide(x_t), _wide(c_t), dict(torch_layers(probe)))
    top = max((float(np.abs(g).max()) for g in grads.values() if g.size), default=0.0)
    return {k: f"float64 gradient {np.abs(g).max():.1e} vs the model's largest {top:.1e}"
            for k, g in grads.items() if top > 0 and np.abs(g).max() <= ZERO_GRADIENT * top}


def _step_stage(run: _Run, ref, train, training: _Training):
    """Training steps from the same start (torch's optimiser on both torch copies; its
    translation or the porter's ``tx`` on the port); float32 tolerances from torch's own
    float32-vs-float64 gap on the same steps (the port may differ by ``NOISE_FACTOR``
    times that). A check whose measured tolerance is more than ``CHAOS_FRACTION`` of what the
    steps changed (the loss, the tensor) cannot tell a port that trained from one that did
    not: it is inconclusive, and the note says what to do instead."""
    import torch

    run.modes(train)
    if ref is not None:
        ref.train(train)
    runs = [(run.torch_module, False)] + ([(ref, True)] if ref is not None else [])
    made = [training.torch(m) for m, _ in runs]
    opts, scheds = [o for o, _ in made], [s for _, s in made]
    kind = type(opts[0]).__name__
    zero = _zero_gradients(run, ref)
    start = torch_values(run.paired, "torch")
    tx = training.port(run.paired, opts[0], scheds[0], len(run.schedule))
    opt_f = nnx.Optimizer(run.model, tx, wrt=nnx.Param)
    call, out_f = run.call, run.out_f

    @nnx.jit
    def step(model, opt, x, c):
        val, g = nnx.value_and_grad(lambda m: call(out_f(m(x)), c))(model)
        opt.update(model, g)
        return val

    names = ["torch", "torch_float64"][:len(runs)]
    run.curves.update({n: [] for n in ["torch", "flax", *names[1:]]})
    for x_t, x_f, c_t, c_f in run.schedule:
        for (m, wide), opt, sched, n in zip(runs, opts, scheds, names):
            opt.zero_grad()
            value = call(_first(m(_wide(x_t) if wide else x_t)), _wide(c_t) if wide else c_t)
            value.backward()
            if training.clip is not None:
                torch.nn.utils.clip_grad_norm_(m.parameters(), training.clip)
            opt.step()
            if sched is not None:
                sched.step()
            run.curves[n].append(value.item())
        run.curves["flax"].append(float(step(run.model, opt_f, x_f, c_f)))
    chaotic = []

    def judged(part, name, gap, noise, floor, signal, how):
        """A check. A pass is claimed only where the tolerance could have seen a port that
        trains CHAOS_FRACTION off; otherwise it is inconclusive (a failure stays one)."""
        tol = max(floor, NOISE_FACTOR * noise)
        if gap <= tol and tol > CHAOS_FRACTION * signal:
            if NOISE_FACTOR * noise > floor:
                chaotic.append(name)
            why = ("float32 rounding swamps the training" if NOISE_FACTOR * noise > floor
                   else "the steps barely moved it")
            return Check(part, name, gap, tol, True, f"{how}; not tested: the tolerance is "
                         f"more than {CHAOS_FRACTION:g} of what the steps changed "
                         f"({signal:.2g}), {why}", inconclusive=True)
        return Check(part, name, gap, tol, True, how)

    lt, lf = run.curves["torch"], run.curves["flax"]
    parted = None
    for s in range(len(lt)):
        noise = rel_gap(lt[s], run.curves["torch_float64"][s]) if ref is not None else 0.0
        signal = rel_gap(lt[s], lt[0]) if s else float("inf")  # step 0 is the forward
        c = judged("step", f"loss {s}", rel_gap(lf[s], lt[s]), noise, run.tol["step"],
                   signal, f"|diff| / |torch loss|; torch's own float32 gap {noise:.2g}")
        run.checks.append(c)
        if parted is None and c.value > c.tol and not c.inconclusive:
            parted = s
            run.notes.append(f"training parts from torch's at step {s}: loss {lf[s]:.6g} vs "
                             f"torch {lt[s]:.6g}" + (
                                 " (the losses before the first update differ: check the "
                                 "forward)" if s == 0 else
                                 f" (after {s} update(s); torch's optimiser: {kind})"))
    ours = torch_values(run.paired, "flax")
    theirs = torch_values(run.paired, "torch")
    wide = (torch_values(run.paired, "torch", dict(torch_layers(ref))) if ref is not None
            else theirs)
    n_per_channel = _values_per_channel(run.torch_module, run.schedule[-1][0])
    eps32 = float(np.finfo(np.float32).eps)
    for k, t in theirs.items():
        noise = rel_gap(t, wide[k]) if ref is not None else 0.0
        floor = run.tol["step"]
        how = f"after {len(run.schedule)} steps; torch's own float32 gap {noise:.2g}"
        if ours[k].dtype == np.float32 and run.dtype == "float64":
            # nnx keeps BatchNorm statistics in float32 whatever param_dtype
            floor = max(floor, STAT_ULPS * eps32)
            how += f"; nnx holds it in float32: floor {STAT_ULPS} float32 ulps"
        gap, signal = rel_gap(ours[k], t), rel_gap(t, start[k])
        if k.endswith("running_var"):
            bessel = 1.0 / max(1, n_per_channel(k) - 1)
            c = judged("batch_stats", k, gap, noise, floor, signal, how)
            run.checks.append(dataclasses.replace(
                c, tol=c.tol + bessel, how=f"{c.how}; + 1/(n-1) = {bessel:.2g}: Flax uses the "
                                           "biased batch variance, torch the unbiased"))
        elif k.endswith("running_mean"):
            # relative to the larger of its own scale and its input's spread: a mean that is
            # zero in exact arithmetic (after a bias-free conv of a zero-mean input) is
            # rounding noise, which is small against the spread, not against itself
            var = theirs.get(k.removesuffix("running_mean") + "running_var")
            spread = float(np.sqrt(np.max(var))) if var is not None else 0.0
            scale = max(float(np.max(np.abs(t))), spread)
            if scale > float(np.max(np.abs(t))):
                gap = float(np.max(np.abs(np.asarray(ours[k], np.float64) - t))) / scale
                how += f"; relative to its input's spread sqrt(running_var) {spread:.2g}"
            run.checks.append(judged("batch_stats", k, gap, noise, floor, signal, how))
        elif k in zero:
            run.checks.append(Check(
                "step", k, gap, max(floor, NOISE_FACTOR * noise), True,
                f"not tested: its gradient is zero in exact arithmetic ({zero[k]}), so "
                + (f"{kind} divides that rounding noise by its own scale" if kind != "SGD"
                   else "only rounding noise moves it") + ", on both sides",
                inconclusive=True))
        else:
            run.checks.append(judged("step", k, gap, noise, floor, signal, how))
    if chaotic:
        run.notes.append(
            f"{len(chaotic)} step checks are inconclusive: in float32 torch's own run is so far "
            "from its float64 one that the tolerance exceeds "
            f"{CHAOS_FRACTION:g} of what the steps changed (chaotic training); check with "
            "dtype float64, a smaller learning rate or fewer steps")


def _values_per_channel(torch_module, x_t):
    """name of a BatchNorm's running_var -> n, the values per channel of that layer's input
    (every axis but the channel's), read with forward hooks on one eval-mode pass."""
    import torch

    sizes, handles = {}, []
    for name, m in torch_module.named_modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            prefix = f"{name}." if name else ""

            def hook(mod, inp, key=prefix + "running_var"):  # returns None: input unchanged
                sizes.setdefault(key, inp[0].numel() // inp[0].shape[1])
            handles.append(m.register_forward_pre_hook(hook))
    was = torch_module.training
    try:
        torch_module.eval()
        with torch.no_grad():
            torch_module(x_t)
    finally:
        torch_module.train(was)
        for h in handles:
            h.remove()
    return lambda key: sizes.get(key, 2)


# --- 5. metric -------------------------------------------------------------------------------

def _metric_stage(run: _Run, ref, metric):
    """``metric`` of both trained models (and torch's float64 twin) on the held-out data."""
    import torch

    run.modes(False)
    x_t, x_f, c_t, c_f = run.held_out
    chunks = range(0, x_t.shape[0], EVAL_CHUNK)
    with torch.no_grad():
        y_t = torch.cat([_first(run.torch_module(x_t[i:i + EVAL_CHUNK])) for i in chunks])
        y_r = (torch.cat([_first(ref.eval()(_wide(x_t[i:i + EVAL_CHUNK]))) for i in chunks])
               if ref is not None else None)
    forward = nnx.jit(lambda m, x: run.out_f(m(x)))
    y_f = jnp.concatenate([forward(run.model, x_f[i:i + EVAL_CHUNK]) for i in chunks])
    value_t, value_f = float(metric(y_t, c_t)), float(metric(y_f, c_f))
    run.metrics.update(torch=value_t, flax=value_f)
    noise = 0.0
    if ref is not None:
        value_r = float(metric(y_r, c_t))
        run.metrics["torch_float64"] = value_r
        noise = rel_gap(value_t, value_r)
    run.checks.append(Check("metric", getattr(metric, "__name__", "metric"),
                            rel_gap(value_f, value_t), max(run.tol["step"], NOISE_FACTOR * noise),
                            True, f"torch {value_t:.6g}, port {value_f:.6g}; torch's own "
                                  f"float32 gap {noise:.2g}"))
