"""Notebook A's model and training loop, cell by cell, returning winit_jax's RunResult."""

import time

import numpy as np
import torch
import torch.nn as nn
import torch.optim as optim

from reference_torch.data import notebook_a_loader
from reference_torch.lsuv import lsuv
from winit_jax.models import NOTEBOOK_A_SIZES
from winit_jax.registry import get_scheme
from winit_jax.train import RunResult, TrainConfig, first_nonfinite


def make_model(sizes=NOTEBOOK_A_SIZES):
    """nn.Sequential(nn.Linear(784, 512), nn.ReLU(), ..., nn.Linear(64, 10))."""
    layers = []
    for n_in, n_out in zip(sizes[:-1], sizes[1:]):
        layers += [nn.Linear(n_in, n_out), nn.ReLU()]
    return nn.Sequential(*layers[:-1])


def train(model, train_loader, epochs=10, lr=0.01, momentum=0.6):
    """The notebook's loop; ``train_loader`` is any iterable of (x, y) batches."""
    criterion = nn.CrossEntropyLoss()
    optimizer = optim.SGD(model.parameters(), lr=lr, momentum=momentum)
    errors = []
    for epoch in range(epochs):
        for x, y in train_loader:
            optimizer.zero_grad()
            output = model(x)
            loss = criterion(output, y)
            loss.backward()
            optimizer.step()
            errors.append(loss.item())
    return errors


def accuracy(model, x, y):
    with torch.no_grad():
        return (model(x).argmax(dim=1) == y).float().mean().item()


def train_and_evaluate(config: TrainConfig, data) -> RunResult:
    """The reference run of ``config`` on ``data = (x_train, y_train, x_test, y_test)``."""
    dtype = getattr(torch, config.dtype)
    x_train, y_train, x_test, y_test = (torch.as_tensor(np.asarray(a)) for a in data)
    x_train, x_test = x_train.to(dtype), x_test.to(dtype)
    torch.manual_seed(config.seed)
    model = make_model(config.sizes).to(dtype)
    scheme = get_scheme(config.scheme)
    model.apply(scheme.torch_init())
    if scheme.lsuv:  # calibrated on the first batch_size rows, as winit_jax.train
        lsuv(model, x_train[:config.batch_size])
    with torch.no_grad():
        output_var = model(x_train).var(unbiased=False).item()
    loader = notebook_a_loader(x_train, y_train, batch_size=config.batch_size, shuffle=True)
    start = time.perf_counter()
    errors = train(model, loader, config.epochs, config.learning_rate, config.momentum)
    train_acc, test_acc = accuracy(model, x_train, y_train), accuracy(model, x_test, y_test)
    wall_s = time.perf_counter() - start
    losses = np.asarray(errors, np.float64)
    return RunResult(
        framework="torch", scheme=config.scheme, seed=config.seed,
        input_var=x_train.var(unbiased=False).item(), output_var=output_var,
        losses=losses.tolist(), final_loss=float(np.mean(losses[-len(loader):])),
        train_acc=train_acc, test_acc=test_acc, wall_s=wall_s,
        diverged_at=first_nonfinite(losses))
