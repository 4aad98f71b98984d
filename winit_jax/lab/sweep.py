"""``winit-jax sweep``: many models (schemes x learning rates x seeds) trained in one program
(``winit_jax.lab.many``), summarised per learning rate, written as results.json (and the
trained parameters as params.npz)."""

from __future__ import annotations

import dataclasses
import io
from collections.abc import Mapping, Sequence

import numpy as np

from winit_jax.lab.experiment import summarise
from winit_jax.lab.files import plain, write_atomic, write_json
from winit_jax.lab.train import TrainConfig


def sweep_configs(schemes: Sequence[str], lrs: Sequence[float], seeds: int, *, momentum: float,
                  batch_size: int, epochs: int, seed: int, dtype: str) -> list[TrainConfig]:
    """One config per (scheme, learning rate, seed), seeds ``seed``, ``seed + 1``, ..."""
    return [TrainConfig(scheme=s, learning_rate=lr, momentum=momentum, batch_size=batch_size,
                        epochs=epochs, seed=seed + k, dtype=dtype)
            for s in schemes for lr in lrs for k in range(seeds)]


def sweep_summary(configs: Sequence[TrainConfig], results) -> list:
    """``summarise`` per learning rate (in the configs' order), each row with its rate."""
    lrs = list(dict.fromkeys(c.learning_rate for c in configs))
    return [dataclasses.replace(row, learning_rate=lr) for lr in lrs
            for row in summarise([r for c, r in zip(configs, results) if c.learning_rate == lr])]


def write_sweep(out, config: Mapping, configs: Sequence[TrainConfig], fitted, summary, *,
                dataset: str, notices, devices: int, processes: int, versions: Mapping,
                save_params: bool) -> None:
    """results.json (every run, the summary) and, with ``save_params``, params.npz (each
    model's trained parameters under ``<index>/<path>``), each written atomically."""
    from winit_jax.lab.many import nnx_leaves

    runs = [{"learning_rate": c.learning_rate, "momentum": c.momentum, **plain(r)}
            for c, r in zip(configs, fitted.results)]
    if save_params:
        buf = io.BytesIO()
        np.savez(buf, **{f"{i}/{'/'.join(map(str, path))}": np.asarray(leaf)
                         for i, st in enumerate(fitted.states) for path, leaf in nnx_leaves(st)})
        write_atomic(out, "params.npz", buf.getvalue())
    write_json(out, "results.json", {
        "config": {**config, "out": str(out)}, "dataset": dataset, "notices": notices,
        "devices": devices, "processes": processes, "versions": dict(versions), "runs": runs,
        "summary": summary})
