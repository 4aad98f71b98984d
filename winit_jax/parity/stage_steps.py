"""The training parts of ``check``: steps from the same start with torch's optimiser on
both torch copies and its translation (or the porter's ``tx``) on the port; BatchNorm
statistics; dropout that train mode would switch on."""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable

import numpy as np
from flax import nnx

from winit_jax.kinds import ParityError
from winit_jax.parity.jaxprs import float32_results
from winit_jax.parity.kinks import port_kinks
from winit_jax.parity.optimizer import translate_optimizer
from winit_jax.parity.pairing.layers import tensor_prefix, torch_layers
from winit_jax.parity.pairing.transfer import torch_values
from winit_jax.parity.report import (
    Check,
    Outcome,
)
from winit_jax.parity.run import (
    Findings,
    Run,
    first_line,
    torch_outputs_and_grads,
)
from winit_jax.parity.single_steps import single_step_checks, superseded
from winit_jax.parity.stats import rel_gap
from winit_jax.parity.steps64 import PART as PART64
from winit_jax.parity.steps64 import float64_checks as _float64_checks
from winit_jax.parity.steps64 import float64_trajectory
from winit_jax.parity.steps64 import move_one_ulp as _move_one_ulp
from winit_jax.parity.tolerance import (
    compared,
    demoted,
    exact_zeros,
    measured,
    moving_entries,
    rounding_dominates,
)

# A step check whose measured tolerance exceeds this fraction of what the steps changed
# could not fail a port whose training is that fraction off (a learning rate or a loss 10 %
# off moves the loss and the tensors by about 10 % of their change over the steps).
CHAOS_FRACTION = 0.1


# nnx's float32 BatchNorm statistics in a float64 model: compared at float32's precision
# (16 ulps of the statistic's scale: a few roundings per update over the steps)
STAT_ULPS = 16


@dataclasses.dataclass(frozen=True)
class Training:
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
                    f" calling it raised TypeError: {first_line(e)}") from None
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


def _float64_gradients(run: Run, ref) -> dict:
    probe = copy.deepcopy(ref if ref is not None else run.torch_module)  # its BN stats move
    _, grads = torch_outputs_and_grads(run, probe, run.schedule[0], float64=True,
                                       layers=dict(torch_layers(probe)))
    return grads


