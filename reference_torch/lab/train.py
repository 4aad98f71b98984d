"""Notebook A's training loop, cell by cell; a run returns the fields of the lab's
``RunResult`` as a dict (the twin does not import the lab: the lab imports the twin)."""

import time

import numpy as np
import torch
import torch.nn as nn
import torch.optim as optim

from reference_torch.init import init_model
from reference_torch.lab.data import notebook_a_loader
from reference_torch.models import make_model


def first_nonfinite(losses) -> int | None:
    """Index of the first loss that is NaN or inf, or None."""
    bad = np.flatnonzero(~np.isfinite(np.asarray(losses, np.float64)))
    return int(bad[0]) if bad.size else None


def train(model, train_loader, epochs=10, lr=0.01, momentum=0.6, *, optimizer=None,
          on_epoch=None):
    """The notebook's loop; ``train_loader`` is any iterable of (x, y) batches.

    ``optimizer`` (default: the notebook's SGD) and ``on_epoch(epoch, errors)``, called
    after each epoch, let a resumed run go on where a checkpoint left it.
    """
    criterion = nn.CrossEntropyLoss()
    optimizer = optimizer or optim.SGD(model.parameters(), lr=lr, momentum=momentum)
    errors = []
    for epoch in range(epochs):
        for x, y in train_loader:
            optimizer.zero_grad()
            output = model(x)
            loss = criterion(output, y)
            loss.backward()
            optimizer.step()
            errors.append(loss.item())
        if on_epoch is not None:
            on_epoch(epoch, errors)
    return errors


def accuracy(model, x, y):
    """The fraction right, as the exact count / rows (a float32 mean would round it)."""
    with torch.no_grad():
        return int((model(x).argmax(dim=1) == y).sum()) / len(y)


def _snapshot(model, optimizer, epoch, errors, output_var, generator):
    """Everything a resumed run needs, as NumPy arrays (for orbax)."""
    params = list(model.parameters())
    return {"params": [p.detach().numpy().copy() for p in params],
            "momentum": [optimizer.state[p]["momentum_buffer"].numpy().copy()
                         if "momentum_buffer" in optimizer.state[p] else np.zeros_like(
                             p.detach().numpy()) for p in params],
            "rng": generator.get_state().numpy().copy(),  # the next epoch's shuffle
            "epoch": np.array(epoch, np.int64), "output_var": np.array(output_var, np.float64),
            "errors": np.asarray(errors, np.float64)}


def _restore(snap, model, optimizer, generator):
    with torch.no_grad():
        for p, w, v in zip(model.parameters(), snap["params"], snap["momentum"]):
            p.copy_(torch.from_numpy(np.asarray(w)))
            optimizer.state[p]["momentum_buffer"] = torch.from_numpy(np.array(v))
    generator.set_state(torch.from_numpy(np.array(snap["rng"])))


def initial_model(config, x_train, *, calibrate=True):
    """The run's model as ``config.scheme`` initialises it: ``torch.manual_seed(seed)``, then
    the scheme (a data-dependent one calibrates on the first ``batch_size`` rows of
    ``x_train``, a torch tensor, as winit_jax.lab.train does; ``calibrate=False``: the draw
    before that step)."""
    torch.manual_seed(config.seed)
    model = make_model(config.sizes).to(getattr(torch, config.dtype))
    init_model(model, config.scheme, x_train[:config.batch_size] if calibrate else None,
               calibrate=calibrate)
    return model


def _tensors(config, data):
    dtype = getattr(torch, config.dtype)
    x_train, y_train, x_test, y_test = (torch.as_tensor(np.asarray(a)) for a in data)
    return x_train.to(dtype), y_train, x_test.to(dtype), y_test


def _result(framework, config, model, errors, x_train, y_train, x_test, y_test, output_var,
            per_epoch, start):
    train_acc, test_acc = accuracy(model, x_train, y_train), accuracy(model, x_test, y_test)
    wall_s = time.perf_counter() - start
    losses = np.asarray(errors, np.float64)
    return dict(
        framework=framework, scheme=config.scheme, seed=config.seed,
        input_var=x_train.var(unbiased=False).item(), output_var=output_var,
        losses=losses.tolist(), final_loss=float(np.mean(losses[-per_epoch:])),
        train_acc=train_acc, test_acc=test_acc, wall_s=wall_s,
        diverged_at=first_nonfinite(losses))


