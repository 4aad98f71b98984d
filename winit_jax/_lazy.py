"""PEP 562 lazy names for a package's ``__init__``: one helper for the library and the lab."""

from __future__ import annotations

import importlib


def lazy(package: str, names: dict[str, str], submodules: tuple[str, ...] = ()):
    """``(__getattr__, __dir__)`` for ``package``: ``names`` maps a public name to the module
    that defines it (imported on first access, then cached in the package); ``submodules``
    are returned as modules."""
    def __getattr__(name: str):
        if name in submodules:
            return importlib.import_module(f"{package}.{name}")
        if name in names:
            value = getattr(importlib.import_module(names[name]), name)
            setattr(importlib.import_module(package), name, value)
            return value
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    def __dir__():
        return sorted(set(vars(importlib.import_module(package))) | set(names) | set(submodules))

    return __getattr__, __dir__
