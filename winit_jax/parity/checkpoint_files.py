"""Checkpoint files, read a slice at a time and written a tensor at a time.

safetensors is read here without the ``safetensors`` package or torch: an 8-byte header
length, a JSON header (each tensor's dtype, shape and byte range), then the data, row
major. Each tensor is a read-only ``np.memmap`` of its byte range, so that reading a
slice touches only the pages that hold it (a slice of the leading axes is one contiguous
range). torch's ``.pt``/``.bin`` files are opened with ``torch.load(mmap=True,
weights_only=True)``; a state dict is used as it is.
"""

from __future__ import annotations

import json
import math
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from winit_jax.kinds import ParityError

# safetensors' dtype names (the format's spec) and NumPy's; bfloat16 through ml_dtypes
_ST_DTYPES = {"F64": "float64", "F32": "float32", "F16": "float16", "BF16": "bfloat16",
              "I64": "int64", "I32": "int32", "I16": "int16", "I8": "int8", "U8": "uint8",
              "BOOL": "bool"}
_ST_NAMES = {v: k for k, v in _ST_DTYPES.items()}
INDEX = "model.safetensors.index.json"
# a large run of bytes is read in chunks by two threads (copying from the page cache is
# what bounds a read; one core copies about half as fast as two)
CHUNK = 16 << 20
_CHUNKS = ThreadPoolExecutor(max_workers=2, thread_name_prefix="winit-read")


def np_dtype(name: str) -> np.dtype:
    if name == "bfloat16":
        import ml_dtypes
        return np.dtype(ml_dtypes.bfloat16)
    return np.dtype(name)


def dtype_name(dtype) -> str:
    """A dtype's name (``"float32"``, ``"bfloat16"``) from NumPy's, JAX's or torch's."""
    text = str(dtype)
    if text.startswith("torch."):
        return text.removeprefix("torch.")
    name = np.dtype(dtype).name
    return name


def _spans_index(spans) -> tuple[slice, ...]:
    return tuple(slice(a, b) for a, b in spans)


class Source:
    """Checkpoint tensors by key: ``keys``, ``shape``, ``dtype`` (a name), ``read(key,
    spans)``; counts the bytes it reads."""

    def __init__(self, what: str):
        self.what, self.bytes_read, self._lock = what, 0, threading.Lock()
        self.notes: list[str] = []  # what the report must say of how it was read

    def _count(self, out: np.ndarray) -> np.ndarray:
        with self._lock:  # reads run in threads
            self.bytes_read += out.nbytes
        return out

    def close(self) -> None:
        pass


class SafetensorsSource(Source):
    """One ``.safetensors`` file, or a directory sharded with ``model.safetensors.index.json``
    (or a directory holding ``*.safetensors`` files)."""

    def __init__(self, path: Path):
        super().__init__(str(path))
        if path.is_dir():
            index = path / INDEX
            if index.exists():
                try:
                    files = sorted(set(json.loads(index.read_text())["weight_map"].values()))
                except (ValueError, KeyError) as e:
                    raise ParityError(f"source: {index} is not a safetensors index "
                                      f"(weight_map): {e}") from None
            else:
                files = sorted(p.name for p in path.glob("*.safetensors"))
            if not files:
                raise ParityError(f"source: {path} holds no .safetensors file")
            paths = [path / f for f in files]
        else:
            paths = [path]
        self.entries: dict[str, tuple[Path, str, tuple, int, int]] = {}
        self._files: dict[Path, object] = {}
        for p in paths:
            for key, (dtype, shape, begin, end) in read_header(p).items():
                if key in self.entries:
                    raise ParityError(f"source: {key} is in both {self.entries[key][0].name} "
                                      f"and {p.name}")
                self.entries[key] = (p, dtype, shape, begin, end)

    def keys(self):
        return list(self.entries)

    def shape(self, key):
        return self.entries[key][2]

    def dtype(self, key):
        return self.entries[key][1]

    def read(self, key, spans):
        path, dtype, shape, begin, end = self.entries[key]
        np_type = np_dtype(dtype)
        out_shape = [b - a for a, b in spans]
        if math.prod(shape) == 0 or math.prod(out_shape) == 0:
            return np.zeros(out_shape, np_type)
        run = _contiguous(shape, spans)
        if run is not None:  # one range of bytes: one read into the array, no page faults
            first, count = run
            out = _aligned_empty(out_shape, np_type)
            with self._lock:
                if path not in self._files:
                    self._files[path] = open(path, "rb")
                f = self._files[path]
            buf, at = out.reshape(-1).view(np.uint8), begin + first * np_type.itemsize
            chunks = [(a, min(a + CHUNK, buf.size)) for a in range(0, buf.size, CHUNK)]
            got = sum(_CHUNKS.map(lambda c: os.preadv(f.fileno(), [buf[c[0]:c[1]]], at + c[0]),
                                  chunks))
            if got != buf.size:
                raise ParityError(f"source: {path.name}: short read of {key}")
            return self._count(out)
        mm = np.memmap(path, dtype=np_type, mode="r", offset=begin, shape=shape)
        return self._count(np.array(mm[_spans_index(spans)]))

    def close(self) -> None:
        for f in self._files.values():
            f.close()
        self._files.clear()


