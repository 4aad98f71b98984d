"""Checkpoints and resume: SIGKILL at random moments (one of them inside a checkpoint
write), resume each time, and the final parameters and results JSON are bit-identical
to an uninterrupted run. Also: the same seed twice gives the same JSON, and --resume
refuses what is not an interrupted run of the same config."""

import json
import random
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import subprocess_env

TIMINGS = ("wall_s", "compile_s", "wall_s_mean")


# kill/resume and multi-process runs: each starts Python and JAX several times
pytestmark = pytest.mark.slow


def argv(out, shared_data, *extra):
    # 4 models x 4 epochs x 25 steps on 2,500 of the sample's digits: a second or two of
    # training, with an 18 MB checkpoint after every epoch.
    return [sys.executable, "-m", "winit_jax", "sweep", "--schemes", "he_normal,lsuv",
            "--seeds", "2", "--epochs", "4", "--limit", "2500", "--dataset", "sample",
            "--data-dir", str(shared_data),
            "--save-params", "--quiet", *(["--out", str(out)] if out else []), *extra]


def comparable(path: Path) -> dict:
    """results.json without timings and without the run's own directory."""
    def strip(obj):
        if isinstance(obj, dict):
            return {k: strip(v) for k, v in obj.items() if k not in TIMINGS + ("out",)}
        if isinstance(obj, list):
            return [strip(v) for v in obj]
        return obj
    return strip(json.loads(path.read_text()))


def assert_same_params(a: Path, b: Path):
    pa, pb = np.load(a / "params.npz"), np.load(b / "params.npz")
    assert sorted(pa) == sorted(pb)
    for k in pa:
        assert pa[k].dtype == pb[k].dtype and np.array_equal(pa[k], pb[k]), k


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, shared_data):
    out = tmp_path_factory.mktemp("uninterrupted")
    subprocess.run(argv(out, shared_data), env=subprocess_env(), check=True, timeout=600)
    assert not (out / "checkpoints").exists()  # removed once the results are written
    return out


def _steps(out: Path) -> list[Path]:
    return sorted((out / "checkpoints").glob("group-*/*"))


def _kill_when(proc, ready, timeout=300):
    """SIGKILL ``proc`` as soon as ``ready()`` holds (polled every millisecond)."""
    deadline = time.monotonic() + timeout
    while not ready():
        assert proc.poll() is None, "the run finished before it could be killed"
        assert time.monotonic() < deadline
        time.sleep(0.001)
    proc.send_signal(signal.SIGKILL)
    proc.wait()


def test_sigkill_at_random_moments_then_resume_is_bit_identical(tmp_path, shared_data,
                                                                uninterrupted):
    rng = random.Random(20261122)
    out = tmp_path / "run"
    kills = []
    # 1: inside a checkpoint write (orbax's temporary step directory exists).
    proc = subprocess.Popen(argv(out, shared_data), env=subprocess_env())
    _kill_when(proc, lambda: any("tmp" in p.name for p in _steps(out)))
    kills.append("during a checkpoint write")
    # 2: a random moment after the resumed run has made progress.
    for _ in range(1):
        before = {p.name for p in _steps(out) if "tmp" not in p.name}
        proc = subprocess.Popen(argv(None, shared_data, "--resume", str(out)), env=subprocess_env())
        _kill_when(proc, lambda: {p.name for p in _steps(out) if "tmp" not in p.name} - before)
        time.sleep(rng.uniform(0, 0.3))
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
        kills.append(f"after step(s) {sorted(before)}")
        # nothing but checkpoints: no results file, whole or partial
        assert sorted(p.name for p in out.iterdir()) == ["checkpoints"], kills
    subprocess.run(argv(None, shared_data, "--resume", str(out)), env=subprocess_env(), check=True,
                   timeout=600)
    assert comparable(out / "results.json") == comparable(uninterrupted / "results.json")
    assert_same_params(out, uninterrupted)
    assert not (out / "checkpoints").exists()


def test_same_seed_twice_gives_the_same_json(tmp_path, shared_data, uninterrupted):
    out = tmp_path / "again"
    subprocess.run(argv(out, shared_data), env=subprocess_env(), check=True, timeout=600)
    assert comparable(out / "results.json") == comparable(uninterrupted / "results.json")
    assert_same_params(out, uninterrupted)


def _cli(args, capsys):
    from winit_jax.lab.cli import main
    with pytest.raises(SystemExit) as e:
        main(args)
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.count("\n") == 1, err
    return err


def test_resume_refuses_other_configs_and_finished_runs(tmp_path, shared_data, capsys):
    from winit_jax.lab.checkpoint import RunCheckpoint
    from winit_jax.lab.cli import build_parser, run_config

    run = tmp_path / "run"
    args = build_parser().parse_args(["sweep", "--schemes", "he_normal", "--epochs", "3",
                                      "--data-dir", str(shared_data), "--out", str(run)])
    RunCheckpoint(run / "checkpoints").claim(run_config(args), resume=False)
    base = ["--data-dir", str(shared_data), "--quiet"]
    assert "--epochs 3" in _cli(["sweep", "--resume", str(run), "--epochs", "4", *base], capsys)
    assert "'sweep' run" in _cli(["compare", "--resume", str(run), *base], capsys)
    assert "--out" in _cli(["sweep", "--resume", str(run), "--out", str(tmp_path / "x"), *base],
                           capsys)
    # a new run over an interrupted one must not mix with its checkpoints
    assert "interrupted run" in _cli(["sweep", "--schemes", "he_normal", "--epochs", "3",
                                      "--out", str(run), *base], capsys)
    # a directory with no checkpoint, and a corrupt config.json
    assert "no interrupted run" in _cli(["sweep", "--resume", str(tmp_path), *base], capsys)
    (run / "checkpoints" / "config.json").write_text('{"command": "sw')
    assert "no interrupted run" in _cli(["sweep", "--resume", str(run), *base], capsys)


