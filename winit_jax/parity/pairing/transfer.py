"""Weights across, both ways: ``from_torch`` and ``to_torch``.

Every value is converted (through the pair's kind) and checked, shape and dtype, before
anything is written, so an error leaves both models as they were. Dtypes are kept
(float32, or float64 with ``jax_enable_x64``): round trips are exact.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from winit_jax.kinds import ParityError, at_path, is_param, np_copy, torch_tensor_names
from winit_jax.parity.pairing.layers import tensor_prefix, torch_layers
from winit_jax.parity.pairing.rules import Pair, Pairing, pair, resolve

DTYPES = ("float32", "float64")


def check_dtype(dtype, where: str) -> str:
    """The dtype's name if winit_jax.parity supports it (float64 needs x64), else an error."""
    name = np.dtype(dtype).name
    if name not in DTYPES:
        raise ParityError(f"{where}: dtype {name} (supported: {', '.join(DTYPES)})")
    if name == "float64" and not jax.config.jax_enable_x64:
        raise ParityError(f"{where}: a float64 model needs jax_enable_x64=True")
    return name


def flax_updates(paired: list[Pair]) -> list[tuple[nnx.Variable, jax.Array]]:
    """``(variable, new value)`` for every tensor of every pair, from torch; checked."""
    updates = []
    for p in paired:
        for sub, value in p.kind.to_flax(p.torch_module, p.flax_layer).items():
            var = at_path(p.flax_layer, sub)
            where = (f"torch {p.torch_name or '<root>'} -> nnx "
                     f"{'/'.join(x for x in (p.flax_path, sub) if x)}")
            want = tuple(var.get_value().shape)
            if tuple(value.shape) != want:
                raise ParityError(f"{where}: shape {tuple(value.shape)} (converted) vs {want}")
            dtype = check_dtype(value.dtype, where)
            have = np.dtype(var.get_value().dtype).name
            if dtype != have and is_param(var):
                raise ParityError(f"{where}: torch dtype {dtype} vs nnx {have}")
            updates.append((var, jnp.asarray(value, var.get_value().dtype)))
    return updates


def set_from(paired: list[Pair], module) -> None:
    """Sets the port's variables to those of ``module``, a copy of the paired torch module
    (the same layer names: a ``deepcopy`` given another state)."""
    layers = dict(torch_layers(module))
    for var, value in flax_updates([dataclasses.replace(p, torch_module=layers[p.torch_name])
                                    for p in paired]):
        var.set_value(value)


def torch_updates(paired: list[Pair]) -> list[tuple[object, np.ndarray]]:
    """``(torch tensor, new value)`` for every tensor of every pair, from nnx; checked."""
    updates = []
    for p in paired:
        tm = p.torch_module
        buffers = dict(tm.named_buffers())
        state = dict(tm.named_parameters()) | buffers
        values = p.kind.to_torch(p.flax_layer, tm)
        left = sorted(set(torch_tensor_names(tm)) - set(values))
        if left:
            raise ParityError(f"nnx {p.flax_path or '<root>'} -> torch {p.torch_name or '<root>'}"
                              f": nothing for torch's {', '.join(left)}")
        for sub, value in values.items():
            where = f"nnx {p.flax_path or '<root>'} -> torch {p.torch_name or '<root>'}.{sub}"
            if sub not in state:
                raise ParityError(f"{where}: the torch layer has no such tensor")
            target = state[sub]
            if sub in buffers:  # nnx keeps BatchNorm statistics in float32 whatever param_dtype
                value = np.asarray(value).astype(str(target.dtype).removeprefix("torch."))
            if tuple(value.shape) != tuple(target.shape):
                raise ParityError(f"{where}: shape {tuple(value.shape)} (converted) vs "
                                  f"{tuple(target.shape)}")
            if str(target.dtype) != f"torch.{np.dtype(value.dtype).name}":
                raise ParityError(f"{where}: nnx dtype {np.dtype(value.dtype).name} vs torch "
                                  f"{str(target.dtype).removeprefix('torch.')}")
            updates.append((target, np.ascontiguousarray(value).copy()))
    return updates


