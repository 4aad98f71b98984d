"""``translate_optimizer``: a torch optimiser (with its param groups, LR scheduler and
gradient clipping) as one ``optax.GradientTransformation`` over an nnx port's parameters,
through the pairing of the two models."""

from __future__ import annotations

import copy
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from winit_jax import optim
from winit_jax.kinds import ParityError, at_path
from winit_jax.optim.rules import RULES, Rule
from winit_jax.optim.transforms import leaf_path, rule_transformation
from winit_jax.parity.pairing import Pairing
from winit_jax.parity.pairing.layers import tensor_prefix

# Schedulers that read a metric cannot be replayed ahead of time.
_METRIC_SCHEDULERS = ("ReduceLROnPlateau",)


def translate_optimizer(optimizer, pairing: Pairing, *, scheduler=None,
                        steps: int | None = None, clip_grad_norm: float | None = None,
                        norm_type: float = 2.0, clip_grad_value: float | None = None
                        ) -> optax.GradientTransformation:
    """The optax twin of ``optimizer.step()`` (then ``scheduler.step()``) for an nnx port.

    Use it as ``nnx.Optimizer(model, tx, wrt=nnx.Param)``. Each nnx parameter gets the
    hyperparameters of the param group its torch twin is in (through the pairs, element
    by element, so a Flax tensor made of several torch tensors works while they agree);
    an nnx parameter whose torch twin the optimiser does not hold is left as it is, as
    torch leaves it.

    Args:
      optimizer: a fresh (never stepped) ``torch.optim.SGD``, ``Adam``, ``AdamW``,
        ``RMSprop`` or ``Adagrad`` over the torch module's parameters.
      pairing: ``parity.pair(torch_module, model)``: the torch original and its nnx port.
      scheduler: a torch LR scheduler on ``optimizer`` whose rates do not depend on a
        metric; its sequence (lr, momentum, betas: every number in the groups) is recorded
        by stepping a copy ``steps`` times, so lambdas, ``SequentialLR``, ``OneCycleLR``
        and warm restarts are replayed exactly.
      steps: how many optimiser steps to record (needed with ``scheduler``). An update
        past them gives NaN parameters rather than a guessed rate.
      clip_grad_norm: ``torch.nn.utils.clip_grad_norm_(params, max_norm, norm_type)``
        before each step (over every parameter, with torch's ``+ 1e-6``).
      norm_type: the norm's order (``float("inf")`` for the largest magnitude).
      clip_grad_value: ``torch.nn.utils.clip_grad_value_(params, clip_value)``.

    Returns:
      An ``optax.GradientTransformation`` over ``nnx.state(model, nnx.Param)``.

    Raises:
      ParityError: an optimiser or option this cannot translate exactly, a scheduler
        that needs a metric, ``scheduler`` without ``steps``, an optimiser that has
        already stepped, a parameter of a group with no nnx twin, or one nnx tensor fed
        by torch tensors of groups whose hyperparameters differ.

    Examples:
        opt = torch.optim.AdamW(net.parameters(), lr=1e-3)
        tx = winit_jax.parity.translate_optimizer(opt, winit_jax.parity.pair(net, port))
        nnx_opt = nnx.Optimizer(port, tx, wrt=nnx.Param)
    """
    if not isinstance(pairing, Pairing):
        raise ParityError(f"pairing: must come from winit_jax.parity.pair(torch_module, "
                          f"model), got {type(pairing).__name__}")
    if clip_grad_norm is not None and clip_grad_value is not None:
        raise ParityError("clip_grad_norm and clip_grad_value: pass one (torch "
                          "applies whichever the training loop calls)")
    rule, flags = _rule(optimizer)
    table = _record(optimizer, scheduler, steps, rule)
    labels = _labels(optimizer, pairing, table)
    tx = _transformation(rule, flags, table, labels, scheduled=scheduler is not None)
    if clip_grad_norm is not None:
        return optax.chain(optim.clip_grad_norm(clip_grad_norm, norm_type=norm_type), tx)
    if clip_grad_value is not None:
        return optax.chain(optim.clip_grad_value(clip_grad_value), tx)
    return tx


