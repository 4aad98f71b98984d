"""Tensors that say how to read them: the key map of a checkpoint, traced from the kinds.

A layer kind's ``to_flax`` converts a torch layer's tensors with NumPy operations
(``w.T``, ``w.transpose(perm)``, ``w.reshape(...)``, ``np.flip``, slices, ``np.stack``).
Given ``Lazy`` tensors instead of torch's, the same code records those operations: a small
JSON tree per nnx variable, whose leaves name checkpoint keys. ``read(node, index, source)``
then reads just the part of the checkpoint that one device's slice of the variable needs:
a transpose reads the matching slice of the source, a stack reads the blocks the slice
spans. No key map is written by hand, and nothing is read until it is placed.
"""

from __future__ import annotations

import math

import numpy as np

from winit_jax.kinds import ParityError
from winit_jax.parity.checkpoint_files import dtype_name, np_dtype


class Untraceable(Exception):
    """A conversion used an operation that ``Lazy`` does not record."""


def shape_of(node: dict) -> tuple[int, ...]:
    return tuple(node["shape"])


class Lazy:
    """An array known by its recipe (``node``): what a kind's ``to_flax`` does to it is
    recorded, not computed. Stands in for a torch tensor (``detach``, ``cpu``, ``numpy``,
    ``copy`` return it) and for a NumPy array."""

    __array_priority__ = 100

    def __init__(self, node: dict):
        self.node = node

    # --- what torch's tensors and NumPy's arrays are asked -----------------------------------
    @property
    def shape(self):
        return tuple(self.node["shape"])

    @property
    def dtype(self):
        return np_dtype(self.node["dtype"])

    @property
    def ndim(self):
        return len(self.shape)

    @property
    def size(self):
        return math.prod(self.shape)

    def detach(self):
        return self

    cpu = numpy = copy = detach

    def __array__(self, *a, **k):
        raise Untraceable("converted to a NumPy array")

    # --- the operations recorded --------------------------------------------------------------
    def _op(self, op: str, shape, **kw) -> Lazy:
        return Lazy({"op": op, "shape": [int(d) for d in shape], "dtype": self.node["dtype"],
                     "x": self.node, **kw})

    def transpose(self, *axes):
        perm = axes[0] if len(axes) == 1 and not isinstance(axes[0], int) else axes
        perm = tuple(range(self.ndim))[::-1] if not perm else tuple(int(a) for a in perm)
        if perm == tuple(range(self.ndim)):
            return self
        return self._op("transpose", [self.shape[a] for a in perm], perm=list(perm))

    @property
    def T(self):
        return self.transpose()

    def reshape(self, *shape):
        shape = shape[0] if len(shape) == 1 and not isinstance(shape[0], int) else shape
        shape = list(shape)
        if -1 in shape:
            i = shape.index(-1)
            shape[i] = self.size // max(1, math.prod(d for d in shape if d != -1))
        if math.prod(shape) != self.size:
            raise ValueError(f"cannot reshape {self.shape} into {tuple(shape)}")
        if tuple(shape) == self.shape:
            return self
        return self._op("reshape", shape)

    def astype(self, dtype, copy=True):
        return Lazy({**self._op("cast", self.shape).node, "dtype": dtype_name(dtype)})

    def __getitem__(self, index):
        index = index if isinstance(index, tuple) else (index,)
        if any(i is Ellipsis for i in index):
            k = index.index(Ellipsis)
            index = index[:k] + (slice(None),) * (self.ndim - len(index) + 1) + index[k + 1:]
        index = index + (slice(None),) * (self.ndim - len(index))
        spans, shape, drop = [], [], []
        for axis, (i, n) in enumerate(zip(index, self.shape)):
            if isinstance(i, (int, np.integer)):
                i = int(i) % n
                spans.append([i, i + 1])
                drop.append(axis)
                continue
            if not isinstance(i, slice):
                raise Untraceable(f"index {i!r}")
            start, stop, step = i.indices(n)
            if step == -1 and i.start is None and i.stop is None:
                raise Untraceable("reversed slice")  # np.flip records it
            if step != 1:
                raise Untraceable(f"step {step}")
            spans.append([start, max(start, stop)])
            shape.append(max(0, stop - start))
        out = self._op("slice", [b - a for a, b in spans], spans=spans)
        return out.reshape(shape) if drop else out

    def __add__(self, other):
        if not isinstance(other, Lazy) or other.shape != self.shape:
            raise Untraceable("adding a non-Lazy or a broadcast")
        return Lazy({"op": "add", "shape": list(self.shape), "dtype": self.node["dtype"],
                     "xs": [self.node, other.node]})

    __radd__ = __add__

    def __array_function__(self, func, types, args, kwargs):
        handler = _FUNCTIONS.get(func)
        if handler is None:
            raise Untraceable(f"np.{func.__name__}")
        return handler(*args, **kwargs)