def step_stage(run: Run, ref, train, training: Training) -> Findings:
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
    grads64 = _float64_gradients(run, ref)
    zero, moving = exact_zeros(grads64), moving_entries(grads64)
    start = torch_values(run.paired, "torch")
    trajectory64 = None
    if run.dtype == "float32" and ref is not None:
        # the same steps in float64 in both frameworks, where rounding cannot hide a slip:
        # the port's (its state cast, then restored), and a second float64 torch run from a
        # start moved by one float64 ulp, whose distance from the first measures how far
        # float64 rounding alone carries the training (chaos)
        trajectory64 = float64_trajectory(run, training)
        moved = trajectory64.moved = copy.deepcopy(ref)
        _move_one_ulp(moved)
        runs.append((moved, True))
        made.append(training.torch(moved))
        opts, scheds = [o for o, _ in made], [s for _, s in made]
    tx = training.port(run.paired, opts[0], scheds[0], len(run.schedule))
    opt_f = nnx.Optimizer(run.model, tx, wrt=nnx.Param)
    call, out_f, static = run.call, run.out_f, run.inputs.flax_static()

    @nnx.jit
    def step(model, opt, args, kwargs, c):
        val, g = nnx.value_and_grad(lambda m: call(out_f(m(*args, **kwargs, **static)), c))(
            model)
        opt.update(model, g)
        return val

    names = ["torch", "torch_float64", "torch_float64_moved"][:len(runs)]
    found = Findings(curves={n: [] for n in ["torch", "flax", *names[1:]]})
    if trajectory64 is not None and trajectory64.losses is not None:
        found.curves["flax_float64"] = trajectory64.losses
    states = []  # torch's float32 state before each step, for the single steps
    for batch in run.schedule:
        if trajectory64 is not None:
            states.append(copy.deepcopy(run.torch_module.state_dict()))
        for (m, is_float64), opt, sched, n in zip(runs, opts, scheds, names):
            opt.zero_grad()
            value = call(run.torch_out(batch.torch_call(m, float64=is_float64)),
                         batch.torch_targets(float64=is_float64))
            value.backward()
            if training.clip is not None:
                torch.nn.utils.clip_grad_norm_(m.parameters(), training.clip)
            opt.step()
            if sched is not None:
                sched.step()
            found.curves[n].append(value.item())
        found.curves["flax"].append(float(step(run.model, opt_f, *batch.flax_arrays(),
                                               batch.targets_flax)))
    chaotic, chaotic_failed, free_failed = [], set(), set()

    def judged(part, name, gap, noise, floor, signal, how, extra=0.0):
        """A check. A pass is claimed only where the tolerance could have seen a port that
        trains CHAOS_FRACTION off; otherwise it is inconclusive (float32 rounding swamps
        what the steps changed) or not tested (the steps barely moved it); a failure stays
        one. ``extra`` widens the final tolerance only (a known bias, e.g. Bessel's)."""
        tol = measured(noise, floor)
        check = compared(part, name, gap, tol + extra, how)
        if (check.outcome is Outcome.FAILED and part in ("step", "batch_stats")
                and tol > CHAOS_FRACTION * signal and rounding_dominates(noise, floor)):
            chaotic_failed.add((part, name))  # free-running chaos: judged elsewhere if can be
        elif check.outcome is Outcome.FAILED and part in ("step", "batch_stats"):
            free_failed.add((part, name))  # float32 rounding's doing, if float64 agrees
        if gap <= tol and tol > CHAOS_FRACTION * signal:
            chaos = rounding_dominates(noise, floor)
            if chaos:
                chaotic.append(name)
            why = "float32 rounding swamps the training" if chaos else "the steps barely moved it"
            return demoted(check, Outcome.INCONCLUSIVE if chaos else Outcome.NOT_TESTED,
                           f"not tested: the tolerance is more than {CHAOS_FRACTION:g} of what "
                           f"the steps changed ({signal:.2g}), {why}")
        return check

    lt, lf = found.curves["torch"], found.curves["flax"]
    for s in range(len(lt)):
        noise = rel_gap(lt[s], found.curves["torch_float64"][s]) if ref is not None else 0.0
        signal = rel_gap(lt[s], lt[0]) if s else float("inf")  # step 0 is the forward
        found.checks.append(judged(
            "step", f"loss {s}", rel_gap(lf[s], lt[s]), noise, run.tol["step"], signal,
            f"|diff| / |torch loss|; torch's own float32 gap {noise:.2g}"))
    ours = torch_values(run.paired, "flax")
    theirs = torch_values(run.paired, "torch")
    float64 = (torch_values(run.paired, "torch", dict(torch_layers(ref))) if ref is not None
            else theirs)
    stats = _batch_statistics(run.paired)
    n_per_channel = _values_per_channel(run.torch_module, run.paired, run.schedule[-1])
    eps32 = float(np.finfo(np.float32).eps)

    def tensor_checks(ours, theirs, reference, floor, steps_part, stats_part, source):
        """A check per torch tensor after the steps: ``ours`` against ``theirs``, the noise
        ``theirs`` against ``reference`` (``source`` says what that gap is)."""
        for k, t in theirs.items():
            mine, ref_k, start_k, left_out = ours[k], (reference[k] if reference is not None
                                                       else None), start[k], ""
            m = moving.get(k)
            if m is not None and np.shape(mine) == np.shape(m) == np.shape(t):
                # entries that only rounding noise moves (an in-projection's key biases),
                # which Adam scales up differently on each side: compared without them
                mine, t, start_k = (np.asarray(a)[m] for a in (mine, t, start_k))
                ref_k = None if ref_k is None else np.asarray(ref_k)[m]
                left_out = f"; {int((~m).sum())} entries with a zero exact gradient left out"
            noise = rel_gap(t, ref_k) if ref_k is not None else 0.0
            gap, signal = rel_gap(mine, t), rel_gap(t, start_k)
            floor_k = floor
            how = f"after {len(run.schedule)} steps; {source} {noise:.2g}{left_out}"
            if ours[k].dtype == np.float32 and np.asarray(t).dtype == np.float64:
                # nnx keeps BatchNorm statistics in float32 whatever param_dtype
                floor_k = max(floor_k, STAT_ULPS * eps32)
                how += f"; nnx holds it in float32: floor {STAT_ULPS} float32 ulps"
            if stats.get(k, (None,))[0] == "var":
                bessel = 1.0 / max(1, n_per_channel(k) - 1)
                found.checks.append(judged(
                    stats_part, k, gap, noise, floor_k, signal,
                    f"{how}; + 1/(n-1) = {bessel:.2g}: Flax uses the biased batch variance, "
                    "torch the unbiased", extra=bessel))
            elif stats.get(k, (None,))[0] == "mean":
                # relative to the larger of its own scale and its input's spread: a mean that
                # is zero in exact arithmetic (after a bias-free conv of a zero-mean input)
                # is rounding noise, which is small against the spread, not against itself
                var = theirs.get(stats[k][1])
                spread = float(np.sqrt(np.max(var))) if var is not None else 0.0
                scale = max(float(np.max(np.abs(t))), spread)
                if scale > float(np.max(np.abs(t))):
                    gap = float(np.max(np.abs(np.asarray(mine, np.float64) - t))) / scale
                    how += f"; relative to its input's spread sqrt(running_var) {spread:.2g}"
                found.checks.append(judged(stats_part, k, gap, noise, floor_k, signal, how))
            elif k in zero:
                found.checks.append(Check(
                    steps_part, k, Outcome.NOT_TESTED, measured(noise, floor_k), gap=gap,
                    how=f"not tested: its gradient is zero in exact arithmetic ({zero[k]}), "
                    "so " + (f"{kind} divides that rounding noise by its own scale"
                             if kind != "SGD" else "only rounding noise moves it")
                    + ", on both sides"))
            else:
                found.checks.append(judged(steps_part, k, gap, noise, floor_k, signal, how))

    tensor_checks(ours, theirs, float64 if ref is not None else None, run.tol["step"], "step",
                  "batch_stats", "torch's own float32 gap")
    if trajectory64 is not None:
        _float64_checks(found, run, trajectory64, ref, judged, tensor_checks)
    if run.dtype == "float64" and any(c.outcome is Outcome.FAILED for c in found.checks
                                      if c.part in ("step", "batch_stats")):
        low = _float32_in_update(tx, run.model)
        if low:
            why = ("the optimiser's update computes in float32 in this float64 check "
                   f"({len(low)} float32 results: {', '.join(sorted(set(low))[:4])}; e.g. a "
                   "learning-rate schedule evaluated on optax's int32 step count)")
            found.notes.append(f"{why}: its steps are float32-precise, which float64 "
                               "tolerances reject; evaluate the schedule on a float64 count "
                               "(winit_jax.optim's transformations do) or give a float64 rate")
            found.checks = [dataclasses.replace(c, how=f"{c.how}; {why}")
                            if c.outcome is Outcome.FAILED and c.part == "step" else c
                            for c in found.checks]
    amplified = set()
    if trajectory64 is not None and trajectory64.losses is not None:
        # free-running float32 failures where the same steps in float64 agree: the port's
        # float32 rounding, not its mathematics, parts it from torch's, amplified by training
        # (Adam's update of a near-zero gradient is about +-lr whatever its size, so a
        # rounding that flips its sign moves the entry by 2 lr) or flipped at a kink (one
        # ReLU6 flip in step 0 put a faithful MobileNetV2's loss 1 1.2 % off); the single
        # steps judge each step instead, where rounding cannot compound
        agree64 = {(c.part.replace(" (float64)", ""), c.name)
                   for c in found.checks if c.part in (PART64, "batch_stats (float64)")
                   and c.outcome is Outcome.PASSED}
        amplified = free_failed & agree64
        chaotic_failed |= amplified
    judged_otherwise = False
    if trajectory64 is not None:
        # each step from torch's own float32 state: rounding cannot compound there
        found.checks += single_step_checks(run, states, train, zero, stats, n_per_channel,
                                           port_kinks(run, run.inputs))
        if trajectory64.losses is not None:  # the float64 steps judge the optimiser's part
            judged_otherwise = bool(chaotic)
            found.checks = superseded(found.checks, chaotic_failed)
    parted = next((int(c.name.split()[1]) for c in found.checks if c.part == "step"
                   and c.name.startswith("loss ") and c.outcome is Outcome.FAILED), None)
    if parted is not None:
        found.notes.insert(0, f"training parts from torch's at step {parted}: loss "
                           f"{lf[parted]:.6g} vs torch {lt[parted]:.6g}" + (
                               " (the losses before the first update differ: check the "
                               + ("train-mode forward: batch statistics, dropout)" if train
                                  else "forward)") if parted == 0 else
                               f" (after {parted} update(s); torch's optimiser: {kind})"))
    if amplified:
        found.notes.append(
            f"{len(amplified)} free-running float32 step checks are not tested: the port's "
            "float32 run parts from torch's beyond tolerance while the same steps in float64 "
            "agree (float32 rounding amplified by the training, e.g. Adam on near-zero "
            "gradients, or flipped at a kink); the single steps (from torch's float32 state) "
            "judge each step instead. Not covered: a slip of precision in the optimiser's "
            "update alone")
    if chaotic:
        found.notes.append(
            f"{len(chaotic)} free-running float32 step checks "
            + ("are not tested" if judged_otherwise else "are inconclusive")
            + ": torch's own float32 run is so far from its float64 one that the tolerance "
            f"exceeds {CHAOS_FRACTION:g} of what the steps changed (chaotic training); "
            + ("the single steps (from torch's float32 state) and the float64 steps judge the "
               "training instead" if judged_otherwise else
               "check with dtype float64, a smaller learning rate or fewer steps"))
    return found


