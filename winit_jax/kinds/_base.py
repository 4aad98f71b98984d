"""What a layer kind is, and the one registry of them.

A :class:`Kind` says everything winit_jax knows about one kind of layer in both frameworks:
which torch classes and which Flax classes it matches (``isinstance``, so subclasses match),
how its tensors convert each way, what torch's ``reset_parameters`` draws for it (in Flax's
layout), whether its kernel maps its input linearly (LSUV and per-layer statistics watch
those), and how its activations map to torch's layout. ``torch_like.init``, ``from_torch``
/ ``to_torch``, ``pair``, ``check`` and the recording forward pass all read this registry,
and nothing else.

The registry imports no torch: torch classes may be named by their dotted path
(``"torch.nn.Linear"``) and are resolved when a torch module is first matched.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import importlib
import sys
from collections.abc import Callable, Iterator, Mapping

import numpy as np
from flax import nnx


class ParityError(ValueError):
    """Two models that cannot be paired, or a value that does not fit; nothing was changed."""


Converter = Callable[[object, object], dict]  # (source layer, target layer) -> {name: array}


@dataclasses.dataclass(frozen=True)
class Kind:
    """One kind of layer in both frameworks.

    Attributes:
      name: what reports call it ("Linear", "Conv", ...).
      torch_classes: torch module classes, or their dotted paths (``"torch.nn.Linear"``).
      flax_classes: nnx module classes.
      to_flax: ``(torch layer, nnx layer) -> {nnx variable path inside the layer: array}``,
        every tensor in Flax's layout (NumPy copies).
      to_torch: ``(nnx layer, torch layer) -> {torch tensor name: array}``, torch's layout.
      init: ``nnx layer -> {variable path: initialiser}``: what torch's
        ``reset_parameters`` draws, in Flax's layout; None where torch draws nothing of
        its own (``torch_like.init`` then needs an override).
      torch_values: ``torch layer -> {torch tensor name: array}``: torch's tensors as
        ``to_torch`` would write them from the nnx layer (e.g. an LSTM's two biases as the
        one Flax holds); default: read ``to_torch``'s names from the torch layer.
      linear_map: its ``kernel`` maps its input linearly (LSUV rescales it; the recording
        forward watches it).
      activation_to_torch: ``(array, nnx layer, "input" | "output") -> array``: one of
        the layer's inputs or outputs in torch's layout (channels last -> first for
        convolutions); default unchanged.
      flax_accepts: a further test of an nnx layer beyond its class (an ``nnx.RNN`` is an
        LSTM only if its cell is one); default none.
      torch_split: ``torch module -> [(suffix, layer view)]`` where one torch module is
        several layers (a stacked or bidirectional RNN: one view per layer), or None.
      compares_gradient: ``torch tensor name -> bool``: whether the gradient part compares
        that tensor's gradient (a Flax cell's one bias is compared with torch's ``bias_ih``;
        ``bias_hh`` has the same gradient); default every parameter.
      batch_stats: ``{torch buffer name: "mean" | "var"}``: the running statistics a
        train-mode step updates (BatchNorm); the step part judges them as statistics.
      training_note: why training steps cannot agree for a port of this kind (said in the
        report's notes when a check trains), or "".
      hint: what to check first when this layer is where a port parts from torch: text, or
        ``(torch layer, nnx layer) -> text`` built from the two layers' own settings.
    """

    name: str
    torch_classes: tuple
    flax_classes: tuple[type, ...]
    to_flax: Converter
    to_torch: Converter
    init: Callable[[object], Mapping[str, Callable]] | None = None
    torch_values: Callable[[object], dict] | None = None
    linear_map: bool = False
    activation_to_torch: Callable | None = None
    flax_accepts: Callable[[object], bool] | None = None
    torch_split: Callable[[object], list | None] | None = None
    compares_gradient: Callable[[str], bool] | None = None
    batch_stats: Mapping[str, str] | None = None
    training_note: str = ""
    hint: str | Callable[[object, object], str] = ""

    def hint_for(self, torch_layer, flax_layer) -> str:
        """The hint for this pair of layers."""
        return self.hint(torch_layer, flax_layer) if callable(self.hint) else self.hint

    def matches_torch(self, module) -> bool:
        return isinstance(module, _resolve(self.torch_classes))

    def matches_flax(self, layer) -> bool:
        return isinstance(layer, self.flax_classes) and (self.flax_accepts is None
                                                        or self.flax_accepts(layer))


# The registry: the built-in kinds, a porter's global ones (``register``), and the scoped ones
# (``registered``: this block of code, this context). Lookups try the scoped kinds first, then
# the porter's, then the built-ins, the latest registered first in each.
_BUILTIN: list[Kind] = []
_PORTER: list[Kind] = []
_SCOPED: contextvars.ContextVar[tuple[Kind, ...]] = contextvars.ContextVar("winit_kinds",
                                                                          default=())
_BUILDING = [True]  # True while the built-in families register themselves


def _check_kind(kind, where: str) -> None:
    if not isinstance(kind, Kind):
        raise TypeError(f"{where}: expected a Kind, got {type(kind).__name__}")
    if not kind.flax_classes or not kind.torch_classes:
        raise ValueError(f"{where}: kind {kind.name!r} needs torch_classes and flax_classes")


def register(kind: Kind) -> Kind:
    """Adds ``kind`` to the registry for the whole process and returns it.

    Where two kinds pair the same torch and nnx layers, the later one wins. Where only the
    nnx layer is known (``torch_like.init`` without a torch module, LSUV, the recording
    forward), a porter's kind never displaces a built-in one for the same nnx class: a
    kind that pairs HF's ``Conv1D`` with ``nnx.Linear`` changes nothing for a model
    without ``Conv1D``; a kind for a subclass of it (or a class of the porter's own) is
    used for that class. For one block of code only, use :func:`registered`.
    """
    _check_kind(kind, "register")
    (_BUILTIN if _BUILDING[0] else _PORTER).append(kind)
    return kind


def unregister(kind: Kind) -> None:
    """Removes a kind added by :func:`register`."""
    for table in (_PORTER, _BUILTIN):
        if kind in table:
            table.remove(kind)
            return
    raise ValueError(f"unregister: kind {kind.name!r} is not registered")


@contextlib.contextmanager
def registered(*kinds_: Kind) -> Iterator[tuple[Kind, ...]]:
    """Uses ``kinds_`` inside the ``with`` block only (this thread or task), ahead of every
    other kind, flax-side lookups included; nothing global changes.

    Examples:
      >>> import dataclasses
      >>> linear = next(k for k in kinds() if k.name == "Linear")
      >>> mine = dataclasses.replace(linear, name="MyLinear")
      >>> with registered(mine):
      ...     kinds()[0].name
      'MyLinear'
      >>> "MyLinear" in [k.name for k in kinds()]
      False
    """
    for k in kinds_:
        _check_kind(k, "registered")
    token = _SCOPED.set(tuple(kinds_) + _SCOPED.get())
    try:
        yield kinds_
    finally:
        _SCOPED.reset(token)


def kinds() -> tuple[Kind, ...]:
    """Every kind in lookup order: scoped, then a porter's (latest first), then built-in."""
    return _SCOPED.get() + tuple(reversed(_PORTER)) + tuple(reversed(_BUILTIN))


def torch_kinds(module) -> list[Kind]:
    """The kinds whose torch classes ``module`` is an instance of, in lookup order."""
    return [k for k in kinds() if k.matches_torch(module)]


def _distance(layer, classes) -> int:
    """How far up ``layer``'s class hierarchy the nearest of ``classes`` is (0: its class)."""
    mro = type(layer).__mro__
    return min((mro.index(c) for c in classes if c in mro), default=len(mro))


def flax_kinds(layer) -> list[Kind]:
    """The kinds whose nnx classes ``layer`` is an instance of, in lookup order, less the
    porter's global kinds that a built-in kind matches as closely (see ``register``)."""
    scoped, porter = _SCOPED.get(), tuple(reversed(_PORTER))
    builtin = [k for k in reversed(_BUILTIN) if k.matches_flax(layer)]
    near = min((_distance(layer, k.flax_classes) for k in builtin), default=None)
    own = [k for k in porter if k.matches_flax(layer)
           and (near is None or _distance(layer, k.flax_classes) < near)]
    return [k for k in scoped if k.matches_flax(layer)] + own + builtin


def kind_for(torch_module, layer) -> Kind | None:
    """The kind that matches both layers (the first in lookup order), or None."""
    return next((k for k in kinds() if k.matches_flax(layer) and k.matches_torch(torch_module)),
                None)


def is_flax_layer(layer) -> bool:
    """Whether some kind matches ``layer`` (its submodules then belong to it)."""
    return any(k.matches_flax(layer) for k in kinds())


def linear_types() -> tuple[type, ...]:
    """The nnx classes whose kernel maps their input linearly (LSUV, layer statistics)."""
    return tuple(dict.fromkeys(c for k in reversed(kinds()) if k.linear_map
                               for c in k.flax_classes))


def init_rule(layer):
    """torch's draw for ``layer`` (``{variable path: initialiser}``), or None."""
    for k in flax_kinds(layer):
        if k.init is not None:
            return k.init(layer)
    return None


_CLASSES: dict[tuple, tuple[type, ...]] = {}


def _resolve(classes: tuple) -> tuple[type, ...]:
    """torch classes from their dotted paths (cached; torch is imported only here). A path
    marked optional (``"?transformers.pytorch_utils.Conv1D"``) is resolved only once its
    module has been imported by someone else: nothing imports it for a kind."""
    if classes not in _CLASSES:
        out, optional_missing = [], False
        for c in classes:
            if isinstance(c, str):
                module, _, attr = c.lstrip("?").rpartition(".")
                if c.startswith("?"):
                    loaded = sys.modules.get(module)
                    if loaded is None:
                        optional_missing = True
                        continue
                    c = getattr(loaded, attr)
                else:
                    c = getattr(importlib.import_module(module), attr)
            out.append(c)
        if optional_missing:  # not cached: the module may be imported later
            return tuple(out)
        _CLASSES[classes] = tuple(out)
    return _CLASSES[classes]


# --- helpers the kinds share ----------------------------------------------------------------

def np_copy(t) -> np.ndarray:
    """A NumPy *copy* of a torch tensor: ``.numpy()`` shares torch's memory, and a JAX array
    made from it on the CPU can alias that memory too, so a later in-place torch update
    (BatchNorm's running statistics, an optimiser step) would silently change the nnx model."""
    return t.detach().cpu().numpy().copy()


def contiguous(x):
    """``np.ascontiguousarray`` of an array; anything else (a checkpoint loader's traced
    ``parity.lazy.Lazy``) as it is, so that ``to_flax`` can be traced."""
    return np.ascontiguousarray(x) if isinstance(x, np.ndarray) else x


def at_path(obj, path: str, sep: str = "/"):
    """What ``path`` names inside ``obj``: nnx's "blocks/0/kernel" (``sep`` "/") or torch's
    "blocks.0.weight" (``sep`` "."); a number indexes a list (``nnx.List``, a torch
    ``Sequential``), any other part is an attribute."""
    for part in path.split(sep):
        if part.isdigit() and hasattr(obj, "__getitem__") and not hasattr(obj, part):
            obj = obj[int(part)]
        else:
            obj = getattr(obj, part)
    return obj


def value(variable) -> np.ndarray:
    """An nnx variable's value as a NumPy array."""
    return np.asarray(variable[...])


def flax_variables(layer) -> dict[str, nnx.Variable]:
    """``{path inside the layer: variable}`` of every parameter and batch statistic (of a
    stack slice: views of its index)."""
    from winit_jax.kinds.stack import SliceVariable, is_slice, slice_of

    if is_slice(layer):
        target, k = slice_of(layer)
        return {p: SliceVariable(v, k) for p, v in flax_variables(target).items()}
    return {"/".join(map(str, p)): v for p, v in nnx.iter_graph(layer)
            if isinstance(v, (nnx.Param, nnx.BatchStat))}


def is_param(variable) -> bool:
    """An ``nnx.Param`` (or a stack slice of one)."""
    return isinstance(variable, nnx.Param) or bool(getattr(variable, "is_param", False))


def torch_tensor_names(module) -> list[str]:
    """Every parameter and buffer of a torch layer that a kind converts
    (``num_batches_tracked`` has no Flax twin)."""
    names = [n for n, _ in module.named_parameters()]
    names += [n for n, b in module.named_buffers() if not n.endswith("num_batches_tracked")]
    return names


def channels_first(x, layer, which):
    """An activation in torch's layout: (N, *spatial, C) -> (N, C, *spatial); (N, C) as it is."""
    return np.moveaxis(np.asarray(x), -1, 1) if np.ndim(x) >= 3 else np.asarray(x)
