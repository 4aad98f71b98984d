"""Test-wide settings: strict dtype promotion, warnings as errors (pyproject)."""

import os

import jax
import pytest

jax.config.update("jax_numpy_dtype_promotion", "strict")

IN_CI = bool(os.environ.get("CI"))


def require_torch():
    """Imports torch, or skips — except in CI, where a missing torch is a failure."""
    if IN_CI:
        import torch  # noqa: F401  (an ImportError fails the test in CI)
        return torch
    return pytest.importorskip("torch")
