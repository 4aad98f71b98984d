"""Randomness found by behaviour: each model run twice on the same inputs from the same
weights, with different random draws (torch: two generator seeds, its RNG state restored
afterwards; the port: two ``nnx.Rngs`` keys). Where the outputs differ, the model draws
random numbers in that mode (dropout, torchvision's ``StochasticDepth``, timm's
``DropPath``, ``F.dropout`` in a forward, ``RReLU``, noise injection), and the two
frameworks can never draw the same ones: ``check`` refuses, naming the first module whose
output differs. The class table in ``winit_jax.kinds.stochastic`` stays as the fast path.
"""

from __future__ import annotations

import copy

import jax
import numpy as np
from flax import nnx

from winit_jax.kinds import ParityError
from winit_jax.parity.io import Batch, flax_call, leaves


def _torch_outputs(module, batch: Batch, seed: int) -> list[tuple[str, str, object]]:
    """``(name, class, output)`` of every module call in call order, and the model's own
    output last, from one forward pass with torch's generator seeded ``seed``."""
    import torch

    events, handles = [], []
    for name, m in module.named_modules():
        def hook(mod, inp, out, name=name):
            found = leaves(out)
            if found:
                events.append((name or "<root>", type(mod).__name__,
                               [v.detach().double().numpy().copy() for v in found.values()]))
        handles.append(m.register_forward_hook(hook))
    try:
        torch.manual_seed(seed)
        with torch.no_grad():
            batch.torch_call(module)
    finally:
        for h in handles:
            h.remove()
    return events


def _differs(a, b) -> bool:
    return len(a) != len(b) or any(x.shape != y.shape or not np.array_equal(x, y)
                                   for x, y in zip(a, b))


def torch_random(torch_module, batch: Batch, *, train: bool) -> str | None:
    """The first module (in call order) whose output differs between two runs in this mode,
    as ``"name (Class)"``; None when the runs agree. The module, its buffers and torch's RNG
    state are left as they were."""
    import torch

    probe = copy.deepcopy(torch_module).train(train)  # BatchNorm's statistics move
    state = torch.get_rng_state()
    try:
        first = _torch_outputs(probe, batch, 1)
        second = _torch_outputs(probe, batch, 2)
    finally:
        torch.set_rng_state(state)
    for (name, kind, a), (_, _, b) in zip(first, second):
        if _differs(a, b):
            return f"{name} ({kind})"
    return None


def flax_random(model, batch: Batch, *, train: bool) -> bool:
    """Whether the port's output differs between two runs with different ``nnx.Rngs`` keys
    in this mode (the port itself is not changed)."""
    outs = []
    for seed in (1, 2):
        clone = nnx.clone(model)  # its own variables: BatchNorm's statistics move
        (clone.train if train else clone.eval)()
        for _, var in nnx.iter_graph(clone):
            if isinstance(var, nnx.RngKey):
                shape = var.get_value().shape
                keys = jax.random.split(jax.random.key(seed), max(1, int(np.prod(shape))))
                var.set_value(keys[0] if shape == () else keys.reshape(shape))
        outs.append([np.asarray(v) for v in leaves(flax_call(clone, batch)).values()])
    return _differs(*outs)


def refuse_random(torch_module, model, batch: Batch, *, train: bool) -> None:
    """One ``ParityError`` when either model is random in this mode, naming where."""
    mode = "train" if train else "eval"
    where = torch_random(torch_module, batch, train=train)
    side = f"torch's {where}" if where else None
    if side is None and flax_random(model, batch, train=train):
        side = "the port"
    if side is not None:
        raise ParityError(
            f"{'train' if train else 'inputs'}: {side} gives different outputs on the same "
            f"inputs and weights in {mode} mode (it draws random numbers: dropout, stochastic "
            "depth, noise); the two frameworks never draw the same ones, so the comparison "
            "would be noise: set its rate to 0 for the check")


__all__ = ["flax_random", "refuse_random", "torch_random"]
