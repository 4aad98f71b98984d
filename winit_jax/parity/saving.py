"""Weights back as a torch checkpoint: the nnx model written in torch's names and layouts as
safetensors, a layer at a time, sharded with an index above a size."""

from __future__ import annotations

import json
import math
import time
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from winit_jax.kinds import ParityError, torch_tensor_names
from winit_jax.parity import lazy
from winit_jax.parity.checkpoint_files import (
    INDEX,
    StateDictSource,
    dtype_name,
    np_dtype,
    write_safetensors,
)
from winit_jax.parity.pairing import resolve
from winit_jax.parity.pairing.layers import tensor_prefix
from winit_jax.parity.pairing.transfer import _by_inputs, torch_values


def save_checkpoint(model, path, *, torch_module, mapping: Mapping[str, str] | None = None,
                    pairing=None, inputs=None, kwargs: Mapping | None = None,
                    flax_inputs=None, max_shard_bytes: int | None = None) -> dict:
    """Writes the nnx ``model``'s weights as a torch safetensors checkpoint of
    ``torch_module`` (torch's names and layouts), a layer at a time.

    Tied tensors are written once (under the first name, as ``safetensors.torch.save_model``
    does), so ``safetensors.torch.load_model(torch_module, path)`` accepts the file; with no
    ties, ``torch_module.load_state_dict(safetensors.torch.load_file(path), strict=True)``
    does too.

    Args:
      model: the nnx port.
      path: a ``.safetensors`` file; with ``max_shard_bytes``, a directory of shards and
        ``model.safetensors.index.json``.
      torch_module: the torch original (the meta device is enough, but for torch buffers
        the port does not hold, whose values are read from it).
      mapping: as ``to_torch``'s.
      pairing: as ``mapping`` (above).
      inputs: as ``mapping`` (above).
      kwargs: as ``mapping`` (above).
      flax_inputs: as ``mapping`` (above).
      max_shard_bytes: start a new shard above this size.

    Returns:
      ``{"files": [...], "bytes": n, "seconds": s}``.

    Raises:
      ParityError: what ``to_torch`` refuses; nothing is written then.
    """
    start = time.perf_counter()
    mapping, pairing = _by_inputs(torch_module, model, mapping, pairing, inputs, kwargs,
                                  flax_inputs)
    pairing = resolve(torch_module, model, mapping, pairing, "save_checkpoint")
    state = torch_module.state_dict(keep_vars=True)
    first: dict[int, str] = {}
    owner_of = {}
    for key, t in state.items():
        owner_of[key] = first.setdefault(id(t), key)
    layer_of = {}
    for p in pairing:
        for name in torch_tensor_names(p.torch_module):
            layer_of[tensor_prefix(p) + name] = p
    keys = [k for k in state if owner_of[k] == k]
    missing = [k for k in keys if k not in layer_of and state[k].is_meta]
    if missing:
        raise ParityError(f"torch_module: {missing[0]} has no nnx twin and torch_module is on "
                          "the meta device, so its value is unknown; build it on the CPU")
    tensors = [(k, dtype_name(state[k].dtype), tuple(state[k].shape)) for k in keys]
    cache: dict[int, dict] = {}

    def produce(key):
        p = layer_of.get(key)
        if p is None:  # a torch buffer with no nnx twin (num_batches_tracked): torch's own
            return StateDictSource({key: state[key]}).read(key, lazy.full(state[key].shape))
        if id(p) not in cache:
            cache.clear()  # one layer at a time
            cache[id(p)] = torch_values([p], "flax")
        value = np.asarray(cache[id(p)][key])
        return value.astype(np_dtype(dtype_name(state[key].dtype)), copy=False)
    path = Path(path)
    shards = _shards(tensors, max_shard_bytes)
    files, written = [], 0
    if len(shards) == 1 and max_shard_bytes is None:
        written += write_safetensors(path, tensors, produce, {"format": "pt"})
        files.append(str(path))
    else:
        path.mkdir(parents=True, exist_ok=True)
        weight_map = {}
        for i, shard in enumerate(shards):
            name = f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
            written += write_safetensors(path / name, shard, produce, {"format": "pt"})
            files.append(str(path / name))
            weight_map.update({k: name for k, _, _ in shard})
        (path / INDEX).write_text(json.dumps({"metadata": {"total_size": written},
                                              "weight_map": weight_map}, indent=2))
    return {"files": files, "bytes": written, "seconds": time.perf_counter() - start}


def _shards(tensors, limit):
    if not limit:
        return [tensors]
    out, size = [[]], 0
    for t in tensors:
        n = math.prod(t[2]) * np_dtype(t[1]).itemsize
        if out[-1] and size + n > limit:
            out.append([])
            size = 0
        out[-1].append(t)
        size += n
    return out


__all__ = ["save_checkpoint"]
