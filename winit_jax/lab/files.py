"""Atomic writes: a reader never sees a half-written file."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import secrets
from pathlib import Path


def plain(obj):
    """``obj`` as JSON data: dataclasses (the lab's typed rows) as dicts, tuples as lists,
    NaN and inf as None (JSON has neither)."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return plain({f.name: getattr(obj, f.name) for f in dataclasses.fields(obj)})
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [plain(v) for v in obj]
    return obj


def write_atomic(directory, name: str, data: bytes) -> Path:
    """Writes ``directory/name`` via a temporary file, fsync and rename.

    The temporary file is created with mode 0o666 and the process umask applies, as for
    any new file (the umask is never read or changed: that is not thread-safe).
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tmp = directory / f".{name}.{secrets.token_hex(8)}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, directory / name)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return directory / name


def write_json(directory, name: str, obj) -> Path:
    text = json.dumps(plain(obj), indent=2, allow_nan=False) + "\n"
    return write_atomic(directory, name, text.encode())
