"""MNIST the notebooks' way: torchvision datasets, TensorDataset, DataLoader, ToTensor.

Reads the same cache as ``winit_jax.lab.data`` (``<root>/MNIST/raw/``).
``torchvision.datasets.MNIST`` insists on all four uncompressed files; where only
one split is on disk (or only its ``.gz``), its own IDX readers read that split.
"""

import gzip
import shutil
import tempfile
from pathlib import Path

import torch
from torch.utils.data import (BatchSampler, DataLoader, RandomSampler, SequentialSampler,
                              TensorDataset)
from torchvision import datasets, transforms
from torchvision.datasets.mnist import read_image_file, read_label_file

# torchvision.datasets.MNIST.resources, without the ".gz" (the raw IDX names).
FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
         "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}


def load_split(root, train=True):
    """(data uint8 (N, 28, 28), targets int64 (N,)) as torchvision gives them."""
    try:
        dataset = datasets.MNIST(root, train=train, download=False)
        return dataset.data, dataset.targets
    except RuntimeError:  # "Dataset not found": fall back to this split's files
        pass
    raw = Path(root) / "MNIST" / "raw"  # torchvision's layout
    out = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, reader in zip(FILES["train" if train else "test"], (read_image_file, read_label_file)):
            path = raw / name
            if not path.exists():
                gz = raw / f"{name}.gz"
                if not gz.exists():
                    raise FileNotFoundError(f"{name}[.gz] not found under {raw}")
                path = Path(tmp) / name
                with gzip.open(gz, "rb") as src, open(path, "wb") as dst:
                    shutil.copyfileobj(src, dst)
            out.append(reader(str(path)))
    return tuple(out)


# Notebook A ----------------------------------------------------------------------

def notebook_a_tensors(data, targets):
    """x = data.view(-1, 784).float() / 256, as notebook A writes it."""
    x = data.view(-1, 784).float() / 256
    return x, targets


def notebook_a_loader(x, y, batch_size=100, shuffle=True, generator=None):
    """TensorDataset + DataLoader(batch_size=100, shuffle=True): the same sampler chain
    (RandomSampler(generator) -> BatchSampler, so the same batches in the same order), but
    each batch fetched with one index instead of 100 fetches and a collate (``batch_size=None``
    with a batch sampler as ``sampler``: torch's documented batched-loading idiom)."""
    dataset = TensorDataset(x, y)
    order = (RandomSampler(dataset, generator=generator) if shuffle
             else SequentialSampler(dataset))
    # the loader draws its workers' base seed from ``generator`` before the sampler draws,
    # as DataLoader(shuffle=True, generator=...) does: the same stream, the same order
    return DataLoader(dataset, batch_size=None, generator=generator,
                      sampler=BatchSampler(order, batch_size=batch_size, drop_last=False))


# Notebook B ----------------------------------------------------------------------

def notebook_b_tensors(data, targets, n_train=50_000):
    """ToTensor() (pixels / 255), flatten, split, standardise with the train mean and std."""
    to_tensor = transforms.ToTensor()
    x = torch.stack([to_tensor(img.numpy()) for img in data]).view(len(data), -1)
    x_train, x_valid = x[:n_train], x[n_train:]
    y_train, y_valid = targets[:n_train], targets[n_train:]
    m, s = x_train.mean(), x_train.std()
    x_train = (x_train - m) / s
    x_valid = (x_valid - m) / s
    return x_train, y_train, x_valid, y_valid, m.item(), s.item()
