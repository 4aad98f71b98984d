"""Many models in one program: stacked parameters, ``jax.vmap`` over the model axis.

An init study is many small models (schemes x seeds x learning rates). ``train_many``
trains every config of a group that shares the layer sizes, batch size, epochs and
dtype as one jitted, vmapped epoch: each model keeps its own initialisation, its own
shuffling key, learning rate and momentum, exactly as ``train_and_evaluate`` would
give it alone. With several devices (or several hosts after ``jax.distributed.initialize``)
the model axis is sharded over a ``Mesh`` of all of them; the models never talk to
each other, so XLA partitions the program without any communication but the final
gather of losses and accuracies.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from winit_jax.lab.train import (RunResult, TrainConfig, as_arrays, correct, epoch_fn, epoch_key,
                                 init_key, init_model, make_result, output_variance)

MODEL_AXIS = "model"


@dataclasses.dataclass
class Fitted:
    """What ``fit_many`` returns: results in config order, and each model's final
    parameters as a host ``nnx.State`` with the ``graphdef`` to merge it with."""

    results: list[RunResult]
    graphdefs: list[nnx.GraphDef]
    states: list[nnx.State]

    def model(self, i: int):
        """Model ``i`` after training, as an ``MLP``."""
        return nnx.merge(self.graphdefs[i], self.states[i])


def nnx_leaves(state):
    """``(path, array)`` for every leaf of an ``nnx.State``, e.g. ``(('layers', 0, 'kernel'), w)``."""
    return [(path, v[...] if isinstance(v, nnx.Variable) else v)
            for path, v in nnx.to_flat_state(state)]


def _group_key(c: TrainConfig):
    return (c.sizes, c.batch_size, c.epochs, c.dtype)


def model_mesh(devices=None) -> Mesh:
    """A 1-D mesh named ``model`` over ``devices`` (default: every device of every process)."""
    return Mesh(np.asarray(jax.devices() if devices is None else devices), (MODEL_AXIS,))


def _put(tree, mesh: Mesh, spec: P):
    """Host arrays (identical in every process) to global arrays sharded as ``spec``."""
    sharding = NamedSharding(mesh, spec)
    return jax.tree.map(
        lambda a: jax.make_array_from_callback(np.shape(a), sharding, lambda i: np.asarray(a)[i]),
        tree)


def _gather(a) -> np.ndarray:
    """A global array on the host of every process."""
    if a.is_fully_addressable:
        return np.asarray(a)
    from jax.experimental import multihost_utils
    return np.asarray(multihost_utils.process_allgather(a, tiled=True))


def many_epoch_fn(graphdef, states, opt_states, keys, lrs, momenta, x, y, *, batch_size):
    """One shuffled epoch of K models stacked on a leading axis: ``train.epoch_fn``, vmapped.

    ``keys`` are raw key data (``jax.random.key_data``), ``lrs`` and ``momenta`` one per
    model (traced: one program serves every value). Returns ``(states, opt_states, losses,
    finite)``, each with the model axis first. ``many_epoch`` is its jitted form.
    """
    def one(state, opt_state, key, lr, momentum):
        tx = optax.sgd(lr, momentum=momentum)  # traced hyperparameters: one program for all
        return epoch_fn(graphdef, state, opt_state, jax.random.wrap_key_data(key), x, y,
                        tx=tx, batch_size=batch_size)
    return jax.vmap(one)(states, opt_states, keys, lrs, momenta)


def _many_eval(graphdef, states, x_train, y_train, x_test, y_test):
    """Train and test rows classified right, per model: ``train.correct``, vmapped."""
    return jax.vmap(lambda s: jnp.stack([correct(graphdef, s, x_train, y_train),
                                         correct(graphdef, s, x_test, y_test)]))(states)


many_epoch = jax.jit(many_epoch_fn, static_argnames=("graphdef", "batch_size"))
_many_eval_jit = jax.jit(_many_eval, static_argnames=("graphdef",))
_output_var_jit = jax.jit(  # train.output_variance, vmapped
    lambda graphdef, states, x: jax.vmap(lambda s: output_variance(graphdef, s, x))(states),
    static_argnames=("graphdef",))


def _fit_group(configs: list[TrainConfig], data, mesh: Mesh, ckpt=None):
    x_train, y_train, x_test, y_test = as_arrays(configs[0], data)
    n_dev = mesh.devices.size
    padded = configs + [configs[-1]] * (-len(configs) % n_dev)  # whole shards; extras dropped
    graphdef, states = None, []
    for c in padded:
        model = init_model(c, init_key(c.seed), x_train)
        graphdef_c, state = nnx.split(model)
        graphdef = graphdef or graphdef_c
        states.append(jax.tree.map(np.asarray, state))
    stacked = jax.tree.map(lambda *a: np.stack(a), *states)
    dtype = np.dtype(configs[0].dtype)
    hyper = [np.array([getattr(c, f) for c in padded], dtype) for f in ("learning_rate", "momentum")]
    epoch_keys = np.stack([np.stack([np.asarray(jax.random.key_data(epoch_key(c.seed, e)))
                                     for c in padded]) for e in range(configs[0].epochs)])

    shard, rep = P(MODEL_AXIS), P()
    state = _put(stacked, mesh, shard)
    opt_state = _put(jax.tree.map(np.asarray, jax.vmap(optax.sgd(1.0, momentum=0.5).init)(stacked)),
                     mesh, shard)  # zeros; the layout does not depend on lr or momentum
    lrs, momenta = _put(hyper, mesh, shard)
    data_g = _put((np.asarray(x_train), np.asarray(y_train), np.asarray(x_test),
                   np.asarray(y_test)), mesh, rep)
    n_batches = -(-len(x_train) // configs[0].batch_size)
    run = {"state": state, "opt_state": opt_state,
           "output_var": _gather(_output_var_jit(graphdef, state, data_g[0])),
           "losses": np.full((len(padded), configs[0].epochs * n_batches), np.nan),
           "finite": np.zeros((len(padded), configs[0].epochs * n_batches), np.uint8),
           "epoch_keys": epoch_keys}  # the PRNG state: every epoch's shuffle key
    first = 0
    if ckpt is not None:
        first, run = ckpt.restore_latest(run)
        run = {**run, "losses": np.array(run["losses"]), "finite": np.array(run["finite"])}

    start = time.perf_counter()
    epoch_keys = np.asarray(run["epoch_keys"])
    if first < configs[0].epochs:
        keys0 = _put(epoch_keys[0], mesh, shard)
        epoch = many_epoch.lower(graphdef, run["state"], run["opt_state"], keys0, lrs, momenta,
                                 *data_g[:2], batch_size=configs[0].batch_size).compile()
    compile_s = time.perf_counter() - start
    start = time.perf_counter()
    for e in range(first, configs[0].epochs):
        state, opt_state, losses, finite = epoch(
            run["state"], run["opt_state"], _put(epoch_keys[e], mesh, shard), lrs, momenta,
            *data_g[:2])
        cols = slice(e * n_batches, (e + 1) * n_batches)
        run["losses"][:, cols], run["finite"][:, cols] = _gather(losses), _gather(finite)
        run["state"], run["opt_state"] = state, opt_state
        if ckpt is not None:
            ckpt.save(e + 1, run)
    right = _gather(_many_eval_jit(graphdef, run["state"], *data_g))
    acc = right / np.array([len(y_train), len(y_test)], np.float64)  # exact fractions
    wall_s = (time.perf_counter() - start) / len(padded)  # each model's share of the program
    input_var = float(jnp.var(x_train))
    results = [make_result(c, input_var, run["output_var"][i], run["losses"][i],
                           run["finite"][i].astype(bool), acc[i, 0], acc[i, 1], wall_s=wall_s,
                           compile_s=compile_s) for i, c in enumerate(configs)]
    host = jax.tree.map(_gather, run["state"])
    return results, graphdef, [jax.tree.map(lambda a, i=i: a[i], host)
                               for i in range(len(configs))]


def fit_many(configs: Sequence[TrainConfig], data, *, devices=None, checkpoint=None) -> Fitted:
    """Trains every config; models that share sizes, batch size, epochs and dtype train
    together in one vmapped program sharded over ``devices`` (default: all devices).

    Args:
      configs: any mix of schemes, seeds, learning rates and momenta.
      data: ``(x_train, y_train, x_test, y_test)`` as for ``train_and_evaluate``.
      devices: the devices of the model axis; default ``jax.devices()``, which after
        ``jax.distributed.initialize`` spans every process.
      checkpoint: a ``winit_jax.lab.checkpoint.RunCheckpoint``: each group saves after every
        epoch and starts from its newest checkpoint, so a killed run resumes exactly.

    Returns:
      ``Fitted``: a ``RunResult`` per config, in order, equal to training each alone
      (same keys, same data order); ``wall_s`` is each model's share of its group's run.

    Examples:
      >>> from winit_jax.lab.many import train_many
      >>> from winit_jax.lab.train import TrainConfig
      >>> import numpy as np
      >>> x, y = np.zeros((20, 784), np.float32), np.zeros(20, np.int32)
      >>> cfgs = [TrainConfig(scheme=s, seed=k, epochs=1, batch_size=10)
      ...         for s in ("he_normal", "uniform") for k in range(2)]
      >>> [r.scheme for r in train_many(cfgs, (x, y, x, y))]
      ['he_normal', 'he_normal', 'uniform', 'uniform']
    """
    configs = list(configs)
    if not configs:
        raise ValueError("configs: need at least one TrainConfig")
    mesh = model_mesh(devices)
    groups: dict[tuple, list[int]] = {}
    for i, c in enumerate(configs):
        groups.setdefault(_group_key(c), []).append(i)
    out = Fitted([None] * len(configs), [None] * len(configs), [None] * len(configs))
    for g, idx in enumerate(groups.values()):
        ckpt = None if checkpoint is None else checkpoint.group(g)
        try:
            res, graphdef, states = _fit_group([configs[i] for i in idx], data, mesh, ckpt)
        finally:
            if ckpt is not None:
                ckpt.close()
        for i, r, s in zip(idx, res, states):
            out.results[i], out.graphdefs[i], out.states[i] = r, graphdef, s
    return out


def train_many(configs: Sequence[TrainConfig], data, *, devices=None,
               checkpoint=None) -> list[RunResult]:
    """``fit_many(...).results``: one ``RunResult`` per config, in order."""
    return fit_many(configs, data, devices=devices, checkpoint=checkpoint).results
