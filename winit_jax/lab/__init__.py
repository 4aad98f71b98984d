"""The notebooks' lab: data, training, many-model runs, checkpoints, the variance and gain
studies, ``compare``, reports, plots and the ``winit-jax`` command.

It imports the library (``winit_jax``) and, for the PyTorch side of its comparisons, the
twin (``reference_torch``); neither of them imports it. Its dependencies (optax, orbax,
rich, matplotlib, mlxtend) are the ``lab`` extra. The names below load on first use.
"""

from __future__ import annotations

from winit_jax._lazy import lazy

_EXPORTS = {
    "TrainConfig": "winit_jax.lab.train",
    "RunResult": "winit_jax.lab.train",
    "fit": "winit_jax.lab.train",
    "train_and_evaluate": "winit_jax.lab.train",
    "fit_many": "winit_jax.lab.many",
    "train_many": "winit_jax.lab.many",
    "compare": "winit_jax.lab.experiment",
    "load_dataset": "winit_jax.lab.experiment",
    "main": "winit_jax.lab.cli",
}

__all__ = sorted(_EXPORTS)


__getattr__, __dir__ = lazy("winit_jax.lab", _EXPORTS)
