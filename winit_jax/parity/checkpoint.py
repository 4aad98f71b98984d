"""Pretrained weights across: a torch checkpoint into an nnx model (typically abstract, from
``nnx.eval_shape``), streamed and sharded, every tensor accounted for; and back.

The key map is not written by hand: the pairing (names, kinds, call order, ``mapping=``)
says which torch layer fills which nnx layer, and each kind's ``to_flax``, run on
``lazy.Lazy`` tensors, records how (a transpose, a reshape, a flip, a split, a stack of
scanned blocks). That record is a ``Plan``: JSON, small, saved and loaded without torch.
Loading reads, converts and places one variable at a time; where a variable is sharded,
each device's slice is read from the file directly (the matching slice of a transposed
source), so each process reads only what its devices hold.
"""

from __future__ import annotations

import collections
import dataclasses
import fnmatch
import json
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import jax
import numpy as np
from flax import nnx

from winit_jax.kinds import ParityError, at_path
from winit_jax.parity import lazy
from winit_jax.parity.checkpoint_files import (
    Source,
    dtype_name,
    open_source,
)

PLAN_VERSION = 1
READERS, AHEAD = 2, 2  # reading threads; variables read ahead of the one being placed
_FILLED = (nnx.Param, nnx.BatchStat)


# --- the plan -------------------------------------------------------------------------------

@dataclasses.dataclass
class Plan:
    """How a torch checkpoint fills an nnx model: for each nnx variable path, the recipe
    (``lazy`` node) that reads it; the torch keys, shapes and dtypes in ``state_dict``
    order; the torch buffers with no nnx twin (``ignored``); the tied names (``ties``:
    ``{name: the name it is tied to}``). Save it with ``save``; ``Plan.load`` needs no
    torch."""

    variables: dict[str, dict]
    torch_tensors: dict[str, tuple[tuple[int, ...], str]]
    ignored: dict[str, str]
    ties: dict[str, str]

    def save(self, path) -> None:
        Path(path).write_text(json.dumps({"version": PLAN_VERSION, **dataclasses.asdict(self)}))

    @classmethod
    def from_json(cls, raw: dict) -> Plan:
        """A plan from its JSON object (``dataclasses.asdict`` of one)."""
        return cls(**{**raw, "torch_tensors": {k: (tuple(s), d) for k, (s, d)
                                               in raw["torch_tensors"].items()}})

    @classmethod
    def load(cls, path) -> Plan:
        try:
            raw = json.loads(Path(path).read_text())
            if raw.pop("version") != PLAN_VERSION:
                raise ValueError("another version")
            return cls.from_json(raw)
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise ParityError(f"plan: {path} is not a checkpoint plan ({e})") from None

    def keys_read(self) -> dict[str, list[str]]:
        """``{torch key: the nnx variables it fills}``."""
        out: dict[str, list[str]] = {}
        for path, node in self.variables.items():
            for k in lazy.keys(node):
                out.setdefault(k, []).append(path)
        return out


def _variable_paths(model) -> dict[int, str]:
    return {id(v): "/".join(map(str, path)) for path, v in nnx.iter_graph(model)
            if isinstance(v, nnx.Variable)}