def translate_schedule(scheduler, steps: int, *, group: int = 0,
                       hyperparameter: str = "lr") -> optax.Schedule:
    """A torch LR scheduler as an optax schedule: the value of ``hyperparameter`` in param
    group ``group`` at each of ``steps`` optimiser steps, recorded by stepping a copy of the
    scheduler (lambdas, ``SequentialLR``, ``OneCycleLR``: whatever it computes), replayed
    by ``winit_jax.optim.replay`` (NaN past the record).

    Args:
      scheduler: a torch scheduler that does not read a metric, on a fresh optimiser.
      steps: how many steps to record.
      group: the param group.
      hyperparameter: "lr", "momentum", "beta1", "beta2", ... (the optimiser's numbers).

    Returns:
      An ``optax.Schedule`` (``count -> value``), float64 under ``jax_enable_x64``.

    Raises:
      ParityError: a scheduler on a metric, ``steps`` < 1, a group or hyperparameter the
        optimiser does not have.

    Examples:
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=0.1, total_steps=100)
        tx = winit_jax.optim.sgd(translate_schedule(sched, 100), momentum=0.9)
    """
    optimizer = getattr(scheduler, "optimizer", None)
    if optimizer is None:
        raise ParityError(f"scheduler: {type(scheduler).__name__} has no optimizer")
    rule, _ = _rule(optimizer)
    if hyperparameter not in rule.numbers:
        raise ParityError(f"hyperparameter: {rule.name} has {', '.join(rule.numbers)}, not "
                          f"{hyperparameter!r}")
    if not 0 <= group < len(optimizer.param_groups):
        raise ParityError(f"group: the optimiser has {len(optimizer.param_groups)} param "
                          f"groups, not a group {group}")
    table = _record(optimizer, scheduler, steps, rule)
    return optim.replay(table[:, group, rule.numbers.index(hyperparameter)])


def _rule(optimizer) -> tuple[Rule, dict]:
    name = type(optimizer).__name__
    rule = RULES.get(name)
    if rule is None or type(optimizer).__module__.split(".")[:2] != ["torch", "optim"]:
        raise ParityError(f"optimizer: {type(optimizer).__module__}.{name} is not translated "
                          f"(supported: torch.optim.{', torch.optim.'.join(RULES)})")
    # Adagrad makes its state (step 0) in its constructor; the others at their first step
    stepped = [s for s in optimizer.state.values() if float(s.get("step", 1)) > 0]
    if stepped:
        raise ParityError(f"optimizer: this {name} has already stepped ({len(stepped)} "
                          "tensors hold state); pass a fresh one")
    flags = {}
    for flag in rule.flags:
        values = {bool(g.get(flag, False)) for g in optimizer.param_groups}
        if len(values) > 1:
            raise ParityError(f"optimizer: {name}'s {flag} differs between param groups "
                              "(translated only when every group agrees)")
        flags[flag] = values.pop()
    for group in optimizer.param_groups:
        if any(p.is_complex() for p in group["params"]):
            raise ParityError(f"optimizer: {name} holds complex parameters (not translated)")
    return rule, flags


def _numbers(group, rule: Rule) -> list[float]:
    out = []
    for key in rule.numbers:
        if key in ("beta1", "beta2"):
            value = group["betas"][key == "beta2"]
        else:
            value = group[key]
        out.append(float(value))
    return out


def _record(optimizer, scheduler, steps, rule: Rule) -> np.ndarray:
    """(steps or 1, groups, numbers): every numeric hyperparameter of every group at each
    optimiser step, read from a stepped copy of the optimiser and scheduler."""
    if scheduler is None:
        return np.array([[_numbers(g, rule) for g in optimizer.param_groups]], np.float64)
    kind = type(scheduler).__name__
    if kind in _METRIC_SCHEDULERS:
        raise ParityError(f"scheduler: {kind} steps on a metric, so its rates cannot be "
                          "recorded ahead of training; not translated")
    if getattr(scheduler, "optimizer", None) is not optimizer:
        raise ParityError(f"scheduler: this {kind} is not attached to the optimizer passed")
    if steps is None or int(steps) < 1:
        raise ParityError(f"steps: a scheduler ({kind}) is recorded for a given number of "
                          f"optimiser steps; pass steps >= 1 (got {steps})")
    opt, sched = copy.deepcopy((optimizer, scheduler))
    rows = []
    with warnings.catch_warnings():
        # stepping a scheduler before its optimiser warns; the copy's optimiser never steps
        warnings.simplefilter("ignore", UserWarning)
        for _ in range(int(steps)):
            rows.append([_numbers(g, rule) for g in opt.param_groups])
            sched.step()
    return np.array(rows, np.float64)


def _torch_names(torch_module) -> dict[int, str]:
    return {id(p): n for n, p in torch_module.named_parameters()}


