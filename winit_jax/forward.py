"""One forward pass that shows each layer's input and output, for any ``nnx`` model.

LSUV and per-layer statistics need what a model's linear layers (the registry's kinds with
``linear_map``: Linear, LinearGeneral, Conv, ConvTranspose, and any a porter registers) see, in the order the model calls them, without a second copy of the model's forward pass.
:func:`layer_io` runs the model's own ``__call__`` once and records, for each call of a
watched layer, ``(path, layer, input, output)``; :func:`layer_input` stops the pass as soon
as one layer is reached (torch does the same with a forward pre-hook that raises).

Only the watched instances of ``model`` are affected: each is given, for the duration of
the pass, a subclass of its own class whose ``__call__`` records and then calls the
original. Pure and traceable: call it under ``jax.jit`` / ``nnx.jit`` / ``jax.vmap``.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterator
from typing import NamedTuple

import jax
from flax import nnx

from winit_jax.kinds import linear_types


class LayerCall(NamedTuple):
    """One call of a watched layer during a forward pass."""

    path: tuple
    layer: nnx.Module
    input: jax.Array
    output: jax.Array


class _Stop(Exception):
    """Raised inside the forward pass once the wanted layer's input is known."""


@functools.lru_cache(maxsize=None)
def _recording_class(cls: type) -> type:
    def __call__(self, *args, **kwargs):
        hook = self.__dict__["_winit_hook"]
        # the first input (a model called by keyword only: its first keyword input)
        x = args[0] if args else next(iter(kwargs.values()), None)
        hook.before(self, x)
        y = cls.__call__(self, *args, **kwargs)
        return hook.after(self, x, y)

    return type(cls.__name__, (cls,), {"__call__": __call__, "__module__": cls.__module__,
                                       "__qualname__": cls.__qualname__})


class _Hook:
    def __init__(self, paths, stop_before=None, on_call=None, on_output=None):
        self.paths, self.stop_before, self.calls, self.seen = paths, stop_before, [], None
        self.on_call, self.on_output = on_call, on_output

    def before(self, layer, x):
        if id(layer) not in self.paths:  # a copy made during the pass (e.g. nnx.merge)
            return
        if layer is self.stop_before:
            self.seen = x
            raise _Stop
        if self.on_call is not None:
            self.on_call(self.paths[id(layer)], layer, x)

    def after(self, layer, x, y):
        if id(layer) in self.paths:
            self.calls.append(LayerCall(self.paths[id(layer)], layer, x, y))
            if self.on_output is not None:
                return self.on_output(len(self.calls) - 1, y)
        return y


def watched_layers(model: nnx.Module, types: tuple[type, ...] | None = None
                   ) -> list[tuple[tuple, nnx.Module]]:
    """``(path, layer)`` of every module of ``model`` that is an instance of ``types``
    (default: the registry's linear kinds), in ``nnx.iter_modules`` order (by attribute
    path, not necessarily call order)."""
    types = linear_types() if types is None else types
    return [(path, m) for path, m in nnx.iter_modules(model) if isinstance(m, types)]


@contextlib.contextmanager
def _watching(model, types, stop_before=None, on_call=None, on_output=None) -> Iterator[_Hook]:
    layers = watched_layers(model, types)
    hook = _Hook({id(m): path for path, m in layers}, stop_before, on_call, on_output)
    swapped = []
    try:
        for _, m in layers:
            cls = type(m)
            object.__setattr__(m, "__class__", _recording_class(cls))
            m.__dict__["_winit_hook"] = hook
            swapped.append((m, cls))
        yield hook
    finally:
        for m, cls in swapped:
            object.__setattr__(m, "__class__", cls)
            m.__dict__.pop("_winit_hook", None)


def layer_io(model: Callable, *args, types: tuple[type, ...] | None = None,
             on_call: Callable | None = None, on_output: Callable | None = None,
             **kwargs) -> tuple[object, list[LayerCall]]:
    """Runs ``model(*args, **kwargs)`` once; returns its output and every call of a layer of
    ``types`` (default: the registry's linear kinds) in call order (a layer called twice appears twice).

    ``on_call(path, layer, input)`` runs just before each such call and may change the
    layer's parameters (LSUV calibrates each layer on its input this way, in one pass).
    ``on_output(k, output)`` runs after the k-th call (0-based) and returns what the model
    goes on with (``parity.check`` adds a zero there to differentiate by each layer's
    output).

    Examples:
      >>> import jax.numpy as jnp, winit_jax as wj
      >>> from flax import nnx
      >>> mlp = wj.MLP((4, 3, 2), kernel_init=wj.he_normal(), rngs=nnx.Rngs(0))
      >>> out, calls = layer_io(mlp, jnp.ones((5, 4)))
      >>> [(c.path, c.input.shape, c.output.shape) for c in calls]
      [(('layers', 0), (5, 4), (5, 3)), (('layers', 1), (5, 3), (5, 2))]
    """
    with _watching(model, types, on_call=on_call, on_output=on_output) as hook:
        out = model(*args, **kwargs)
    return out, hook.calls


def layer_input(model: Callable, layer: nnx.Module, *args, **kwargs) -> jax.Array:
    """The input ``layer`` (a submodule of ``model``) receives when ``model(*args)`` runs; the
    pass stops there.

    Raises:
      ValueError: if the forward pass never calls ``layer``.
    """
    with _watching(model, (type(layer),), stop_before=layer) as hook:
        try:
            model(*args, **kwargs)
        except _Stop:
            return hook.seen
    raise ValueError(f"layer {type(layer).__name__} is never called by the model's forward pass")
