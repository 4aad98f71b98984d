"""A run's life (``winit_jax.lab.runs``) and the depth study's plan, called as functions: the
CLI only turns their ``RunError`` into a usage line (its own tests drive ``main``)."""

import json

import numpy as np
import pytest

from winit_jax.lab import depth
from winit_jax.lab.runs import (NOT_CONFIG, RunError, claim, init_distributed, resumed_options,
                                run_config)

DEFAULTS = {"epochs": 10, "lr": 0.01, "data_dir": None, "out": None, "resume": None,
            "quiet": False}


def _recorded(tmp_path, **options):
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    config = run_config("sweep", {**DEFAULTS, **options})
    (run / "checkpoints" / "config.json").write_text(json.dumps(config))
    return run, config


def test_run_config_leaves_out_what_does_not_change_the_computation():
    config = run_config("sweep", {**DEFAULTS, "coordinator": "h:1", "func": print})
    assert config["command"] == "sweep" and config["epochs"] == 10
    assert not set(config) & (NOT_CONFIG - {"command"})


def test_resume_takes_the_recorded_options_and_refuses_others(tmp_path):
    run, _ = _recorded(tmp_path, epochs=3, data_dir="/data")
    given = {**DEFAULTS, "resume": run}
    new = resumed_options("sweep", given, DEFAULTS, run, None)
    assert new["epochs"] == 3 and new["out"] == run and str(new["data_dir"]) == "/data"
    # an option given with the recorded value is fine; with another, the flag is named
    assert resumed_options("sweep", {**given, "epochs": 3}, DEFAULTS, run, None)["epochs"] == 3
    with pytest.raises(RunError, match=r"was made with --epochs 3, not 4") as e:
        resumed_options("sweep", {**given, "epochs": 4}, DEFAULTS, run, None)
    assert e.value.flag == "--resume"
    with pytest.raises(RunError, match=r"is a 'sweep' run, not 'compare'"):
        resumed_options("compare", given, DEFAULTS, run, None)
    with pytest.raises(RunError, match=r"conflicts with --out"):
        resumed_options("sweep", given, DEFAULTS, run, tmp_path / "elsewhere")
    with pytest.raises(RunError, match=r"holds no interrupted run"):
        resumed_options("sweep", given, DEFAULTS, tmp_path, None)


def test_claim_refuses_a_second_run_and_a_resume_of_nothing(tmp_path):
    config = run_config("sweep", DEFAULTS)
    ckpt = claim(tmp_path / "a", config, resume=False)
    assert (ckpt.directory / "config.json").exists()
    with pytest.raises(RunError, match="holds an interrupted run") as e:
        claim(tmp_path / "a", config, resume=False)
    assert e.value.flag == "--out"
    claim(tmp_path / "a", config, resume=True)                  # the same config resumes
    with pytest.raises(RunError, match=r"another config \(epochs: 10 there, 11 now\)"):
        claim(tmp_path / "a", {**config, "epochs": 11}, resume=True)
    with pytest.raises(RunError, match="no readable checkpoint") as e:
        claim(tmp_path / "b", config, resume=True)
    assert e.value.flag == "--resume"


def test_distributed_needs_all_three_and_a_valid_id():
    init_distributed(None, None, None)                          # single process: nothing
    with pytest.raises(RunError, match="needs --coordinator, --num-processes and") as e:
        init_distributed("localhost:1234", 2, None)
    assert e.value.flag == "--coordinator"
    with pytest.raises(RunError, match=r"3 is not in \[0, 2\)") as e:
        init_distributed("localhost:1234", 2, 3)
    assert e.value.flag == "--process-id"


@pytest.mark.slow
def test_the_depth_plan_is_what_run_does():
    """``run`` reports one step per piece of ``plan``, in order (the CLI's progress bar
    total), and a part with 0 seeds is skipped."""
    rng = np.random.default_rng(0)
    x_a, x_b = rng.random((8, 784)).astype(np.float32), rng.standard_normal((8, 784))
    seen = []
    kw = dict(seeds=2, product_seeds=0, notebook_b_seeds=2)
    out = depth.run(["he_normal", "uniform"], ["jax"], x_a, x_b.astype(np.float32), width=8,
                    depth=3, on_step=seen.append, **kw)
    plan = depth.plan(["he_normal", "uniform"], ["jax"], **kw)
    assert seen == [f"{k} {s} {f}" for k, s, f in plan]
    assert [k for k, _, _ in plan] == ["sweep", "sweep", "notebook_b", "notebook_b"]
    assert len(out["sweep"]) == 2 and out["product"] == [] and len(out["notebook_b"]) == 2
