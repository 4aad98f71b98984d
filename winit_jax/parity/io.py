"""What ``check`` feeds both models and what it compares of what they give back.

Inputs are never guessed: ``inputs`` is one array or a tuple of positional inputs (a tuple
always means several), ``kwargs`` keyword inputs given to both models, ``targets`` the
loss's targets, only ever by name. Arrays are converted (floating ones to the check's dtype;
integer ones, token ids and timesteps, stay integers); other values (``return_dict=False``,
a Python timestep) are passed to both as they are.

Outputs may be a tensor, a tuple or list, a dict, a dataclass or HF's ``ModelOutput``: every
array leaf is compared with the port's leaf of the same key, or, where one side is
positional (a tuple), of the same position. ``torch_outputs`` / ``flax_outputs`` pick or
map what is compared when the structures differ.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from winit_jax.kinds import ParityError


def is_torch(x) -> bool:
    """A torch tensor."""
    return _is_torch(x)


def _is_torch(x) -> bool:
    return type(x).__module__.startswith("torch") and hasattr(x, "detach")


def is_array(x) -> bool:
    """A torch tensor, a NumPy array or a JAX array, abstract ones included (not a Python
    scalar)."""
    return _is_torch(x) or isinstance(x, (np.ndarray, jax.Array, jax.ShapeDtypeStruct))


class Batch(NamedTuple):
    """One batch in both frameworks: the positional inputs, the keyword inputs and the
    targets in torch's form, and the port's (positional inputs through ``flax_inputs``)."""

    args_torch: tuple
    kwargs_torch: dict
    args_flax: tuple
    kwargs_flax: dict
    targets_torch: object | None
    targets_flax: object | None

    def torch_call(self, module, *, float64: bool = False):
        """``module(*inputs, **kwargs)``; floating tensors in float64 with ``float64``."""
        def cast(x):
            return x.double() if float64 and _is_torch(x) and x.is_floating_point() else x
        return module(*map(cast, self.args_torch),
                      **{k: cast(v) for k, v in self.kwargs_torch.items()})

    def torch_eval(self, module, pre_hooks=(), hooks=(), *, float64: bool = False):
        """``module`` on this batch in eval mode without gradients, ``pre_hooks``
        (``[(submodule, hook(mod, inputs))]``) and forward ``hooks`` (``hook(mod, inputs,
        output)``) watching; its mode is restored and the hooks removed whatever happens.
        Returns its output."""
        import torch

        handles = [m.register_forward_pre_hook(hook) for m, hook in pre_hooks]
        handles += [m.register_forward_hook(hook) for m, hook in hooks]
        was = module.training
        try:
            module.eval()
            with torch.no_grad():
                return self.torch_call(module, float64=float64)
        finally:
            module.train(was)
            for h in handles:
                h.remove()

    def torch_targets(self, *, float64: bool = False):
        t = self.targets_torch
        return t.double() if float64 and t is not None and t.is_floating_point() else t

    def flax_arrays(self) -> tuple[tuple, dict]:
        """The port's positional inputs and its array keyword inputs (the traced part)."""
        return self.args_flax, {k: v for k, v in self.kwargs_flax.items() if is_array(v)}

    def flax_static(self) -> dict:
        """The port's keyword inputs that are not arrays (closed over, never traced)."""
        return {k: v for k, v in self.kwargs_flax.items() if not is_array(v)}

    @property
    def size(self) -> int:
        """The batch size: the leading axis of the first array input."""
        first = next(x for x in (*self.args_torch, *self.kwargs_torch.values()) if is_array(x))
        return int(first.shape[0])

    def rows(self, rows: slice) -> "Batch":
        """The same batch, every array of batch size cut to ``rows`` (metric chunks)."""
        n = self.size

        def cut(x):
            return x[rows] if is_array(x) and x.ndim and x.shape[0] == n else x
        return Batch(tuple(map(cut, self.args_torch)),
                     {k: cut(v) for k, v in self.kwargs_torch.items()},
                     tuple(map(cut, self.args_flax)),
                     {k: cut(v) for k, v in self.kwargs_flax.items()},
                     cut(self.targets_torch), cut(self.targets_flax))


def flax_call(model, batch: Batch):
    """``model(*inputs, **kwargs)`` on the port's side."""
    return model(*batch.args_flax, **batch.kwargs_flax)