def _flip(x: Lazy, axis=None):
    axes = range(x.ndim) if axis is None else ((axis,) if isinstance(axis, int) else axis)
    return x._op("flip", x.shape, axes=sorted(int(a) % x.ndim for a in axes))


def _join(op: str, xs, axis=0):
    xs = list(xs)
    if not all(isinstance(x, Lazy) for x in xs):
        raise Untraceable(f"np.{op} of non-Lazy arrays")
    first = xs[0].shape
    axis = axis % (len(first) + (op == "stack"))
    if op == "stack":
        shape = first[:axis] + (len(xs),) + first[axis:]
    else:
        shape = first[:axis] + (sum(x.shape[axis] for x in xs),) + first[axis + 1:]
    return Lazy({"op": op, "axis": axis, "shape": list(shape), "dtype": xs[0].node["dtype"],
                 "xs": [x.node for x in xs]})


def _split(x: Lazy, sections, axis=0):
    n = x.shape[axis]
    edges = ([n * k // sections for k in range(sections + 1)] if isinstance(sections, int)
             else [0, *sections, n])
    out = []
    for a, b in zip(edges, edges[1:]):
        index = [slice(None)] * x.ndim
        index[axis] = slice(a, b)
        out.append(x[tuple(index)])
    return out


_FUNCTIONS = {
    np.transpose: lambda x, axes=None: x.transpose(axes) if axes is not None else x.T,
    np.reshape: lambda x, shape, *a, **k: x.reshape(shape),
    np.flip: _flip,
    np.stack: lambda xs, axis=0, **k: _join("stack", xs, axis),
    np.concatenate: lambda xs, axis=0, **k: _join("concatenate", xs, axis),
    np.split: _split,
    np.copy: lambda x, *a, **k: x,
}


class Traced:
    """A torch layer whose tensors are ``Lazy`` reads of their state-dict keys; everything
    else (sizes, flags, class) is the layer's own, so a kind's ``to_flax`` runs unchanged.
    ``key_of`` maps ``id(tensor)`` to its state-dict key; without it (shapes only: the
    pairing's fit check) every read is named by its attribute."""

    def __init__(self, module, key_of: dict):
        object.__setattr__(self, "_module", module)
        object.__setattr__(self, "_key_of", key_of)

    @property
    def __class__(self):
        return type(object.__getattribute__(self, "_module"))

    def _wrap(self, value):
        import torch
        if isinstance(value, torch.Tensor):
            key = self._key_of.get(id(value)) if self._key_of is not None else "?"
            if key is None:
                raise ParityError("checkpoint plan: a tensor of the torch layer is not in "
                                  "torch_module's state dict")
            return Lazy({"op": "read", "key": key, "shape": list(value.shape),
                              "dtype": dtype_name(value.dtype)})
        if isinstance(value, torch.nn.Module):
            return Traced(value, self._key_of)
        return value

    def __getattr__(self, name):
        return self._wrap(getattr(self._module, name))

    def named_parameters(self, *a, **k):
        return [(n, self._wrap(p)) for n, p in self._module.named_parameters(*a, **k)]

    def named_buffers(self, *a, **k):
        return [(n, self._wrap(b)) for n, b in self._module.named_buffers(*a, **k)]

    def parameters(self, *a, **k):
        return [p for _, p in self.named_parameters(*a, **k)]



# --- reading ------------------------------------------------------------------------------

def full(shape) -> tuple[tuple[int, int], ...]:
    return tuple((0, int(n)) for n in shape)


def read(node: dict, spans, source, notes: list | None = None) -> np.ndarray:
    """The part ``spans`` (``((start, stop), ...)`` per axis) of ``node``'s array, reading
    no more of ``source`` than the recipe needs for it (``notes`` gets "whole" where a
    reshape made it read a source tensor whole)."""
    op, spans = node["op"], tuple((int(a), int(b)) for a, b in spans)
    if op == "read":
        return source.read(node["key"], spans)
    if op == "const":
        return np.asarray(node["value"], np_dtype(node["dtype"]))[
            tuple(slice(a, b) for a, b in spans)]
    if op == "transpose":
        perm = node["perm"]
        inner = [None] * len(perm)
        for i, p in enumerate(perm):
            inner[p] = spans[i]
        return read(node["x"], inner, source, notes).transpose(perm)
    if op == "flip":
        shape, inner = shape_of(node), list(spans)
        for a in node["axes"]:
            s, e = spans[a]
            inner[a] = (shape[a] - e, shape[a] - s)
        return np.flip(read(node["x"], inner, source, notes), axis=tuple(node["axes"]))
    if op == "slice":
        inner = [(lo + a, lo + b) for (lo, _), (a, b) in zip(node["spans"], spans)]
        return read(node["x"], inner, source, notes)
    if op == "cast":
        return read(node["x"], spans, source, notes).astype(np_dtype(node["dtype"]))
    if op == "add":
        a, b = (read(x, spans, source, notes) for x in node["xs"])
        return a + b
    if op in ("stack", "concatenate"):
        axis, parts, at = node["axis"], [], 0
        lo, hi = spans[axis]
        for x in node["xs"]:
            n = 1 if op == "stack" else shape_of(x)[axis]
            a, b = max(lo, at), min(hi, at + n)
            if a < b:
                if op == "stack":
                    inner = spans[:axis] + spans[axis + 1:]
                    parts.append(np.expand_dims(read(x, inner, source, notes), axis))
                else:
                    inner = spans[:axis] + ((a - at, b - at),) + spans[axis + 1:]
                    parts.append(read(x, inner, source, notes))
            at += n
        return np.concatenate(parts, axis=axis)
    if op == "reshape":
        return _read_reshape(node, spans, source, notes)
    raise ParityError(f"checkpoint plan: unknown operation {op!r}")


def _read_reshape(node: dict, spans, source, notes) -> np.ndarray:
    """A reshape keeps the leading axes both shapes share: a slice that is whole on every
    later axis reads only its part of the source; any other slice reads the whole source
    tensor and cuts it (correct, and counted as such in the bytes read)."""
    shape, inner_shape = shape_of(node), shape_of(node["x"])
    k = 0
    while k < min(len(shape), len(inner_shape)) and shape[k] == inner_shape[k]:
        k += 1
    if all(spans[a] == (0, shape[a]) for a in range(k, len(shape))):
        inner = tuple(spans[:k]) + full(inner_shape[k:])
        part = read(node["x"], inner, source, notes)
        return part.reshape(tuple(b - a for a, b in spans))
    if notes is not None:
        notes.append("whole")
    whole = read(node["x"], full(inner_shape), source, notes).reshape(shape)
    return whole[tuple(slice(a, b) for a, b in spans)]


def keys(node: dict) -> list[str]:
    """The checkpoint keys a recipe reads."""
    if node["op"] == "read":
        return [node["key"]]
    children = node.get("xs") or ([node["x"]] if "x" in node else [])
    return [k for c in children for k in keys(c)]


__all__ = ["Lazy", "Traced", "Untraceable", "full", "keys", "read", "shape_of"]