def _aligned_empty(shape, dtype: np.dtype, align: int = 64) -> np.ndarray:
    """An uninitialised array whose data starts on an ``align``-byte boundary: JAX's CPU
    client then uses its memory as it is (no copy) when the array is placed."""
    n = math.prod(shape) * dtype.itemsize
    raw = np.empty(n + align, np.uint8)
    start = -raw.ctypes.data % align
    return raw[start:start + n].view(dtype).reshape(shape)


def _contiguous(shape, spans) -> tuple[int, int] | None:
    """(first element, element count) where ``spans`` of a row-major array of ``shape`` is
    one run of memory: whole on every axis after the last partial one, one index on every
    axis before it. None otherwise."""
    partial = [i for i, (a, b) in enumerate(spans) if (a, b) != (0, shape[i])]
    last = partial[-1] if partial else 0
    if any(spans[i][1] - spans[i][0] != 1 for i in range(last)):
        return None
    strides = [math.prod(shape[i + 1:]) for i in range(len(shape))]
    first = sum(a * st for (a, _), st in zip(spans, strides))
    return first, math.prod(b - a for a, b in spans)


def read_header(path: Path) -> dict[str, tuple[str, tuple, int, int]]:
    """``{key: (dtype name, shape, first byte, end byte)}`` of a safetensors file (byte
    offsets from the start of the file)."""
    try:
        with open(path, "rb") as f:
            n = int.from_bytes(f.read(8), "little")
            if not 2 <= n <= 100_000_000:
                raise ValueError("no safetensors header")
            header = json.loads(f.read(n))
        size = os.path.getsize(path)
    except (OSError, ValueError) as e:
        raise ParityError(f"source: {path} is not a safetensors file ({e})") from None
    out = {}
    for key, entry in header.items():
        if key == "__metadata__":
            continue
        if entry["dtype"] not in _ST_DTYPES:
            raise ParityError(f"source: {path.name}: {key} has dtype {entry['dtype']}, not "
                              f"read here ({', '.join(_ST_DTYPES)})")
        begin, end = (8 + n + int(o) for o in entry["data_offsets"])
        if end > size:
            raise ParityError(f"source: {path.name} is truncated ({key} ends at byte {end} of "
                              f"{size})")
        out[key] = (_ST_DTYPES[entry["dtype"]], tuple(entry["shape"]), begin, end)
    return out


