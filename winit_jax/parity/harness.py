"""``check``: does an nnx port initialise, compute, differentiate and train like its torch
original? In stages that share one ``Run``: data, init, forward and gradient, steps,
metric. Every error, in any stage, leaves both models as they were."""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable, Mapping, Sequence

from winit_jax.kinds import ParityError, registered
from winit_jax.kinds.stochastic import active_dropout
from winit_jax.parity.localise import first_divergence
from winit_jax.parity.pairing import Pairing
from winit_jax.parity.report import (
    Outcome,
    ParityReport,
)
from winit_jax.parity.run import Findings, fill_abstract, prepare, restored
from winit_jax.parity.stage_forward import forward_and_gradient_stage
from winit_jax.parity.stage_init import init_stage
from winit_jax.parity.stage_layers import layer_stage
from winit_jax.parity.stage_metric import metric_stage
from winit_jax.parity.stage_steps import Training, step_stage
from winit_jax.parity.transfer import check_dtype, flax_updates


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
    run = prepare(torch_module, model, inputs, loss=loss, steps=steps, batches=batches,
                   flax_inputs=flax_inputs, flax_outputs=flax_outputs, metric=metric,
                   eval_data=eval_data, mapping=mapping, pairing=pairing, dtype=dtype)
    training = Training(make_optimizer, make_scheduler, tx, clip_grad_norm, learning_rate,
                         momentum)
    if train and run.schedule:
        active = active_dropout(torch_module, model)
        if active:
            raise ParityError(f"train: dropout is active in train mode ({'; '.join(active[:3])})"
                              ": the two frameworks draw different masks, so the steps would "
                              "compare noise; set its rate to 0 for the check")
    found: list[Findings] = []
    with restored(torch_module, model):
        if init_seeds:
            found.append(init_stage(run, init_seeds, overrides, fresh_torch))
        for var, value in flax_updates(run.paired):
            var.set_value(value)
        fill_abstract(model)
        # torch in float64 from the same start: the yardstick of every float32 tolerance
        ref = copy.deepcopy(torch_module).double() if dtype == "float32" else None
        forward = forward_and_gradient_stage(run, ref)
        found.append(forward)
        kink = any(c.outcome is Outcome.INCONCLUSIVE for c in forward.checks)
        if layers:
            found.append(layer_stage(run, ref, kink))
        if run.schedule:
            found.append(step_stage(run, ref, train, training))
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
        None if kink else first_divergence(rows, run.paired))