def from_torch(torch_module, model, *, mapping: Mapping[str, str] | None = None,
               pairing: Pairing | None = None, inputs=None, kwargs: Mapping | None = None,
               flax_inputs=None):
    """Copies ``torch_module``'s parameters and buffers into the nnx ``model`` in place.

    Args:
      torch_module: the torch original.
      model: the nnx port.
      mapping: ``{torch name: nnx path}`` for layers the pairing rules cannot pair.
      pairing: the two models' ``parity.pair(...)``, computed once (instead of ``mapping``).
      inputs: example inputs (``kwargs``, ``flax_inputs`` as ``check``'s): what names and
        shapes leave unpaired is paired by the order each side calls its layers on them.

    Returns:
      ``model``.

    Raises:
      ParityError: unpaired or mismatched layers, shapes or dtypes; nothing is written then.
    """
    _torch_module_only(torch_module, "from_torch")
    mapping, pairing = _by_inputs(torch_module, model, mapping, pairing, inputs, kwargs,
                                  flax_inputs)
    for var, value in flax_updates(resolve(torch_module, model, mapping, pairing,
                                           "from_torch")):
        var.set_value(value)
    return model


def to_torch(model, torch_module, *, mapping: Mapping[str, str] | None = None,
             pairing: Pairing | None = None, inputs=None, kwargs: Mapping | None = None,
             flax_inputs=None):
    """Copies the nnx ``model``'s parameters and batch statistics into ``torch_module`` in
    place (``mapping``, ``pairing`` and ``inputs`` as ``from_torch``'s).

    Returns:
      ``torch_module``.

    Raises:
      ParityError: as ``from_torch``; nothing is written then.
    """
    import torch

    _torch_module_only(torch_module, "to_torch")
    mapping, pairing = _by_inputs(torch_module, model, mapping, pairing, inputs, kwargs,
                                  flax_inputs)
    updates = torch_updates(resolve(torch_module, model, mapping, pairing, "to_torch"))
    with torch.no_grad():
        for target, value in updates:
            target.copy_(torch.from_numpy(value))
    return torch_module


def _by_inputs(torch_module, model, mapping, pairing, inputs, kwargs, flax_inputs):
    """(mapping, pairing) as given, or (None, the pairing by call order on ``inputs``)."""
    if inputs is None:
        if kwargs is not None or flax_inputs is not None:
            raise ParityError("inputs: kwargs= and flax_inputs= go with inputs=, which is "
                              "missing")
        return mapping, pairing
    if pairing is not None:
        raise ParityError("inputs: pass inputs to parity.pair, or a pairing; not both")
    return None, pair(torch_module, model, mapping=mapping, inputs=inputs, kwargs=kwargs,
                      flax_inputs=flax_inputs)


def _torch_module_only(torch_module, where: str) -> None:
    """A state dict or a path where a module is needed: one error saying what to pass."""
    if isinstance(torch_module, (dict, str)) or not hasattr(torch_module, "named_modules"):
        raise ParityError(f"{where}: torch_module must be a torch.nn.Module, got "
                          f"{type(torch_module).__name__} (a state dict: load it into the "
                          "module first, module.load_state_dict(state))")


def torch_values(paired: list[Pair], source: str, layers: Mapping | None = None) -> dict:
    """``{torch tensor name: array}`` over ``paired``, in torch's names and layout.

    ``source`` "torch" reads torch (or the module ``layers`` maps a torch name to), through
    the kind's ``torch_values`` where torch holds more than Flax can (an LSTM's two biases
    as their sum); "flax" converts the nnx layers (as ``to_torch`` would write them).
    """
    out = {}
    for p in paired:
        tm = p.torch_module if layers is None else layers[p.torch_name]
        prefix = tensor_prefix(p)
        if source == "flax":
            values = {n: np.asarray(v) for n, v in p.kind.to_torch(p.flax_layer, tm).items()}
        elif p.kind.torch_values is not None:
            values = p.kind.torch_values(tm)
        else:
            state = dict(tm.named_parameters()) | dict(tm.named_buffers())
            values = {n: np_copy(state[n]) for n in p.kind.to_torch(p.flax_layer, tm)}
        out.update({prefix + n: v for n, v in values.items()})
    return out