def test_compare_killed_after_its_torch_run_resumes_to_the_same_json(tmp_path, shared_data):
    # Each torch run checkpoints per epoch and is kept when it finishes; killed after that
    # (during the variance sweep), the resumed compare must report the same. (The JAX side's
    # group checkpoints are the sweep's, killed and resumed above.)
    args = [sys.executable, "-m", "winit_jax", "compare", "--schemes", "lsuv",
            "--frameworks", "torch", "--seeds", "1", "--epochs", "2", "--limit", "300",
            "--variance-seeds", "1",
            "--dataset", "sample", "--data-dir", str(shared_data), "--quiet"]
    subprocess.run(args + ["--out", str(tmp_path / "whole")], env=subprocess_env(), check=True, timeout=600)
    out = tmp_path / "cut"
    proc = subprocess.Popen(args + ["--out", str(out)], env=subprocess_env())
    kept = out / "checkpoints" / "results" / "torch-lsuv-0.json"
    _kill_when(proc, kept.exists)
    assert not (out / "results.json").exists()
    subprocess.run(args + ["--resume", str(out)], env=subprocess_env(), check=True, timeout=600)
    assert comparable(out / "results.json") == comparable(tmp_path / "whole" / "results.json")


@pytest.fixture(scope="module")
def rows(test_digits):
    from winit_jax.lab.data import notebook_a_inputs
    x = notebook_a_inputs(test_digits[0])
    return x[:1050], test_digits[1][:1050], x[2000:2500], test_digits[1][2000:2500]


def _newest_removed(directory: Path) -> None:
    """What a kill before the last epoch's checkpoint leaves: the newest step gone."""
    import shutil
    steps = sorted((p for p in directory.iterdir() if p.name.isdigit()), key=lambda p: int(p.name))
    shutil.rmtree(steps[-1])


@pytest.mark.parametrize("scheme", ["he_normal", "standard_normal", "lsuv"])
def test_torch_run_resumes_from_its_epoch_checkpoint(scheme, rows, tmp_path):
    # Weights, momentum buffers and torch's RNG state (the next epoch's DataLoader shuffle)
    # come back from the checkpoint: the resumed run equals the uninterrupted one exactly,
    # a diverging run (N(0, 1)) included.
    from tests.conftest import require_torch
    require_torch()
    from reference_torch.lab.train import train_and_evaluate
    from winit_jax.lab.checkpoint import GroupCheckpoint
    from winit_jax.lab.train import TrainConfig

    config = TrainConfig(scheme=scheme, seed=3, epochs=4)
    whole = train_and_evaluate(config, rows)
    for _ in range(2):  # a full run, then one that resumes from epoch 3
        ckpt = GroupCheckpoint(tmp_path)
        resumed = train_and_evaluate(config, rows, checkpoint=ckpt)
        ckpt.close()
        np.testing.assert_array_equal(resumed["losses"], whole["losses"])
        fields = ("test_acc", "output_var", "diverged_at")
        assert [resumed[k] for k in fields] == [whole[k] for k in fields]
        _newest_removed(tmp_path)


def _two_hosts(out, shared_data, *extra, wait=True):
    """Two processes on 127.0.0.1 as a two-host cluster, one shared --out."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    procs = [subprocess.Popen(argv(None, shared_data, *extra, "--coordinator", f"127.0.0.1:{port}",
                                   "--num-processes", "2", "--process-id", str(i)), env=subprocess_env())
             for i in range(2)]
    if wait:
        for p in procs:
            assert p.wait(timeout=600) == 0
    return procs


def test_two_host_sweep_killed_and_resumed_is_bit_identical(tmp_path, shared_data):
    # Orbax saves the sharded state collectively (each process its own models); process 0
    # claims the directory and removes it at the end, after a barrier.
    whole, cut = tmp_path / "whole", tmp_path / "cut"
    small = ["--epochs", "4", "--seeds", "1", "--limit", "2500"]  # 2 models, 25 steps an epoch
    _two_hosts(whole, shared_data, *small, "--out", str(whole))
    procs = _two_hosts(cut, shared_data, *small, "--out", str(cut), wait=False)
    _kill_when(procs[0], lambda: any(p.name == "2" for p in _steps(cut)))
    procs[1].send_signal(signal.SIGKILL)
    procs[1].wait()
    assert sorted(p.name for p in cut.iterdir()) == ["checkpoints"]
    _two_hosts(cut, shared_data, *small, "--resume", str(cut))
    assert comparable(cut / "results.json") == comparable(whole / "results.json")
    assert comparable(cut / "results.json")["processes"] == 2
    assert_same_params(cut, whole)
    assert not (cut / "checkpoints").exists()
