"""The training steps of a float32 check, run again in float64 in both frameworks: where
float32 rounding swamps what the steps changed, float64's does not, so an optimiser or
schedule slip (weight decay on every tensor, a mask keyed on the wrong name) fails at the
step it first acts. The port's state is cast to float64 for the run and restored after it;
torch's float64 copy is the one the float32 steps already train, and a second one, started
one float64 ulp away, measures how far float64 rounding alone carries the training."""

from __future__ import annotations

import dataclasses

import numpy as np
from flax import nnx

from winit_jax.parity.jaxprs import float32_results
from winit_jax.parity.pairing.layers import torch_layers
from winit_jax.parity.pairing.transfer import torch_values
from winit_jax.parity.report import TOLERANCES
from winit_jax.parity.run import Run, first_line, float32_parts
from winit_jax.parity.stats import rel_gap

PART = "step (float64)"
# where the update itself runs partly in float32: 16 float32 ulps
FLOAT32_FLOOR = 16 * float(np.finfo(np.float32).eps)


@dataclasses.dataclass
class Trajectory:
    """The port's float64 run: its loss per step and its tensors after the steps (torch's
    names and layout), or None and why not."""

    losses: list[float] | None
    values: dict | None
    note: str = ""
    floor: float = TOLERANCES["float64"]["step"]
    moved: object = None  # torch's float64 copy started one ulp away (set by the stage)


def move_one_ulp(module) -> None:
    """Moves every floating parameter and buffer of a float64 torch module by one ulp, up or
    down at random (a fixed seed): a start that float64 rounding could have given."""
    import torch

    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for t in list(module.parameters()) + list(module.buffers()):
            if t.is_floating_point():
                sign = torch.randint(0, 2, t.shape, generator=g).to(t.dtype) * 2 - 1
                t.copy_(torch.nextafter(t, t + sign))


def _float64(tree):
    import jax
    import jax.numpy as jnp

    return jax.tree.map(lambda a: a.astype(jnp.float64)
                        if hasattr(a, "dtype") and jnp.issubdtype(a.dtype, jnp.floating)
                        else a, tree)


def float64_trajectory(run: Run, training) -> Trajectory:
    """The port trained in float64 on the check's batches (train mode as set), with the
    translation of torch's optimiser made under x64 (or the porter's ``tx``); the port's
    variables are restored whatever happens."""
    import jax
    import jax.numpy as jnp

    variables = [(v, v.get_value()) for _, v in nnx.iter_graph(run.model)
                 if isinstance(v, nnx.Variable)]
    # nnx layers fix their compute dtype when built (nnx.Embed: its embedding's): those set
    # to float32 compute in float64 for the run, as their parameters do
    settings = [(m, name, getattr(m, name)) for _, m in nnx.iter_modules(run.model)
                for name in ("dtype", "param_dtype")
                if getattr(m, name, None) is not None and np.dtype(getattr(m, name)) == np.float32]
    call, out_f, static = run.call, run.out_f, run.inputs.flax_static()
    try:
        # standard promotion: flax's norms promote float64 with float32 in their statistics,
        # an error under strict promotion in any float64 nnx model
        with jax.enable_x64(True), jax.numpy_dtype_promotion("standard"):
            for v, value in variables:
                if getattr(value, "dtype", None) == jnp.float32:
                    v.set_value(jnp.asarray(value, jnp.float64))
            for m, name, _ in settings:
                setattr(m, name, jnp.float64)
            opt_t, sched_t = training.torch(run.torch_module)  # a fresh one, to translate
            tx = training.port(run.paired, opt_t, sched_t, len(run.schedule))
            params = nnx.state(run.model, nnx.Param)
            low = float32_results(jax.make_jaxpr(tx.update)(params, tx.init(params), params))
            note, floor = "", TOLERANCES["float64"]["step"]
            if low:  # optax's own transformations: their int32 step count gives float32
                floor = FLOAT32_FLOOR
                note = ("the optimiser's update computes partly in float32 even with float64 "
                        f"parameters ({', '.join(sorted(set(low))[:4])}; optax's int32 step "
                        "count): the float64 steps are judged at float32 precision (floor "
                        f"{floor:.2g}); winit_jax.optim's transformations run in float64")
            # a port that computes part of its forward in float32 whatever its parameters
            # (a softmax or norm statistics upcast to float32 and cast back): float32's floor
            probe = nnx.clone(run.model)
            probe.eval()
            graph, state = nnx.split(probe)
            args0, arrays0 = _float64(run.schedule[0].flax_arrays())
            forward32 = float32_results(jax.make_jaxpr(
                lambda st, a, k: out_f(nnx.merge(graph, st)(*a, **k, **static)))(
                    state, args0, arrays0))
            if forward32:
                floor = max(floor, FLOAT32_FLOOR)
                note = "; ".join(x for x in (note, (
                    f"the port computes {len(forward32)} values of its forward in float32 even "
                    f"with float64 parameters ({', '.join(sorted(set(forward32))[:4])}): the "
                    f"float64 steps are judged at float32 precision (floor {floor:.2g})")) if x)
            opt = nnx.Optimizer(run.model, tx, wrt=nnx.Param)

            @nnx.jit
            def step(model, opt, args, kwargs, c):
                val, g = nnx.value_and_grad(
                    lambda m: call(out_f(m(*args, **kwargs, **static)), c))(model)
                opt.update(model, g)
                return val

            losses = []
            for batch in run.schedule:
                args, arrays = _float64(batch.flax_arrays())
                val = step(run.model, opt, args, arrays, _float64(batch.targets_flax))
                if val.dtype != jnp.float64:
                    return Trajectory(None, None, "the port computes in float32 even with "
                                      "float64 parameters and inputs (its loss is "
                                      f"{val.dtype}): the float64 steps are not compared")
                losses.append(float(val))
            values = {k: np.asarray(v) for k, v in torch_values(run.paired, "flax").items()}
            return Trajectory(losses, values, note, floor)
    except Exception as e:  # a port that cannot run in float64: the float32 verdict stands
        return Trajectory(None, None, f"the port does not train in float64 ({type(e).__name__}"
                          f": {first_line(e)}): the float64 steps are not compared")
    finally:
        for v, value in variables:
            v.set_value(value)
        for m, name, value in settings:
            setattr(m, name, value)