def make_plan(torch_module, model, *, mapping: Mapping[str, str] | None = None,
              pairing=None, inputs=None, kwargs: Mapping | None = None,
              flax_inputs=None) -> Plan:
    """The ``Plan`` that loads ``torch_module``'s checkpoints into ``model``.

    Args:
      torch_module: the torch original; on the meta device is enough (``with
        torch.device("meta"): Model(config)``): only names, shapes, dtypes and classes
        are read.
      model: the nnx port (abstract is enough).
      mapping: as ``from_torch``'s.
      pairing: as ``mapping`` (above).
      inputs: as ``mapping`` (above).
      kwargs: as ``mapping`` (above).
      flax_inputs: as ``mapping`` (above).

    Returns:
      ``Plan``.

    Raises:
      ParityError: what ``pair`` refuses; a kind whose conversion cannot be traced; a
        model variable that no torch tensor fills.
    """
    from winit_jax.kinds.stack import SliceVariable
    from winit_jax.parity.pairing import resolve
    from winit_jax.parity.pairing.transfer import _by_inputs

    mapping, pairing = _by_inputs(torch_module, model, mapping, pairing, inputs, kwargs,
                                  flax_inputs)
    pairing = resolve(torch_module, model, mapping, pairing, "load_checkpoint")
    state = torch_module.state_dict(keep_vars=True)
    key_of: dict[int, str] = {}
    for key, t in state.items():
        key_of.setdefault(id(t), key)
    paths = _variable_paths(model)
    variables: dict[str, dict] = {}
    stacked: dict[str, dict[int, dict]] = {}
    for p in pairing:
        try:
            values = p.kind.to_flax(lazy.Traced(p.torch_module, key_of), p.flax_layer)
        except lazy.Untraceable as e:
            raise ParityError(f"checkpoint plan: torch {p.torch_name} ({p.kind.name}): its "
                              f"conversion uses {e}, which the streamed loader does not trace; "
                              "load the torch module and use from_torch") from None
        for sub, value in values.items():
            if not isinstance(value, lazy.Lazy):
                raise ParityError(f"checkpoint plan: torch {p.torch_name} ({p.kind.name}) -> "
                                  f"nnx {sub}: computed, not read from the checkpoint")
            var = at_path(p.flax_layer, sub)
            where = f"torch {p.torch_name or '<root>'} -> nnx {p.flax_path}/{sub}"
            if isinstance(var, SliceVariable):
                path = paths[id(var.variable)]
                stacked.setdefault(path, {})[var.k] = value.node
                continue
            want = tuple(var.get_value().shape)
            if value.shape != want:
                raise ParityError(f"{where}: shape {value.shape} (converted) vs {want}")
            variables[paths[id(var)]] = value.node
    for path, blocks in stacked.items():
        want = tuple(at_path(model, path).get_value().shape)
        if sorted(blocks) != list(range(want[0])):
            raise ParityError(f"nnx {path}: a stack of {want[0]} blocks, filled from torch "
                              f"blocks {sorted(blocks)}")
        node = lazy._join("stack", [lazy.Lazy(blocks[k]) for k in range(want[0])], 0).node
        if lazy.shape_of(node) != want:
            raise ParityError(f"nnx {path}: shape {lazy.shape_of(node)} (converted) vs {want}")
        variables[path] = node
    unfilled = [path for path, v in sorted((paths[id(v)], v) for _, v in nnx.iter_graph(model)
                                           if isinstance(v, _FILLED))
                if path not in variables]
    if unfilled:
        raise ParityError(f"nnx {unfilled[0]}: no torch tensor fills it ({len(unfilled)} "
                          "variables unfilled)")
    read = {k for node in variables.values() for k in lazy.keys(node)}
    buffers = {id(b) for b in torch_module.buffers()}
    ignored, ties = {}, dict(pairing.ties)
    for key, t in state.items():
        owner = key_of[id(t)]
        if owner != key:
            ties.setdefault(key, owner)
        elif key not in read:
            if id(t) not in buffers:
                raise ParityError(f"torch {key}: a parameter no nnx variable takes")
            ignored[key] = "a torch buffer with no nnx twin"
    tensors = {k: (tuple(t.shape), dtype_name(t.dtype)) for k, t in state.items()}
    return Plan(variables, tensors, ignored, ties)


# --- loading --------------------------------------------------------------------------------

@dataclasses.dataclass
class LoadReport:
    """What ``load_checkpoint`` did: ``used`` (checkpoint key -> the nnx variables it
    filled), ``ignored`` (key -> why), ``tied`` (a key read in place of its tie partner, or
    skipped as the partner's copy), ``filled`` (nnx variable paths), ``bytes_read`` (of the
    tensors' data, by this process), ``seconds``, ``whole_reads`` (variables whose device
    slices could not be mapped to source slices, so their source was read whole)."""

    used: dict[str, list[str]]
    ignored: dict[str, str]
    tied: dict[str, str]
    filled: list[str]
    bytes_read: int
    seconds: float
    whole_reads: list[str]
    # {nnx variable: "bfloat16 -> float32"}: tensors converted to the variable's dtype
    converted: dict[str, str] = dataclasses.field(default_factory=dict)
    notes: list[str] = dataclasses.field(default_factory=list)

    def __str__(self) -> str:
        text = (f"{len(self.used)} checkpoint tensors into {len(self.filled)} nnx variables, "
                f"{len(self.ignored)} ignored ({', '.join(sorted(set(self.ignored.values())))}"
                f"), {len(self.tied)} tied; {self.bytes_read / 1e6:.1f} MB read in "
                f"{self.seconds:.2f} s")
        if self.converted:
            kinds = collections.Counter(self.converted.values())
            text += "; converted: " + ", ".join(f"{n} {k}" for k, n in sorted(kinds.items()))
        return "\n".join([text, *(f"note: {n}" for n in self.notes)])


