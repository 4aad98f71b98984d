"""``check``: does an nnx port initialise, compute, differentiate and train like its torch
original? In stages that share one ``Run``: data, init, forward and gradient, steps,
metric. Every error, in any stage, leaves both models as they were."""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable, Iterable, Mapping, Sequence

import jax
from flax import nnx

from winit_jax.kinds import ParityError, registered
from winit_jax.kinds.stochastic import active_dropout
from winit_jax.parity.localise import first_divergence
from winit_jax.parity.pairing import Pairing
from winit_jax.parity.pairing.transfer import check_dtype, flax_updates
from winit_jax.parity.randomness import refuse_random
from winit_jax.parity.report import (
    Outcome,
    ParityReport,
)
from winit_jax.parity.run import Findings, fill_abstract, prepare, restored
from winit_jax.parity.single_steps import PART as SINGLE_STEP
from winit_jax.parity.stage_forward import forward_and_gradient_stage
from winit_jax.parity.stage_init import init_stage
from winit_jax.parity.stage_layers import layer_stage, train_mode_layers
from winit_jax.parity.stage_metric import metric_stage
from winit_jax.parity.stage_steps import Training, step_stage


def check(torch_module, model, inputs, *, kwargs: Mapping | None = None, targets=None,
          loss: Callable | None = None, steps: int = 0,
          batches: Iterable | None = None, learning_rate: float = 0.01, momentum: float = 0.0,
          init_seeds: int = 4, overrides: Mapping | None = None,
          fresh_torch: Callable | None = None, train: bool = False,
          flax_inputs: Callable | tuple | None = None, torch_outputs: Callable | None = None,
          flax_outputs: Callable | None = None,
          metric: Callable | None = None, eval_data=None,
          mapping: Mapping[str, str] | None = None, pairing: Pairing | None = None,
          kinds: Sequence = (),
          dtype: str | None = None, layers: bool = True,
          make_optimizer: Callable | None = None, make_scheduler: Callable | None = None,
          tx=None, clip_grad_norm: float | None = None, weights: str = "torch"
          ) -> ParityReport:
    """Checks that an nnx port initialises, computes, differentiates and trains like the torch
    module it ports, in one call. The parts, each tolerance and the traps are in the guide
    "Checking a port" (docs/guides/checking.md).

    Args:
      torch_module: the original (its weights are restored at the end).
      model: the nnx port (left holding torch's weights, trained ``steps`` steps; on an
        error it is left as it was); it may be built as shapes (``nnx.eval_shape``):
        ``check`` fills it.
      inputs: the input in torch's layout (NumPy or torch), or a tuple of positional inputs
        (a tuple always means several). Floating arrays are cast to the check's dtype;
        integer ones (token ids, timesteps) stay integers and are never perturbed.
      kwargs: keyword inputs given to both models (``attention_mask=``, ``timestep=``,
        ``return_dict=False``): arrays converted like inputs (no layout change), other
        values passed as they are.
      targets: the loss's targets (only ever by name).
      loss: ``loss(output)`` or, with targets, ``loss(output, target)`` in either framework,
        a scalar, on the compared output; default: a regression to a fixed random target,
        or with targets ``cross_entropy`` (integer) / mean squared error (real), on the
        first compared output (a note says so when there are several).
      steps: training steps on ``inputs``; or ``batches``: one step per item, in order,
        each item ``dict(inputs=..., kwargs=..., targets=...)`` (only inputs required).
      learning_rate: ``torch.optim.SGD`` and ``optax.sgd``'s (without
        ``make_optimizer``).
      momentum: as ``learning_rate`` (above).
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
      flax_inputs: each positional input to the port's layout (NCHW -> NHWC): one
        function for all, or a tuple with one function (or None) per input.
      torch_outputs: picks what to compare of torch's output when the two structures
        differ (``lambda out: out.logits``; an LSTM's ``lambda out: out[0]``). Outputs may
        be a tensor, a tuple/list, a dict, a dataclass or HF's ``ModelOutput``: every tensor
        leaf is compared with the port's leaf of the same key (or position).
      flax_outputs: the port's output to torch's layout (and structure).
      metric: ``metric(output, target)`` on the first compared output, on
        ``eval_data`` (an item like ``batches``') after training (e.g. ``accuracy``).
      eval_data: as ``metric`` (above).
      mapping: ``{torch name: nnx path}`` for layers the pairing rules cannot pair.
      pairing: the two models' ``parity.pair(...)``, computed once (instead of ``mapping``).
      kinds: layer kinds for this check only, ahead of the registered ones.
      dtype: "float32" or "float64" (default: the torch module's).
      weights: "torch" (default): torch's weights are copied into the port first, so the
        port's code is what is checked; "port": the port keeps the weights it holds (a
        checkpoint loaded by the porter's loader, or winit_jax's) and is compared against
        torch holding its own, which checks the loader too (no init part then: it would
        redraw the port).
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
    options = {k: v for k, v in locals().items() if k != "kinds"}
    with registered(*kinds):
        return _check(**options)


def _check(torch_module, model, inputs, *, kwargs, targets, loss, steps, batches,
           learning_rate, momentum, init_seeds, overrides, fresh_torch, train, flax_inputs,
           torch_outputs, flax_outputs, metric, eval_data, mapping, pairing, dtype, layers,
           make_optimizer, make_scheduler, tx, clip_grad_norm, weights) -> ParityReport:
    if weights not in ("torch", "port"):
        raise ParityError(f"weights: 'torch' (copy torch's into the port) or 'port' (keep "
                          f"the port's), got {weights!r}")
    if weights == "port":
        abstract = [("/".join(map(str, p))) for p, v in nnx.iter_graph(model)
                    if isinstance(v, nnx.Variable) and isinstance(v, (nnx.Param, nnx.BatchStat))
                    and isinstance(v.get_value(), jax.ShapeDtypeStruct)]
        if abstract:
            raise ParityError(f"weights: 'port' compares the weights the port holds, but "
                              f"{abstract[0]} is abstract (built with nnx.eval_shape); load "
                              "the weights first")
        init_seeds = 0  # the init part would redraw the port's weights
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
    run = prepare(torch_module, model, inputs, kwargs=kwargs, targets=targets, loss=loss,
                  steps=steps, batches=batches, flax_inputs=flax_inputs,
                  torch_outputs=torch_outputs, flax_outputs=flax_outputs, metric=metric,
                  eval_data=eval_data, mapping=mapping, pairing=pairing, dtype=dtype)
    training = Training(make_optimizer, make_scheduler, tx, clip_grad_norm, learning_rate,
                         momentum)
    if train and run.schedule:
        active = active_dropout(torch_module, model)
        if active:
            raise ParityError(f"train: dropout is active in train mode ({'; '.join(active[:3])})"
                              ": the two frameworks draw different masks, so the steps would "
                              "compare noise; set its rate to 0 for the check")
    found: list[Findings] = [Findings(notes=list(run.notes))]
    with restored(torch_module, model):
        if init_seeds:
            found.append(init_stage(run, init_seeds, overrides, fresh_torch))
        if weights == "torch":
            for var, value in flax_updates(run.paired):
                var.set_value(value)
        fill_abstract(model)
        # randomness found by behaviour (what no class name reveals: F.dropout, DropPath)
        refuse_random(torch_module, model, run.inputs, train=False)
        if train and run.schedule:
            refuse_random(torch_module, model, run.inputs, train=True)
        # torch in float64 from the same start: the yardstick of every float32 tolerance
        ref = copy.deepcopy(torch_module).double() if dtype == "float32" else None
        forward = forward_and_gradient_stage(run, ref)
        found.append(forward)
        kink = any(c.outcome is Outcome.INCONCLUSIVE for c in forward.checks)
        if layers:
            found.append(layer_stage(run, ref, kink))
        train_rows = []
        if run.schedule:
            start = copy.deepcopy(torch_module.state_dict()) if layers and train else None
            steps = step_stage(run, ref, train, training)
            found.append(steps)
            if start is not None and any(c.part == SINGLE_STEP and c.outcome is Outcome.FAILED
                                        for c in steps.checks):
                # a step fails from torch's own state: where, layer by layer, in train mode
                train_rows = train_mode_layers(run, ref is not None, start)
                found.append(Findings(checks=train_rows.checks))
                train_rows = train_rows.layers
            found.append(Findings(notes=list(dict.fromkeys(
                p.kind.training_note for p in run.paired if p.kind.training_note))))
        if run.held_out is not None:
            found.append(metric_stage(run, ref, metric))
    rows = [row for f in found for row in f.layers]
    return ParityReport(
        dtype, [c for f in found for c in f.checks],
        {k: v for f in found for k, v in f.curves.items()},
        {k: v for f in found for k, v in f.metrics.items()},
        [n for f in found for n in f.notes], rows,
        None if kink else _first_divergence(rows, train_rows, run.paired))


def _first_divergence(rows, train_rows, paired):
    """Where the port first parts from torch: in eval mode at the check's inputs, or, the
    layers agreeing there, in train mode from the training's start."""
    found = first_divergence(rows, paired)
    if found is None and train_rows:
        found = first_divergence(train_rows, paired)
        if found is not None:
            found = dataclasses.replace(found, mode="train")
    return found
