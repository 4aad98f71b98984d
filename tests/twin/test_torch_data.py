"""reference_torch.lab.data against torchvision's own readers and winit_jax.lab.data."""

import gzip

import numpy as np
import pytest

from tests.conftest import require_torch
from winit_jax.lab import data as D

torch = require_torch()
from torchvision.datasets.mnist import read_image_file, read_label_file  # noqa: E402

from reference_torch.lab import data as T  # noqa: E402


def test_bit_for_bit_with_torchvision_readers(shared_data, test_digits, tmp_path):
    paths = []
    for name in D.FILES["test"]:
        with gzip.open(D.raw_dir(shared_data) / f"{name}.gz") as f:
            (tmp_path / name).write_bytes(f.read())
        paths.append(str(tmp_path / name))
    np.testing.assert_array_equal(read_image_file(paths[0]).numpy(), test_digits[0])
    np.testing.assert_array_equal(read_label_file(paths[1]).numpy(), test_digits[1])


def test_reference_loads_the_one_split_on_disk(shared_data, test_digits):
    data, targets = T.load_split(shared_data, train=False)  # only the .gz test split exists
    assert data.dtype == torch.uint8 and targets.dtype == torch.int64
    np.testing.assert_array_equal(data.numpy(), test_digits[0])
    np.testing.assert_array_equal(targets.numpy(), test_digits[1])
    with pytest.raises(FileNotFoundError, match="train-images"):
        T.load_split(shared_data, train=True)


def test_notebook_a_preprocessing_matches(test_digits):
    images, labels = test_digits
    x, y = T.notebook_a_tensors(torch.from_numpy(images), torch.from_numpy(labels))
    np.testing.assert_array_equal(x.numpy(), D.notebook_a_inputs(images))
    loader = T.notebook_a_loader(x, y, generator=torch.Generator().manual_seed(0))
    batches = list(loader)
    assert len(batches) == 100 and all(len(b[0]) == 100 for b in batches)
    seen = torch.cat([b[1] for b in batches])
    assert torch.equal(torch.sort(seen).values, torch.sort(y).values)  # a shuffle, not a sample


def test_notebook_b_totensor_path_matches(test_digits):
    images, labels = test_digits
    ours = D.notebook_b_inputs(images, labels, n_train=8000)
    theirs = T.notebook_b_tensors(torch.from_numpy(images), torch.from_numpy(labels), n_train=8000)
    assert theirs[4] == pytest.approx(ours[4], rel=1e-5) and theirs[5] == pytest.approx(ours[5], rel=1e-5)
    for a, b in zip(ours[:4], theirs[:4]):
        np.testing.assert_allclose(np.asarray(a), b.numpy(), atol=1e-5)