def float64_checks(found, run: Run, trajectory: Trajectory, ref, judged, tensor_checks) -> None:
    """Adds the float64 steps' checks (part ``"step (float64)"``) to ``found``: each loss
    and each tensor after the steps, the port's float64 run against torch's, the tolerance
    10x the distance between torch's two float64 runs (one started an ulp away), floored at
    the float64 step tolerance; what the steps barely moved is not tested, as in float32."""
    if trajectory.note:
        found.notes.append(trajectory.note)
    if trajectory.losses is None:
        return
    floor = trajectory.floor
    first32, _ = float32_parts(ref, run.inputs, float64=True)
    if first32 is not None:  # torch's float64 copy runs that part in float32 (diffusers)
        floor = max(floor, FLOAT32_FLOOR)
        found.notes.append(f"torch runs {first32} in float32 in its float64 copy: the float64 "
                           f"steps are judged at float32 precision (floor {floor:.2g})")
    torch64 = found.curves["torch_float64"]
    moved = found.curves["torch_float64_moved"]
    parted = None
    for s, (mine, theirs, other) in enumerate(zip(trajectory.losses, torch64, moved)):
        noise = rel_gap(other, theirs)
        signal = rel_gap(theirs, torch64[0]) if s else float("inf")
        c = judged(PART, f"loss {s}", rel_gap(mine, theirs), noise, floor, signal,
                   f"|diff| / |torch float64 loss|; torch's float64 runs an ulp apart: "
                   f"{noise:.2g}")
        found.checks.append(c)
        if parted is None and c.outcome.value == "failed":
            parted = s
            found.notes.append(f"in float64 the port's training parts from torch's at step {s}:"
                               f" loss {mine:.10g} vs torch {theirs:.10g}")
    theirs = torch_values(run.paired, "torch", dict(torch_layers(ref)))
    other = torch_values(run.paired, "torch", dict(torch_layers(trajectory.moved)))
    tensor_checks(trajectory.values, theirs, other, floor, PART, "batch_stats (float64)",
                  "torch's float64 runs an ulp apart")


__all__ = ["PART", "Trajectory", "float64_checks", "float64_trajectory", "move_one_ulp"]
