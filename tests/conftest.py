"""Test-wide settings: strict dtype promotion, warnings as errors (pyproject)."""

import os
from pathlib import Path


def _pin_xdist_worker() -> None:
    """Pins xdist worker ``gwN`` (and the processes it starts) to CPU ``N``.

    Two JAX processes sharing two cores slow each other down about 7x (XLA's thread pools
    contend); pinned, each runs as fast as alone (measured: BENCHMARKS.md, "Suite time").
    Done before JAX starts a thread, so that its pools size themselves to one CPU.
    """
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    count = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "0"))
    cpus = sorted(os.sched_getaffinity(0))
    if not worker.startswith("gw") or not 1 < count <= len(cpus):
        return
    cpu = {cpus[int(worker[2:]) % len(cpus)]}
    try:
        for tid in os.listdir("/proc/self/task"):  # every thread the worker already has
            os.sched_setaffinity(int(tid), cpu)
    except OSError:  # a sandbox that forbids it: unpinned, slower, still correct
        pass


_pin_xdist_worker()

import jax  # noqa: E402  (after the pinning)
import pytest  # noqa: E402

from winit_jax._cache import enable_persistent_cache

jax.config.update("jax_numpy_dtype_promotion", "strict")


# JAX's persistent compilation cache: the xdist workers, the CLI subprocesses and the next
# run share compiled programs (most tests compile the same small models)
enable_persistent_cache()

IN_CI = bool(os.environ.get("CI"))


def require_torch():
    """Imports torch, or skips — except in CI, where a missing torch is a failure."""
    if IN_CI:
        import torch  # noqa: F401  (an ImportError fails the test in CI)
        return torch
    return pytest.importorskip("torch")


def subprocess_env(**extra) -> dict:
    """The environment for a CLI subprocess: this one's, less JAX's, XLA's and our own
    settings (a test names those it wants in ``extra``) but for ``WINIT_JAX_CACHE``, so
    that the subprocesses share the suite's compilation cache (a cold run stays cold)."""
    keep = {k: v for k, v in os.environ.items()
            if not k.startswith(("JAX_", "WINIT_", "XLA_")) or k == "WINIT_JAX_CACHE"}
    return {**keep, "PYTHONPATH": str(Path(__file__).resolve().parents[1]), **extra}


SHARED_DATA = Path(os.environ.get("WINIT_SHARED_DATA",
                                  Path(__file__).resolve().parents[2] / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data`` with the real MNIST test split; required in CI."""
    if not (SHARED_DATA / "MNIST" / "raw" / "t10k-images-idx3-ubyte.gz").exists():
        if IN_CI:
            pytest.fail(f"CI needs the real MNIST test split under {SHARED_DATA}")
        pytest.skip(f"no MNIST test split under {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture(scope="session")
def test_digits(shared_data):
    """The 10,000 real test digits (uint8 images, int64 labels)."""
    from winit_jax.lab.data import load_mnist
    return load_mnist(shared_data, "test")


@pytest.fixture(scope="session")
def sample_dataset(shared_data):
    """``load_dataset('sample')``: the 5,000 embedded digits to train, the real test split."""
    from winit_jax.lab.experiment import load_dataset
    return load_dataset("sample", shared_data)


def pytest_collection_modifyitems(config, items):
    """Under xdist, the ``slow`` tests first (a stable sort: each group keeps the files'
    order). xdist hands tests out in collection order, so the heaviest ones (minutes of
    MobileNetV2 and 10-epoch training, marked ``slow``) no longer come last and leave one
    worker idle while the other finishes them (BENCHMARKS.md, "The test suite's time")."""
    if os.environ.get("PYTEST_XDIST_WORKER"):
        items.sort(key=lambda item: item.get_closest_marker("slow") is None)