def _labels(optimizer, pairing, table) -> dict[str, np.ndarray]:
    """nnx parameter path -> the param group of each element (-1: the optimiser does not
    hold its torch twin), found by marking each torch tensor with NaN and reading where
    the NaN lands in the converted Flax values."""
    import torch

    group_of = {id(p): k for k, g in enumerate(optimizer.param_groups) for p in g["params"]}
    names = _torch_names(pairing.torch_module)
    for k, g in enumerate(optimizer.param_groups):
        for p in g["params"]:
            if id(p) not in names:
                raise ParityError(f"optimizer: param group {k} holds a tensor of shape "
                                  f"{tuple(p.shape)} that is not a parameter of torch_module "
                                  "(no nnx twin)")
    paths = {id(v): "/".join(map(str, path)) for path, v in nnx.iter_graph(pairing.model)
             if isinstance(v, nnx.Param)}
    labels: dict[str, np.ndarray] = {}
    source: dict[tuple[str, int], str] = {}   # (nnx path, group) -> a torch tensor from it
    paired_ids = set()
    for pair in pairing:
        prefix = tensor_prefix(pair)
        for name, tensor in pair.torch_module.named_parameters():
            paired_ids.add(id(tensor))
            if id(tensor) not in group_of:
                continue
            group = group_of[id(tensor)]
            saved = tensor.detach().clone()
            try:
                with torch.no_grad():
                    tensor.fill_(float("nan"))
                values = pair.kind.to_flax(pair.torch_module, pair.flax_layer)
            finally:
                with torch.no_grad():
                    tensor.copy_(saved)
            for sub, value in values.items():
                hit = np.isnan(np.asarray(value))
                if not hit.any():
                    continue
                var = at_path(pair.flax_layer, sub)
                whole = getattr(var, "variable", var)
                path = paths[id(whole)]
                if path not in labels:
                    labels[path] = np.full(np.shape(whole.get_value()), -1, np.int32)
                view = labels[path][var.k] if whole is not var else labels[path]
                for old in np.unique(view[hit]):
                    if old >= 0 and old != group and not np.array_equal(table[:, old],
                                                                        table[:, group]):
                        raise ParityError(
                            f"optimizer: nnx {path} is made of torch {source[(path, old)]} "
                            f"(param group {old}) and {prefix}{name} (param group {group}), "
                            "whose hyperparameters differ; put them in one group")
                view[hit] = group
                source[(path, group)] = prefix + name
    for k, g in enumerate(optimizer.param_groups):
        for p in g["params"]:
            if id(p) not in paired_ids:
                raise ParityError(f"optimizer: param group {k} holds torch {names[id(p)]}, "
                                  "which no paired layer holds (no nnx twin)")
    return labels


def _transformation(rule: Rule, flags: dict, table: np.ndarray, labels: dict,
                    scheduled: bool) -> optax.GradientTransformation:
    """The optax pieces: where each nnx tensor's elements all come from one param group,
    ``optax.partition`` over the groups, each group torch's rule (``winit_jax.optim``) with
    its recorded hyperparameters (numbers, or ``optim.replay`` schedules), and
    ``optax.set_to_zero`` for tensors no group holds; where one tensor's elements come
    from several groups (torch's ``bias_ih`` and ``bias_hh`` in Flax's one bias), one
    transformation that reads each element's group."""
    whole = {path: int(label.flat[0]) for path, label in labels.items()
             if label.size and (label == label.flat[0]).all()}
    if len(whole) == len(labels):
        groups = {}
        for k in range(table.shape[1]):
            numbers = {name: (optim.replay(table[:, k, i]) if scheduled
                              else float(table[0, k, i]))
                       for i, name in enumerate(rule.numbers)}
            groups[f"group {k}"] = rule_transformation(
                rule, flags, lambda path, like, count, h=numbers: (
                    {n: v(count) if callable(v) else v for n, v in h.items()}, None))
        groups["not optimised"] = optax.set_to_zero()

        def group_of(params):
            return jax.tree_util.tree_map_with_path(
                lambda kp, _: (f"group {whole[path]}" if whole.get(path := leaf_path(kp), -1)
                               >= 0 else "not optimised"), params)
        return optax.partition(groups, group_of)
    n_steps = table.shape[0]

    def hyper(path, like, t):
        """Each element's own group's hyperparameters at step ``t`` (NaN past the
        record), the mask of elements no group holds; None for a tensor it does not hold."""
        label = labels.get(path)
        if label is None or (label < 0).all():
            return None
        row = jnp.asarray(table)[jnp.minimum(t, n_steps - 1)]
        if scheduled:
            row = jnp.where(t < n_steps, row, jnp.nan)
        index = jnp.asarray(np.maximum(label, 0))
        frozen = jnp.asarray(label < 0) if (label < 0).any() else None
        return {k: row[:, i][index] for i, k in enumerate(rule.numbers)}, frozen

    return rule_transformation(rule, flags, hyper)