class StateDictSource(Source):
    """A state dict of torch tensors or NumPy arrays (a ``.pt``/``.bin`` file's, memory
    mapped)."""

    def __init__(self, state: dict, what: str = "state dict"):
        super().__init__(what)
        self.state = state

    def keys(self):
        return list(self.state)

    def shape(self, key):
        return tuple(self.state[key].shape)

    def dtype(self, key):
        return dtype_name(self.state[key].dtype)

    def read(self, key, spans):
        t = self.state[key][_spans_index(spans)]
        if hasattr(t, "detach"):
            import torch
            t = t.detach().cpu()
            if t.dtype == torch.bfloat16:
                return self._count(t.contiguous().view(torch.int16).numpy().view(
                    np_dtype("bfloat16")).copy())
            return self._count(t.numpy().copy())
        return self._count(np.array(t))


def open_source(source) -> Source:
    """A ``Source`` for a path (safetensors file or directory, ``.pt``/``.bin``) or a state
    dict; one ``ParityError`` naming the argument otherwise."""
    if isinstance(source, Source):
        return source
    if isinstance(source, dict) or hasattr(source, "keys") and hasattr(source, "__getitem__"):
        return StateDictSource(dict(source))
    if not isinstance(source, (str, os.PathLike)):
        raise ParityError(f"source: a path or a state dict, got {type(source).__name__}")
    path = Path(source)
    if not path.exists():
        raise ParityError(f"source: {path} does not exist")
    if path.is_dir() or path.suffix == ".safetensors":
        return SafetensorsSource(path)
    if path.suffix in (".pt", ".pth", ".bin"):
        import torch
        try:
            state = torch.load(path, map_location="cpu", mmap=True, weights_only=True)
        except Exception as e:
            raise ParityError(f"source: {path} is not a torch checkpoint torch.load can read "
                              f"with weights_only=True: {str(e).splitlines()[0]}") from None
        notes = []
        if isinstance(state, dict) and "state_dict" in state and isinstance(
                state["state_dict"], dict):
            others = sorted(k for k in state if k != "state_dict")
            notes.append(f"{path.name} is a training checkpoint: its 'state_dict' entry read"
                         + (f" ({', '.join(others[:4])} left)" if others else ""))
            state = state["state_dict"]
        if not isinstance(state, dict):
            raise ParityError(f"source: {path} holds a {type(state).__name__}, not a state dict")
        out = StateDictSource(state, str(path))
        out.notes.extend(notes)
        return out
    raise ParityError(f"source: {path}: not a .safetensors file or directory, .pt, .pth or .bin")


# --- writing ------------------------------------------------------------------------------

def write_safetensors(path: Path, tensors: list[tuple[str, str, tuple]], produce,
                      metadata: dict | None = None) -> int:
    """Writes ``tensors`` (``(key, dtype name, shape)``, in order) to ``path``: the header
    first (every shape is known), then each tensor as ``produce(key)`` makes it, one at a
    time. Written to a temporary name and renamed, so a failure leaves no file. Returns
    the bytes written."""
    header, at = {}, 0
    for key, dtype, shape in tensors:
        n = math.prod(shape) * np_dtype(dtype).itemsize
        header[key] = {"dtype": _ST_NAMES[dtype], "shape": list(shape),
                       "data_offsets": [at, at + n]}
        at += n
    if metadata:
        header["__metadata__"] = metadata
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)  # the data starts 8-byte aligned, as safetensors writes it
    tmp = path.with_name(path.name + ".partial")
    try:
        with open(tmp, "wb") as f:
            f.write(len(raw).to_bytes(8, "little"))
            f.write(raw)
            for key, dtype, shape in tensors:
                value = np.asarray(produce(key), order="C")  # (ascontiguousarray makes 0-d 1-d)
                if value.dtype != np_dtype(dtype) or tuple(value.shape) != tuple(shape):
                    raise ParityError(f"save: {key} came out {value.dtype} {value.shape}, "
                                      f"planned {dtype} {tuple(shape)}")
                f.write(value.reshape(-1).view(np.uint8).data)  # no copy
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return 8 + len(raw) + at


__all__ = ["INDEX", "SafetensorsSource", "Source", "StateDictSource", "dtype_name",
           "np_dtype", "open_source", "read_header", "write_safetensors"]
