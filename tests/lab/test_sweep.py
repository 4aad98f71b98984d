"""winit_jax.lab.many: K models in one vmapped program equal K runs alone; sharded over 4
CPU devices and over two processes on 127.0.0.1, the same again.

Tolerances are the parity issue's: float64 parameters and losses within 1e-10 after
100 steps (relative to max(1, max |w|) per tensor); float32 per-batch losses within 1e-2.
"""

import json
import socket
import subprocess
import sys

import jax
import numpy as np
import pytest
from flax import nnx

from tests.conftest import subprocess_env
from winit_jax.lab import data as D
from winit_jax.lab.many import fit_many, nnx_leaves, train_many
from winit_jax.lab.train import TrainConfig, fit

# 1,000 rows at batch 10: one epoch is 100 steps.
F64 = dict(epochs=1, batch_size=10, dtype="float64")
CLI_MODELS = dict(schemes=("he_normal", "lsuv", "torch_default"), seeds=2)


@pytest.fixture(scope="module")
def digits(test_digits):
    images, labels = test_digits
    x = D.notebook_a_inputs(images)
    return x[:1000], labels[:1000], x[1000:2000], labels[1000:2000]


def assert_states_close(ours, ref, tol):
    a, b = nnx_leaves(ours), nnx_leaves(ref)
    assert [p for p, _ in a] == [p for p, _ in b]
    for (path, x), (_, y) in zip(a, b):
        x, y = np.asarray(x), np.asarray(y)
        assert x.dtype == y.dtype and np.isfinite(y).all(), path
        assert np.abs(x - y).max() <= tol * max(1.0, np.abs(y).max()), path


def assert_runs_equal(ours, ref, tol):
    assert len(ours.losses) == len(ref.losses)
    np.testing.assert_allclose(ours.losses, ref.losses, rtol=tol, atol=0)
    assert (ours.scheme, ours.seed) == (ref.scheme, ref.seed)
    assert ours.train_acc == ref.train_acc and ours.test_acc == ref.test_acc
    assert ours.output_var == pytest.approx(ref.output_var, rel=tol)


@pytest.mark.slow
def test_vmapped_models_equal_each_alone_float64(digits):
    # A mix of schemes (LSUV calibrates on data), seeds, learning rates, momenta and
    # two layer stacks (two groups, one program each); results come back in order.
    configs = [TrainConfig(scheme="he_normal", seed=0, **F64),
               TrainConfig(scheme="uniform", seed=1, learning_rate=0.05, **F64),
               TrainConfig(scheme="lsuv", seed=2, learning_rate=0.02, **F64),
               TrainConfig(scheme="glorot_uniform", seed=5, sizes=(784, 64, 10), **F64),
               TrainConfig(scheme="torch_default", seed=3, momentum=0.9, **F64)]
    with jax.enable_x64(True):
        many = fit_many(configs, digits)
        for i, config in enumerate(configs):
            ref, model = fit(config, digits)
            assert len(ref.losses) == 100
            assert_runs_equal(many.results[i], ref, 1e-10)
            assert_states_close(many.states[i], nnx.state(model), 1e-10)
    assert many.results[0].losses != many.results[1].losses  # each its own key


@pytest.mark.slow
def test_vmapped_float32_losses_within_1e_2(digits):
    # 1,050 rows at batch 100: ten full batches and a partial one per epoch.
    x, y = np.concatenate([digits[0], digits[2][:50]]), np.concatenate([digits[1], digits[3][:50]])
    data = (x, y, digits[2], digits[3])
    configs = [TrainConfig(scheme=s, seed=k, epochs=2) for s, k in
               (("he_normal", 0), ("he_uniform", 1), ("uniform", 2), ("orthogonal", 3))]
    many = fit_many(configs, data)
    for config, ours in zip(configs, many.results):
        ref = fit(config, data)[0]
        assert len(ours.losses) == len(ref.losses) == 22
        assert np.abs(np.subtract(ours.losses, ref.losses)).max() <= 1e-2
        assert abs(ours.test_acc - ref.test_acc) <= 0.01


def test_no_configs_is_refused():
    with pytest.raises(ValueError, match="configs"):
        fit_many([], None)


# --- beyond one device: the CLI in subprocesses ------------------------------------

@pytest.fixture(scope="module")
def alone(sample_dataset):
    """CLI_MODELS trained one at a time in this process (float64), the CLI's data."""
    data = sample_dataset.head(1000, len(sample_dataset.x_test)).arrays()
    configs = [TrainConfig(scheme=s, seed=k, **F64)
               for s in CLI_MODELS["schemes"] for k in range(CLI_MODELS["seeds"])]
    with jax.enable_x64(True):
        return [(r, jax.tree.map(np.asarray, nnx.state(m)))
                for r, m in (fit(c, data) for c in configs)]