def _resolve_keys(plan: Plan, source: Source, ignore: Sequence[str]) -> tuple[dict, dict, dict]:
    """(key in the plan -> key in the checkpoint, tied, ignored): every plan key found
    (itself or a name it is tied with), every checkpoint key used, tied or ignored; else
    one error naming the first key that is not."""
    have = set(source.keys())
    aliases: dict[str, list[str]] = {}
    for name, owner in plan.ties.items():
        aliases.setdefault(owner, []).append(name)
        aliases.setdefault(name, []).append(owner)
    rename, tied, missing = {}, {}, []
    for key in plan.keys_read():
        if key in have:
            rename[key] = key
            continue
        found = [a for a in aliases.get(key, []) if a in have]
        if not found:
            missing.append(key)
            continue
        rename[key], tied[found[0]] = found[0], f"read for {key} (tied)"
    ignored, unexpected = {}, []
    for key in source.keys():
        if key in rename.values():
            continue
        if key in plan.ties or key in aliases:
            tied[key] = f"a copy of {plan.ties.get(key, key)} (tied)"
        elif key in plan.ignored:
            ignored[key] = plan.ignored[key]
        elif any(fnmatch.fnmatchcase(key, pattern) for pattern in ignore):
            ignored[key] = "ignore= asked"
        else:
            unexpected.append(key)
    if missing or unexpected:
        raise _wrong_keys(missing, unexpected, plan, source)
    return rename, tied, ignored


def _grouped(keys: list[str], most: int = 4) -> str:
    """Keys grouped by layer, numbered layers as one (``bert.encoder.layer.#.output.dense:
    weight, bias (x2)``), the first ``most`` groups."""
    groups: dict[str, tuple[set, set]] = {}
    for key in keys:
        layer, _, tensor = key.rpartition(".")
        template = ".".join("#" if part.isdigit() else part for part in layer.split("."))
        tensors, layers = groups.setdefault(template or "<root>", (set(), set()))
        tensors.add(tensor)
        layers.add(layer)
    shown = [f"{t}: {', '.join(sorted(ts))}" + (f" (x{len(ls)})" if len(ls) > 1 else "")
             for t, (ts, ls) in list(groups.items())[:most]]
    more = len(groups) - most
    return "; ".join(shown) + (f"; and {more} more layers" if more > 0 else "")


def _wrong_keys(missing: list[str], unexpected: list[str], plan: Plan,
                source: Source) -> ParityError:
    """One error for a checkpoint that does not fit: the missing and the unexpected keys
    grouped by layer, and the top-level prefixes of the file against the model's."""
    def prefixes(keys):
        return sorted({k.split(".")[0] for k in keys})
    file_top, model_top = prefixes(source.keys()), prefixes(plan.torch_tensors)
    parts = []
    if missing:
        parts.append(f"{len(missing)} keys the model needs are missing ({_grouped(missing)})")
    if unexpected:
        parts.append(f"{len(unexpected)} keys are not the model's ({_grouped(unexpected)}; "
                     "pass ignore=[...] to skip them)")
    looks = ("" if file_top == model_top else
             f"; the file's top-level names are {file_top}, the model's {model_top}: "
             "another model's checkpoint?")
    error = ParityError(f"checkpoint: {source.what} does not fit this model: "
                        + "; ".join(parts) + looks + "; nothing was changed")
    error.missing, error.unexpected = list(missing), list(unexpected)
    return error