class Data:
    """Turns what the porter passed (``inputs``, ``kwargs``, ``targets``; or one item of
    ``batches``/``eval_data``) into a ``Batch``, checked against the first."""

    def __init__(self, torch_dtype, flax_inputs: Callable | tuple | None):
        self.torch_dtype, self.flax_inputs = torch_dtype, flax_inputs

    def item(self, item, what: str, like: Batch | None = None) -> Batch:
        """One item of ``batches`` or ``eval_data``: ``{"inputs": ..., "kwargs": ...,
        "targets": ...}`` (only "inputs" required)."""
        if not isinstance(item, Mapping) or "inputs" not in item:
            raise ParityError(f"{what}: each item is a dict(inputs=..., kwargs=..., "
                              f"targets=...), got {type(item).__name__}")
        extra = sorted(set(item) - {"inputs", "kwargs", "targets"})
        if extra:
            raise ParityError(f"{what}: unknown keys {extra} (inputs, kwargs, targets)")
        return self(item["inputs"], item.get("kwargs"), item.get("targets"), what, like)

    def __call__(self, inputs, kwargs, targets, what: str, like: Batch | None = None) -> Batch:
        import torch

        args = inputs if isinstance(inputs, tuple) else (inputs,)
        kwargs = dict(kwargs or {})
        args_torch = tuple(self._torch(x, torch) for x in args)
        kwargs_torch = {k: self._torch(v, torch) for k, v in kwargs.items()}
        targets_torch = None if targets is None else self._torch(targets, torch)
        if targets_torch is not None and not _is_torch(targets_torch):
            raise ParityError(f"{what}: targets must be an array, got "
                              f"{type(targets).__name__}")
        convert = self._flax_converters(len(args), what)
        args_flax = tuple(self._flax(x, f) for x, f in zip(args_torch, convert))
        kwargs_flax = {k: self._flax(v, None) for k, v in kwargs_torch.items()}
        batch = Batch(args_torch, kwargs_torch, args_flax, kwargs_flax, targets_torch,
                      None if targets_torch is None else jnp.asarray(targets_torch.numpy()))
        if like is not None:
            self._like(batch, like, what)
        if targets_torch is not None:
            n = batch.size
            if targets_torch.ndim == 0 or targets_torch.shape[0] != n:
                count = targets_torch.shape[0] if targets_torch.ndim else 0
                raise ParityError(f"{what}: {count} targets for {n} inputs")
        return batch

    def _torch(self, x, torch):
        if not is_array(x):
            return x
        t = x if _is_torch(x) else torch.as_tensor(np.asarray(x))
        return t.to(self.torch_dtype) if t.is_floating_point() else t

    def _flax_converters(self, n: int, what: str) -> list:
        f = self.flax_inputs
        if isinstance(f, tuple):
            if len(f) != n:
                raise ParityError(f"flax_inputs: {len(f)} converters for {n} positional "
                                  f"inputs ({what})")
            return list(f)
        return [f] * n

    @staticmethod
    def _flax(x, convert):
        if not is_array(x):
            return x
        value = x.detach().cpu().numpy()
        return jnp.asarray(convert(value) if convert is not None else value)

    @staticmethod
    def movable(batch: Batch) -> bool:
        """Whether ``batch`` has a real-valued positional input (what ``moved`` moves)."""
        return any(_is_torch(x) and x.is_floating_point() for x in batch.args_torch)

    def moved(self, batch: Batch, rng: np.random.Generator, step) -> Batch:
        """``batch`` with each entry of its real-valued positional inputs scaled by
        ``1 +- step`` (random signs from ``rng``); integers and keyword inputs as they are."""
        import torch

        args = []
        for x in batch.args_torch:
            if _is_torch(x) and x.is_floating_point():
                value = x.numpy()
                sign = rng.choice(np.asarray([-1, 1], value.dtype), size=value.shape)
                x = torch.from_numpy(value * (value.dtype.type(1) + step * sign))
            args.append(x)
        convert = self._flax_converters(len(args), "inputs")
        return batch._replace(args_torch=tuple(args), args_flax=tuple(
            self._flax(x, f) for x, f in zip(args, convert)))

    @staticmethod
    def _like(batch: Batch, like: Batch, what: str) -> None:
        if len(batch.args_torch) != len(like.args_torch):
            raise ParityError(f"{what}: {len(batch.args_torch)} positional inputs where "
                              f"inputs has {len(like.args_torch)}")
        if set(batch.kwargs_torch) != set(like.kwargs_torch):
            raise ParityError(f"{what}: keyword inputs {sorted(batch.kwargs_torch)} where "
                              f"kwargs has {sorted(like.kwargs_torch)}")
        pairs = list(zip(batch.args_torch, like.args_torch))
        pairs += [(batch.kwargs_torch[k], like.kwargs_torch[k]) for k in like.kwargs_torch]
        for x, y in pairs:
            if is_array(x) and is_array(y) and tuple(x.shape[1:]) != tuple(y.shape[1:]):
                raise ParityError(f"{what}: shape {tuple(x.shape)} where inputs have "
                                  f"{tuple(y.shape)} (only the batch size may differ)")
        if (batch.targets_torch is None) != (like.targets_torch is None):
            raise ParityError(f"{what}: give targets with every batch or with none (as "
                              "inputs)")


