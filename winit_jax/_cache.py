"""JAX's persistent compilation cache for the command line and the test suite.

On a CPU most of a cold run is XLA compiling small programs; with the cache a second run
(another process, a test worker, the next CI run) loads them instead. One directory per
jaxlib version and CPU (its flags: a program compiled for AVX-512 must not be loaded on a
machine without it), under ``~/.cache/winit-jax``; ``WINIT_JAX_CACHE`` moves it, and
``WINIT_JAX_CACHE=off`` turns it off. A library import never turns it on.
"""

from __future__ import annotations

import hashlib
import os
import platform
from pathlib import Path


def cache_dir() -> Path | None:
    """The cache directory for this machine and jaxlib, or None when turned off."""
    import jaxlib

    given = os.environ.get("WINIT_JAX_CACHE")
    if given == "off":
        return None
    if given:
        return Path(given)
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line for line in f if line.startswith("flags")), "")
    except OSError:
        cpu = ""
    tag = hashlib.sha256(f"{jaxlib.__version__} {cpu or platform.processor()}".encode())
    return Path.home() / ".cache" / "winit-jax" / f"xla-{tag.hexdigest()[:16]}"


def enable_persistent_cache() -> Path | None:
    """Turns the cache on for this process and the processes it starts (through the
    environment); every program is cached, however quickly it compiled. Returns the
    directory (None when turned off)."""
    import jax

    path = cache_dir()
    if path is None:
        return None
    settings = {"JAX_COMPILATION_CACHE_DIR": str(path),
                "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
                "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0"}
    os.environ.update(settings)
    jax.config.update("jax_compilation_cache_dir", str(path))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    return path
