"""Notebook A's training, the JAX way: data on the device, one jitted epoch.

An epoch is a ``lax.scan`` over shuffled batches (indices from an explicit PRNG
key), plus one step on the final partial batch if the rows do not divide
evenly, as ``DataLoader(drop_last=False)`` does. SGD with momentum is
``optax.sgd(lr, momentum)``, which matches ``torch.optim.SGD`` (the buffer starts
at the first gradient, then v = momentum v + g, p -= lr v).
"""

from __future__ import annotations

import dataclasses
import functools
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from winit_jax.models import MLP, NOTEBOOK_A_SIZES
from winit_jax.schemes import get_scheme


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Hyperparameters; the defaults are notebook A's."""

    scheme: str = "he_normal"
    sizes: tuple[int, ...] = NOTEBOOK_A_SIZES
    learning_rate: float = 0.01
    momentum: float = 0.6
    batch_size: int = 100
    epochs: int = 10
    seed: int = 0
    dtype: str = "float32"  # or "float64" (needs jax_enable_x64)

    def __post_init__(self):
        get_scheme(self.scheme)
        if self.dtype not in ("float32", "float64"):
            raise ValueError(f"dtype must be float32 or float64, got {self.dtype!r}")
        for name in ("learning_rate", "batch_size", "epochs"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if not 0 <= self.momentum < 1:
            raise ValueError(f"momentum must be in [0, 1), got {self.momentum}")


@dataclasses.dataclass
class RunResult:
    """One training run: what both frameworks report, field for field."""

    framework: str
    scheme: str
    seed: int
    input_var: float
    output_var: float
    losses: list[float]
    final_loss: float
    train_acc: float
    test_acc: float
    wall_s: float
    compile_s: float = 0.0
    diverged_at: int | None = None  # first step whose loss (or, in JAX, parameters) was not finite


def loss_fn(model: MLP, x, y):
    """Mean softmax cross-entropy: ``nn.CrossEntropyLoss()``."""
    return optax.softmax_cross_entropy_with_integer_labels(model(x), y).mean()


def make_optimizer(config: TrainConfig):
    return optax.sgd(config.learning_rate, momentum=config.momentum)


def train_step(graphdef, state, opt_state, tx, x, y):
    """One SGD step on a batch; pure, for use under jit/scan/vmap.

    Returns ``(state, opt_state, loss, finite)``: ``finite`` is False when the loss or
    any updated parameter is NaN or inf, found on the device (no host sync).
    """
    loss, grads = jax.value_and_grad(lambda s: loss_fn(nnx.merge(graphdef, s), x, y))(state)
    updates, opt_state = tx.update(grads, opt_state, state)
    state = optax.apply_updates(state, updates)
    finite = jnp.isfinite(loss)
    for leaf in jax.tree.leaves(state):
        finite &= jnp.isfinite(leaf).all()
    return state, opt_state, loss, finite


def run_batches(graphdef, state, opt_state, x, y, idx, *, tx):
    """SGD steps on the batches ``x[idx[i]]``, in order (a ``lax.scan``).

    Returns ``(state, opt_state, losses, finite)`` with one loss and one finite flag
    (``train_step``'s) per row of ``idx``.
    """
    def body(carry, rows):
        state, opt_state, loss, finite = train_step(graphdef, *carry, tx, x[rows], y[rows])
        return (state, opt_state), (loss, finite)

    (state, opt_state), (losses, finite) = jax.lax.scan(body, (state, opt_state), idx)
    return state, opt_state, losses, finite


def epoch_fn(graphdef, state, opt_state, key, x, y, *, tx, batch_size):
    """One shuffled epoch. Returns ``(state, opt_state, losses, finite)``, per batch.

    Rows that do not fill a last batch form a smaller final batch (not dropped).
    Pure: ``train_epoch`` jits it, ``winit_jax.lab.many`` vmaps it over models.
    """
    n = x.shape[0]
    perm = _permutation(key, n)
    n_full = n // batch_size
    out = run_batches(graphdef, state, opt_state, x, y,
                      perm[: n_full * batch_size].reshape(n_full, batch_size), tx=tx)
    if n % batch_size:
        last = run_batches(graphdef, *out[:2], x, y, perm[None, n_full * batch_size:], tx=tx)
        out = last[:2] + tuple(jnp.concatenate([a, b]) for a, b in zip(out[2:], last[2:]))
    return out


train_epoch = jax.jit(epoch_fn, static_argnames=("graphdef", "tx", "batch_size"))


@functools.partial(jax.jit, static_argnames=("graphdef",))
def correct(graphdef, state, x, y):
    """How many rows of ``x`` the model classifies right (an integer: ``correct / len(y)``
    on the host is the exact fraction, where a float32 mean would round it)."""
    return jnp.sum(jnp.argmax(nnx.merge(graphdef, state)(x), -1) == y)


@functools.partial(jax.jit, static_argnames=("graphdef",))
def output_variance(graphdef, state, x):
    """Variance of the logits over a batch and the classes: the notebook's output variance."""
    return jnp.var(nnx.merge(graphdef, state)(x))


def init_key(seed: int):
    """The key that initialises the model of a run seeded ``seed``."""
    return jax.random.fold_in(jax.random.key(seed), 0)


def epoch_key(seed: int, epoch: int):
    """The key that shuffles ``epoch`` (0-based) of a run seeded ``seed``."""
    return jax.random.fold_in(jax.random.key(seed), 1 + epoch)


def batch_order(config: TrainConfig, n: int) -> list[list[np.ndarray]]:
    """The rows of each batch, per epoch, in the order ``fit`` (and ``winit_jax.lab.many``)
    trains on them: ``epoch_fn``'s permutation cut into ``batch_size`` rows, the rest last.
    What a paired torch run is fed (``reference_torch.lab.train.train_paired``)."""
    out = []
    for e in range(config.epochs):
        perm = np.asarray(_permutation(epoch_key(config.seed, e), n))
        out.append([perm[i:i + config.batch_size] for i in range(0, n, config.batch_size)])
    return out


def _permutation(key, n):
    return jax.random.permutation(key, n)


def init_model(config: TrainConfig, key=None, x_train=None, *, calibrate: bool = True) -> MLP:
    """The scheme's MLP; a data-dependent scheme (LSUV) calibrates on the first
    ``batch_size`` rows of ``x_train``, as the torch reference does (``calibrate=False``:
    the draw before that step)."""
    key = jax.random.key(config.seed) if key is None else key
    scheme = get_scheme(config.scheme)
    model = MLP(config.sizes, **scheme.mlp_kwargs(), param_dtype=jnp.dtype(config.dtype),
                rngs=nnx.Rngs(params=key))
    if calibrate:
        batch = (None if x_train is None else
                 jnp.asarray(x_train[:config.batch_size], config.dtype))
        scheme.calibrate(model, batch)
    return model


def first_nonfinite(losses) -> int | None:
    """Index of the first loss that is NaN or inf (a list from JSON may hold None for it),
    or None."""
    bad = np.flatnonzero(~np.isfinite(np.asarray(losses, np.float64)))
    return int(bad[0]) if bad.size else None


def as_arrays(config: TrainConfig, data):
    """``(x_train, y_train, x_test, y_test)`` as device arrays, inputs in ``config.dtype``."""
    if config.dtype == "float64" and not jax.config.jax_enable_x64:
        raise ValueError("dtype float64 needs jax_enable_x64=True")
    x_train, y_train, x_test, y_test = data
    return (jnp.asarray(x_train, config.dtype), jnp.asarray(y_train),
            jnp.asarray(x_test, config.dtype), jnp.asarray(y_test))


def make_result(config: TrainConfig, input_var, output_var, losses: np.ndarray,
                finite: np.ndarray, train_acc, test_acc, *, wall_s, compile_s) -> RunResult:
    """A JAX ``RunResult``; the final loss is the mean over the last epoch's batches, and
    ``diverged_at`` the first step whose loss or updated parameters were not finite."""
    per_epoch = len(losses) // config.epochs
    return RunResult(
        framework="jax", scheme=config.scheme, seed=config.seed, input_var=float(input_var),
        output_var=float(output_var), losses=losses.tolist(),
        final_loss=float(np.mean(losses[-per_epoch:])), train_acc=float(train_acc),
        test_acc=float(test_acc), wall_s=wall_s, compile_s=compile_s,
        diverged_at=first_nonfinite(np.where(finite, losses, np.nan)))


def fit(config: TrainConfig, data, workdir=None) -> tuple[RunResult, MLP]:
    """Trains notebook A's MLP on ``data = (x_train, y_train, x_test, y_test)``.

    Inputs are already preprocessed (pixels / 256, flattened). The model is
    initialised from ``fold_in(key(seed), 0)``, each epoch shuffled with
    ``fold_in(key(seed), 1 + epoch)``. If ``workdir`` is given, the result is
    written there as ``result.json``. Returns the result and the trained model.
    """
    x_train, y_train, x_test, y_test = as_arrays(config, data)
    root = jax.random.key(config.seed)
    model = init_model(config, init_key(config.seed), x_train)
    graphdef, state = nnx.split(model)
    tx = make_optimizer(config)
    opt_state = tx.init(state)
    out_var = float(output_variance(graphdef, state, x_train))

    start = time.perf_counter()
    epoch = train_epoch.lower(graphdef, state, opt_state, root, x_train, y_train,
                              tx=tx, batch_size=config.batch_size).compile()
    compile_s = time.perf_counter() - start
    start = time.perf_counter()
    losses, finite = [], []
    for e in range(config.epochs):
        state, opt_state, epoch_losses, epoch_finite = epoch(
            state, opt_state, epoch_key(config.seed, e), x_train, y_train)
        losses.append(epoch_losses)
        finite.append(epoch_finite)
    losses = np.asarray(jnp.concatenate(losses), np.float64)  # one host sync, at the end
    finite = np.asarray(jnp.concatenate(finite))
    train_acc = int(correct(graphdef, state, x_train, y_train)) / len(y_train)
    test_acc = int(correct(graphdef, state, x_test, y_test)) / len(y_test)
    result = make_result(config, float(jnp.var(x_train)), out_var, losses, finite, train_acc,
                         test_acc, wall_s=time.perf_counter() - start, compile_s=compile_s)
    if workdir is not None:
        from winit_jax.lab.files import write_json
        write_json(workdir, "result.json", dataclasses.asdict(result))
    return result, nnx.merge(graphdef, state)


def train_and_evaluate(config: TrainConfig, data, workdir=None) -> RunResult:
    """``fit(config, data, workdir)``'s ``RunResult``: see ``fit``."""
    return fit(config, data, workdir)[0]