def train_and_evaluate(config, data, checkpoint=None) -> dict:
    """The reference run of ``config`` (the lab's ``TrainConfig``: scheme, sizes,
    learning_rate, momentum, batch_size, epochs, seed, dtype) on
    ``data = (x_train, y_train, x_test, y_test)``; returns ``RunResult``'s fields.

    The weights come from ``initial_model``; the loader shuffles with its own generator
    seeded with ``config.seed``, so every scheme of a seed sees the same batches (common
    random numbers: comparisons between schemes are paired too).

    With a ``winit_jax.lab.checkpoint.GroupCheckpoint`` the run saves after every epoch
    (weights, momentum buffers, the loader's RNG state, epoch, losses) and starts from its
    newest checkpoint.
    """
    x_train, y_train, x_test, y_test = _tensors(config, data)
    model = initial_model(config, x_train)
    with torch.no_grad():
        output_var = model(x_train).var(unbiased=False).item()
    generator = torch.Generator().manual_seed(config.seed)
    loader = notebook_a_loader(x_train, y_train, batch_size=config.batch_size, shuffle=True,
                               generator=generator)
    optimizer = optim.SGD(model.parameters(), lr=config.learning_rate, momentum=config.momentum)
    done, before = 0, []
    if checkpoint is not None:
        template = _snapshot(model, optimizer, 0, [np.nan] * (len(loader) * config.epochs),
                             output_var, generator)
        done, snap = checkpoint.restore_latest(template)
        if done:
            _restore(snap, model, optimizer, generator)
            output_var = float(snap["output_var"])
            before = list(np.asarray(snap["errors"])[: done * len(loader)])

    def on_epoch(epoch, errors):
        if checkpoint is not None:
            padded = before + errors + [np.nan] * (len(loader) * (config.epochs - done - epoch - 1))
            checkpoint.save(done + epoch + 1, _snapshot(model, optimizer, done + epoch + 1, padded,
                                                        output_var, generator))

    start = time.perf_counter()
    errors = before + train(model, loader, config.epochs - done, optimizer=optimizer,
                            on_epoch=on_epoch)
    return _result("torch", config, model, errors, x_train, y_train, x_test, y_test, output_var,
                   len(loader), start)


class _GivenOrder:
    """The batches of a given order, one epoch per pass (``train`` iterates its loader once
    an epoch): ``epochs[e]`` lists epoch e's batches as row indices. Rows are gathered with
    one index per batch, where a DataLoader would fetch and collate them one by one."""

    def __init__(self, x, y, epochs):
        self.x, self.y, self.epoch = x, y, 0
        self.epochs = [[torch.as_tensor(np.asarray(b, np.int64)) for b in e] for e in epochs]

    def __iter__(self):
        batches = self.epochs[self.epoch]
        self.epoch += 1
        return ((self.x[i], self.y[i]) for i in batches)


def train_paired(model, config, data, epochs) -> dict:
    """Trains ``model`` (weights given: another framework's initial weights, copied in) with
    the notebook's loop on the batches given: ``epochs[e]`` lists epoch e's batches as arrays
    of row indices, in order. Returns ``RunResult``'s fields (framework "torch_paired")."""
    x_train, y_train, x_test, y_test = _tensors(config, data)
    if len(epochs) != config.epochs:
        raise ValueError(f"epochs: {len(epochs)} epochs of batches for a {config.epochs}-epoch "
                         "config")
    with torch.no_grad():
        output_var = model(x_train).var(unbiased=False).item()
    loader = _GivenOrder(x_train, y_train, epochs)
    start = time.perf_counter()
    errors = train(model, loader, config.epochs, lr=config.learning_rate,
                   momentum=config.momentum)
    return _result("torch_paired", config, model, errors, x_train, y_train, x_test, y_test,
                   output_var, len(epochs[-1]), start)
