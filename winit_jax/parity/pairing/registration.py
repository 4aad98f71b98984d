"""A porter's own layer pair as a ``Kind``: ``layer_kind``. The one way to add it: build it
here, then pass ``kinds=[kind]`` to the call that needs it (``pair``, ``check``,
``from_torch``, ``load_checkpoint`` ...), use it for one block of code (``with
parity.registered(kind):``) or for the whole process (``parity.register(kind)``, undone by
``parity.unregister(kind)``)."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping

import numpy as np

from winit_jax.kinds import Kind, at_path, np_copy, register


def _permutation(layout, ndim: int) -> tuple[int, ...]:
    if layout == "same":
        return tuple(range(ndim))
    if layout == "transpose":
        return tuple(reversed(range(ndim)))
    perm = tuple(layout)
    if sorted(perm) != list(range(ndim)):
        raise ValueError(f"layer_kind: layout {layout!r} is not a permutation of "
                         f"{ndim} axes")
    return perm


def layer_kind(torch_class: type, flax_class: type, *,
                   tensors: Mapping[str, str | tuple] | None = None,
                   to_flax: Callable | None = None, to_torch: Callable | None = None,
                   init: Mapping[str, Callable] | Callable | None = None,
                   name: str | None = None, linear_map: bool = False,
                   activation_to_torch: Callable | None = None) -> Kind:
    """A porter's own layer pair as a ``Kind`` (nothing registered): with it, ``pair``,
    ``torch_like.init``, ``from_torch``, ``to_torch``, ``check`` and the checkpoint loader
    know the pair (subclasses included).

    Args:
      torch_class: the torch module class.
      flax_class: the nnx module class that ports it.
      tensors: ``{torch tensor name: nnx variable path}`` or ``{torch name: (nnx path,
        layout)}`` with layout "same" (default), "transpose" (every axis reversed: torch's
        (out, in) weight as Flax's (in, out) kernel) or a permutation (Flax's axes as
        torch's: ``(2, 3, 1, 0)`` for a conv kernel). Either this, or both ``to_flax``
        and ``to_torch``.
      to_flax: ``(torch layer, nnx layer) -> {nnx path: array}`` and
        ``(nnx layer, torch layer) -> {torch name: array}``, for layouts beyond a permutation.
      to_torch: as ``to_flax`` (above).
      init: torch's draw in Flax's layout: ``{nnx path: initialiser}`` or ``nnx layer ->
        {nnx path: initialiser}``; without it ``torch_like.init`` asks for an override.
      name: the kind's name in reports (default: the torch class's name).
      linear_map: the layer's ``kernel`` maps its input linearly (LSUV calibrates it).
      activation_to_torch: ``(array, nnx layer, "input" | "output") -> array`` in torch's
        layout, where the layouts differ.

    Returns:
      The ``Kind``: pass ``kinds=[kind]``, or ``with parity.registered(kind):``, or
      ``parity.register(kind)`` for the whole process.

    Examples:
      >>> import jax.numpy as jnp, torch
      >>> from flax import nnx
      >>> class Scale(torch.nn.Module):
      ...     def __init__(self, d):
      ...         super().__init__()
      ...         self.gamma = torch.nn.Parameter(torch.ones(d))
      >>> class NnxScale(nnx.Module):
      ...     def __init__(self, d):
      ...         self.gamma = nnx.Param(jnp.ones(d))
      >>> kind = layer_kind(Scale, NnxScale, tensors={"gamma": "gamma"})
      >>> from winit_jax import parity
      >>> [p.kind.name for p in parity.pair(Scale(3), NnxScale(3), kinds=[kind])]
      ['Scale']
    """
    if (to_flax is None) != (to_torch is None):
        raise ValueError("layer_kind: give both to_flax and to_torch, or tensors")
    if to_flax is None:
        if not tensors:
            raise ValueError("layer_kind: give tensors={torch name: nnx path} or both "
                             "converters")
        spec = {t: (f, "same") if isinstance(f, str) else tuple(f) for t, f in tensors.items()}

        def to_flax(t, f):
            out = {}
            for tname, (fpath, layout) in spec.items():
                v = np_copy(at_path(t, tname, "."))
                out[fpath] = np.ascontiguousarray(v.transpose(_permutation(layout, v.ndim)))
            return out

        def to_torch(f, t):
            out = {}
            for tname, (fpath, layout) in spec.items():
                v = np.asarray(at_path(f, fpath, "/")[...])
                out[tname] = np.ascontiguousarray(
                    v.transpose(np.argsort(_permutation(layout, v.ndim))))
            return out
    rule = init if init is None or callable(init) else (lambda layer, _init=dict(init): _init)
    return Kind(name or torch_class.__name__, (torch_class,), (flax_class,), to_flax, to_torch,
                init=rule, linear_map=linear_map, activation_to_torch=activation_to_torch)


def register_layer(torch_class: type, flax_class: type, **options) -> Kind:
    """``register(layer_kind(...))``, kept for code written before ``layer_kind``; warns
    (``DeprecationWarning``) naming the one way."""
    warnings.warn("parity.register_layer(...) is parity.register(parity.layer_kind(...)): "
                  "build the kind with parity.layer_kind, then pass kinds=[kind], use "
                  "`with parity.registered(kind):`, or parity.register(kind)",
                  DeprecationWarning, stacklevel=2)
    return register(layer_kind(torch_class, flax_class, **options))