def _renamed(node: dict, rename: dict, source: Source) -> dict:
    if node["op"] == "read":
        return {**node, "key": rename[node["key"]], "dtype": source.dtype(rename[node["key"]])}
    out = dict(node)
    if "x" in node:
        out["x"] = _renamed(node["x"], rename, source)
        if node["op"] != "cast":
            out["dtype"] = out["x"]["dtype"]
    if "xs" in node:
        out["xs"] = [_renamed(x, rename, source) for x in node["xs"]]
        out["dtype"] = out["xs"][0]["dtype"]
    return out


def _check_leaves(node: dict, source: Source, path: str) -> None:
    if node["op"] == "read":
        key, want = node["key"], tuple(node["shape"])
        if tuple(source.shape(key)) != want:
            raise ParityError(f"checkpoint: {key} has shape {tuple(source.shape(key))}; the "
                              f"torch module's is {want} (for nnx {path})")
        return
    for child in ([node["x"]] if "x" in node else []) + node.get("xs", []):
        _check_leaves(child, source, path)


def _sharding(var, mesh):
    """The sharding ``var`` asks for: its abstract value's, or its metadata's partition
    names on ``mesh``; one device where it asks for none."""
    from jax.sharding import NamedSharding, PartitionSpec, SingleDeviceSharding

    v = var.get_value()
    s = getattr(v, "sharding", None)
    spec = s.spec if isinstance(s, NamedSharding) else None
    if spec is None:
        meta = var.get_metadata() if hasattr(var, "get_metadata") else {}
        names = meta.get("out_sharding") or meta.get("sharding_names") or meta.get("sharding")
        spec = PartitionSpec(*names) if names else None
    if spec is None:  # on every device of the mesh, or on one
        return (NamedSharding(mesh, PartitionSpec()) if mesh is not None
                else SingleDeviceSharding(jax.local_devices()[0]))
    if mesh is not None:
        return NamedSharding(mesh, spec)
    if isinstance(s, NamedSharding) and isinstance(s.mesh, jax.sharding.Mesh):
        return s
    raise ParityError(f"mesh: the model's variables are sharded ({spec}) over an abstract "
                      "mesh; pass mesh= (the jax.sharding.Mesh to place them on)")


def _spans(index, shape) -> tuple[tuple[int, int], ...]:
    return tuple(sl.indices(n)[:2] for sl, n in zip(index, shape)) if index else lazy.full(shape)