def sweep_argv(out, shared_data):
    return [sys.executable, "-m", "winit_jax", "sweep", "--schemes", ",".join(CLI_MODELS["schemes"]),
            "--seeds", str(CLI_MODELS["seeds"]), "--epochs", "1", "--batch-size", "10",
            "--limit", "1000", "--dataset", "sample", "--data-dir", str(shared_data),
            "--dtype", "float64", "--save-params", "--quiet", "--out", str(out)]


def check_against_alone(out, alone, devices, processes):
    saved = json.loads((out / "results.json").read_text())
    assert (saved["devices"], saved["processes"]) == (devices, processes)
    params = np.load(out / "params.npz")
    assert len(saved["runs"]) == len(alone)
    for i, (run, (ref, state)) in enumerate(zip(saved["runs"], alone)):
        assert (run["scheme"], run["seed"]) == (ref.scheme, ref.seed)
        np.testing.assert_allclose(run["losses"], ref.losses, rtol=1e-10, atol=0)
        assert run["test_acc"] == ref.test_acc
        for path, w in nnx_leaves(state):
            ours = params[f"{i}/{'/'.join(map(str, path))}"]
            assert np.abs(ours - w).max() <= 1e-10 * max(1.0, np.abs(w).max())


@pytest.mark.slow
def test_sharded_over_four_cpu_devices(tmp_path, shared_data, alone):
    # 6 models on 4 devices: padded to 8, two per device; the padding is dropped.
    env = subprocess_env(XLA_FLAGS="--xla_force_host_platform_device_count=4")
    proc = subprocess.run(sweep_argv(tmp_path, shared_data), env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    check_against_alone(tmp_path, alone, devices=4, processes=1)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_processes_as_a_two_host_cluster(tmp_path, shared_data, alone):
    # One --out for both, as on a cluster with a shared filesystem; process 0 writes.
    port = _free_port()
    procs = [subprocess.Popen(
        sweep_argv(tmp_path, shared_data) + ["--coordinator", f"127.0.0.1:{port}",
                                             "--num-processes", "2", "--process-id", str(i)],
        env=subprocess_env(), cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for i in range(2)]
    try:
        outs = [p.communicate(timeout=600) for p in procs]
    finally:
        for p in procs:
            p.kill()
    for p, (_, err) in zip(procs, outs):
        assert p.returncode == 0, err[-2000:]
    check_against_alone(tmp_path, alone, devices=2, processes=2)
    assert not (tmp_path / "checkpoints").exists()


@pytest.mark.parametrize("argv, needle", [
    (["--lrs", "0.1,abc"], "--lrs"),
    (["--lrs", "-1"], "--lrs"),
    (["--coordinator", "127.0.0.1:1"], "--coordinator"),
    (["--coordinator", "127.0.0.1:1", "--num-processes", "2", "--process-id", "2"], "--process-id"),
    (["--dtype", "float16"], "--dtype"),
    (["--seeds", "0"], "--seeds"), (["--epochs", "0"], "--epochs"),
    (["--batch-size", "-5"], "--batch-size"), (["--momentum", "1"], "--momentum"),
    (["--limit", "0"], "--limit"), (["--num-processes", "0"], "--num-processes"),
    (["--process-id", "x"], "--process-id"), (["--schemes", "nope"], "--schemes"),
    (["--frameworks", "torch"], "unrecognized arguments: --frameworks"),  # JAX only
    (["--dataset", "cifar"], "--dataset"), (["--out", "/proc/version/run"], "--out"),
])
def test_bad_sweep_flags_exit_2_with_one_line(argv, needle, tmp_path, capsys):
    from winit_jax.lab.cli import main
    with pytest.raises(SystemExit) as e:
        main(["sweep", "--out", str(tmp_path), *argv])
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.count("\n") == 1 and needle in err, err


@pytest.mark.slow
def test_a_diverging_model_does_not_touch_the_others(digits):
    # Model 1 takes its weights to inf in step 0 (inputs x 1e6, lr 3e38: see test_train);
    # the vmapped program reports that step for it and trains the others as if alone.
    x = digits[0] * np.float32(1e6)
    data = (x, digits[1], x, digits[3])
    configs = [TrainConfig(scheme="he_normal", seed=0, epochs=1, learning_rate=1e-9),
               TrainConfig(scheme="he_normal", seed=1, epochs=1, learning_rate=3e38),
               TrainConfig(scheme="lecun_normal", seed=2, epochs=1, learning_rate=1e-9)]
    many = train_many(configs, data)
    assert [r.diverged_at for r in many] == [None, 0, None]
    for config, ours in zip(configs, many):
        ref = fit(config, data)[0]
        assert ours.diverged_at == ref.diverged_at
        if ref.diverged_at is None:
            assert np.abs(np.subtract(ours.losses, ref.losses)).max() <= 1e-2 * max(ref.losses)
