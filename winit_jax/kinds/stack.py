"""Scanned stacks: one nnx module built with ``nnx.vmap`` (every variable has a leading
layer axis, run with ``nnx.scan``: the modern Flax way to write a deep transformer) against
a torch ``nn.ModuleList`` of the same blocks.

``stack_slice(layer, k)`` is layer ``k`` of such a module: it is an instance of the layer's
own class (so the registry's kinds match it), its variables are views of index ``k`` of
the stacked ones (reading gives that slice, writing replaces it), its submodules are
slices too. Nothing is copied. The pairing makes these views where torch numbers the
blocks of a container and the nnx model holds one module at that path.
"""

from __future__ import annotations

import functools

from flax import nnx


class SliceVariable:
    """Index ``k`` (on the leading axis) of an nnx variable, readable and writable."""

    def __init__(self, variable: nnx.Variable, k: int):
        self.variable, self.k = variable, k

    def get_value(self):
        return self.variable.get_value()[self.k]

    def __getitem__(self, index):
        return self.get_value()[index]

    def set_value(self, value):
        self.variable.set_value(self.variable.get_value().at[self.k].set(value))

    @property
    def is_param(self) -> bool:
        return isinstance(self.variable, nnx.Param)


def _slice(value, k):
    if isinstance(value, nnx.Variable):
        return SliceVariable(value, k)
    if isinstance(value, nnx.Module):
        return stack_slice(value, k)
    if isinstance(value, (nnx.List, list, tuple)):
        return [_slice(v, k) for v in value]
    return value


@functools.lru_cache(maxsize=None)
def _slice_class(cls: type) -> type:
    def __getattr__(self, name):
        target = self.__dict__.get("_winit_target")
        if target is None:
            raise AttributeError(name)
        return _slice(getattr(target, name), self.__dict__["_winit_index"])

    return type(cls.__name__, (cls,), {"__getattr__": __getattr__, "__module__": cls.__module__,
                                       "__qualname__": cls.__qualname__})


def stack_slice(layer: nnx.Module, k: int):
    """Layer ``k`` of a stacked (``nnx.vmap``-built) module, as a view."""
    view = object.__new__(_slice_class(type(layer)))
    view.__dict__["_winit_target"] = layer
    view.__dict__["_winit_index"] = k
    return view


def is_slice(layer) -> bool:
    return "_winit_target" in getattr(layer, "__dict__", {})


def slice_of(layer) -> tuple[nnx.Module, int]:
    return layer.__dict__["_winit_target"], layer.__dict__["_winit_index"]