def load_checkpoint(source, model, *, torch_module=None, plan: Plan | str | None = None,
                    mapping: Mapping[str, str] | None = None, pairing=None, inputs=None,
                    kwargs: Mapping | None = None, flax_inputs=None, dtype=None,
                    mesh=None, ignore: Sequence[str] = ()) -> LoadReport:
    """Fills the nnx ``model`` in place from a torch checkpoint, streamed.

    Each nnx variable is read, converted and placed on its own (with its sharding: each
    device's slice read from the file directly), so host memory above the finished model
    stays near the largest tensor, whatever the checkpoint's size. Nothing is written to
    the model until every variable is ready: an error leaves it as it was.

    Args:
      source: a ``.safetensors`` file, a directory of them (``model.safetensors.index.json``),
        a ``.pt``/``.pth``/``.bin`` file (``torch.load(mmap=True, weights_only=True)``), or a
        state dict.
      model: the nnx port, typically abstract (``nnx.eval_shape(lambda: Port(...))``); its
        variables' shardings (``nnx.with_partitioning``, built under ``jax.set_mesh``) say
        where each goes.
      torch_module: the torch original, on the meta device is enough; or pass ``plan``.
      plan: a ``Plan`` (or its file) from ``make_plan``: loads without torch.
      mapping: as ``from_torch``'s, to pair the two.
      pairing: as ``mapping`` (above).
      inputs: as ``mapping`` (above).
      kwargs: as ``mapping`` (above).
      flax_inputs: as ``mapping`` (above).
      dtype: cast every floating tensor to it; default: each to the dtype the model's
        variable declares (a bfloat16 file into a port with float32 BatchNorm statistics
        keeps them float32; into a bfloat16 port, no float32 detour), converted one tensor
        at a time; the report counts the conversions.
      mesh: the ``jax.sharding.Mesh`` for variables sharded over an abstract mesh.
      ignore: ``fnmatch`` patterns of checkpoint keys to skip on purpose.

    Returns:
      ``LoadReport``: every checkpoint key used, tied or ignored, every variable filled.

    Raises:
      ParityError: a key the model needs is missing, a key is not used, a shape does not
        fit, a tie the port does not keep, what ``pair`` refuses; the model is unchanged.

    Examples:
      >>> with torch.device("meta"):                                   # doctest: +SKIP
      ...     net = transformers.GPT2LMHeadModel(config)
      >>> port = nnx.eval_shape(lambda: GPT2(config, nnx.Rngs(0)))     # doctest: +SKIP
      >>> print(parity.load_checkpoint("gpt2/model.safetensors", port,
      ...                              torch_module=net))              # doctest: +SKIP
    """
    start = time.perf_counter()
    if plan is None:
        if torch_module is None:
            raise ParityError("torch_module: load_checkpoint needs the torch module (the meta "
                              "device is enough) or a plan=")
        plan = make_plan(torch_module, model, mapping=mapping, pairing=pairing, inputs=inputs,
                         kwargs=kwargs, flax_inputs=flax_inputs)
    elif not isinstance(plan, Plan):
        plan = Plan.load(plan)
    source = open_source(source)
    rename, tied, ignored = _resolve_keys(plan, source, ignore)
    variables, converted = {}, {}
    for path, node in plan.variables.items():
        try:
            var = at_path(model, path)
        except (AttributeError, IndexError, KeyError):
            raise ParityError(f"plan: nnx {path} is not in the model (a plan made for "
                              "another model?)") from None
        node = _renamed(node, rename, source)
        _check_leaves(node, source, path)
        want = tuple(var.get_value().shape)
        if lazy.shape_of(node) != want:
            raise ParityError(f"nnx {path}: shape {want}; the plan reads "
                              f"{lazy.shape_of(node)}")
        have = dtype_name(var.get_value().dtype)
        if _is_float(node["dtype"]) != _is_float(have):
            raise ParityError(f"nnx {path}: dtype {have}; the checkpoint holds {node['dtype']}")
        # the port's declared dtype decides where the value lands (dtype= overrides), one
        # tensor at a time: a bfloat16 file keeps a port's float32 BatchNorm statistics
        target = dtype_name(dtype) if dtype is not None else have
        if _is_float(node["dtype"]) and node["dtype"] != target:
            converted[path] = f"{node['dtype']} -> {target}"
            node = {"op": "cast", "shape": node["shape"], "dtype": target, "x": node}
        variables[path] = (var, node)
    arrays, whole = {}, []
    with ThreadPoolExecutor(max_workers=READERS) as pool:
        # each variable's pieces (one per distinct device slice) read by READERS threads,
        # at most AHEAD variables in flight: the reads (which release the GIL) overlap the
        # placing, and host memory holds a few tensors at most
        pending: collections.deque = collections.deque()

        def place():
            path, shape, sharding, futures, notes = pending.popleft()
            arrays[path] = jax.make_array_from_callback(
                shape, sharding, lambda index: futures[_spans(index, shape)].result())
            if notes and len(futures) > 1:
                whole.append(path)
        for path, (var, node) in variables.items():
            shape = lazy.shape_of(node)
            sharding = _sharding(var, mesh)
            notes: list = []
            spans = {_spans(index, shape) for index in
                     sharding.addressable_devices_indices_map(shape).values()}
            futures = {sp: pool.submit(lazy.read, node, sp, source, notes) for sp in spans}
            pending.append((path, shape, sharding, futures, notes))
            if len(pending) > AHEAD:
                place()
        while pending:
            place()
    for path, (var, _) in variables.items():
        var.set_value(arrays[path])
    source.close()
    used = {rename[k]: v for k, v in plan.keys_read().items()}
    return LoadReport(used, ignored, tied, list(variables), source.bytes_read,
                      time.perf_counter() - start, whole, converted, list(source.notes))


def _is_float(name: str) -> bool:
    return name == "bfloat16" or np.issubdtype(np.dtype(name), np.floating)


__all__ = ["LoadReport", "Plan", "load_checkpoint", "make_plan"]