# --- outputs --------------------------------------------------------------------------------

def leaves(out, prefix: str = "") -> dict[str, object]:
    """Every array of an output, by its key: "" for a lone array; "logits", "0", "1/0" in a
    structure (a dict or ``ModelOutput``, a dataclass, a tuple or list); None and
    non-array values (a cache object, an int) are left out."""
    def key(k):
        return f"{prefix}/{k}" if prefix else str(k)
    if is_array(out):
        return {prefix: out}
    if isinstance(out, Mapping):
        items = [(k, v) for k, v in out.items()]
    elif dataclasses.is_dataclass(out) and not isinstance(out, type):
        items = [(f.name, getattr(out, f.name)) for f in dataclasses.fields(out)]
    elif isinstance(out, (tuple, list)):
        items = list(enumerate(out))
    else:
        return {}
    found = {}
    for k, v in items:
        found.update(leaves(v, key(k)))
    return found


def describe(out) -> str:
    """A one-line picture of an output's structure: ``array (2, 8, 50)``,
    ``CausalLMOutputWithCrossAttentions(logits (2, 8, 50))``, ``tuple(0 (2, 3), 1/0 (2, 5))``."""
    found = leaves(out)
    if list(found) == [""]:
        return f"array {tuple(found[''].shape)}"
    inside = ", ".join(f"{k} {tuple(v.shape)}" for k, v in list(found.items())[:6])
    more = " ..." if len(found) > 6 else ""
    return f"{type(out).__name__}({inside}{more})"


def matched(torch_out, flax_out) -> list[tuple[str, str]]:
    """``[(torch key, port key)]``: the leaves compared, in torch's order. Same keys pair by
    key; where one side is positional (a tuple) and both have as many leaves, by position;
    a lone array on each side pairs with the other.

    Raises:
      ParityError: the two structures cannot be matched (naming both).
    """
    theirs, ours = leaves(torch_out), leaves(flax_out)
    if not theirs:
        raise ParityError(f"outputs: torch's output {type(torch_out).__name__} holds no "
                          "tensor; pass torch_outputs= to pick what to compare")
    if set(theirs) == set(ours):
        return [(k, k) for k in theirs]
    positional = (all(k.split("/")[0].isdigit() for k in ours)
                  or all(k.split("/")[0].isdigit() for k in theirs))
    if len(theirs) == len(ours) and (positional or len(theirs) == 1):
        return list(zip(theirs, ours))
    raise ParityError(f"outputs: torch gives {describe(torch_out)} and the port gives "
                      f"{describe(flax_out)}; pass torch_outputs= (e.g. lambda out: "
                      "out.logits) and/or flax_outputs= so that both give the same structure")


def first_leaf(out):
    """The first array of an output (what the default loss is computed on)."""
    found = leaves(out)
    return next(iter(found.values())) if found else out


def inputs_text(batch: Batch, side: str) -> str:
    """The inputs as an error names them: shapes, and keyword names."""
    args = batch.args_torch if side == "torch" else batch.args_flax
    shapes = [tuple(x.shape) for x in args if is_array(x)]
    text = (f"shape {shapes[0]}" if len(shapes) == 1 and len(args) == 1
            else f"{len(args)} positional inputs {shapes}")
    names = sorted(batch.kwargs_torch)
    return text + (f" and keyword inputs {names}" if names else "")


def nhwc(x):
    """torch's channels-first images (N, C, H, W) in Flax's channels-last layout (N, H, W, C):
    ``check(..., flax_inputs=nhwc)``."""
    return x.transpose(0, 2, 3, 1)


def nchw(y):
    """A channels-last output back to torch's channels-first layout; (N, C) as it is:
    ``check(..., flax_outputs=nchw)``."""
    return y if y.ndim < 3 else y.transpose((0, y.ndim - 1) + tuple(range(1, y.ndim - 1)))


def first_line(e: Exception) -> str:
    """An exception's first line (its class name where it has no message)."""
    return str(e).splitlines()[0] if str(e) else type(e).__name__


__all__ = ["Batch", "Data", "describe", "first_leaf", "first_line", "flax_call", "inputs_text",
           "is_array", "leaves", "matched", "nchw", "nhwc"]