def _float32_in_update(tx, model) -> list[str]:
    """The primitives of ``tx``'s update, traced on ``model``'s parameters, that give
    float32 results."""
    import jax

    params = nnx.state(model, nnx.Param)
    jaxpr = jax.make_jaxpr(tx.update)(params, tx.init(params), params)
    return float32_results(jaxpr)


def _batch_statistics(paired) -> dict[str, tuple[str, str | None]]:
    """torch tensor name -> (its role, "mean" or "var"; the name of the layer's running
    variance) for every running statistic the pairs' kinds declare (``Kind.batch_stats``)."""
    out = {}
    for p in paired:
        prefix, roles = tensor_prefix(p), p.kind.batch_stats or {}
        var = next((prefix + n for n, r in roles.items() if r == "var"), None)
        out.update({prefix + n: (role, var) for n, role in roles.items()})
    return out


def _values_per_channel(torch_module, paired, batch):
    """name of a layer's running variance -> n, the values per channel of that layer's
    input (every axis but the channel's), read with forward hooks on one eval-mode pass,
    for the pairs whose kind keeps running statistics."""
    import torch

    sizes, hooks = {}, []
    for p in paired:
        for n, role in (p.kind.batch_stats or {}).items():
            if role != "var" or not isinstance(p.torch_module, torch.nn.Module):
                continue

            def hook(mod, inp, key=tensor_prefix(p) + n):  # returns None: input unchanged
                sizes.setdefault(key, inp[0].numel() // inp[0].shape[1])
            hooks.append((p.torch_module, hook))
    batch.torch_eval(torch_module, hooks)
    return lambda key: sizes.get(key, 2)
