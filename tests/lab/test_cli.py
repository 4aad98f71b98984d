"""winit-jax compare end to end on a tiny config, and every bad input."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from tests.conftest import require_torch
from winit_jax.lab.cli import main
from winit_jax.lab.files import plain
from winit_jax.lab.experiment import load_dataset
from winit_jax.lab.train import TrainConfig, train_and_evaluate

TINY = ["--schemes", "he_normal", "--epochs", "1", "--limit", "300", "--dataset", "sample",
        "--quiet", "--variance-seeds", "2"]
TINY_VARIANCE = ["--schemes", "he_normal,standard_normal", "--seeds", "3", "--width", "16",
                 "--depth", "4", "--rows", "100", "--product-seeds", "3", "--notebook-b-seeds", "2",
                 "--activations", "gelu,tanh", "--gain-seeds", "2", "--gain-width", "16",
                 "--gain-rows", "4", "--dataset", "sample", "--quiet"]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, shared_data):
    require_torch()
    out = tmp_path_factory.mktemp("run")
    assert main(["compare", *TINY, "--data-dir", str(shared_data), "--out", str(out)]) == 0
    return out, json.loads((out / "results.json").read_text())


@pytest.mark.slow
def test_files_and_schema(tiny_run):
    out, res = tiny_run
    assert {p.name for p in out.iterdir()} == {"results.json", "report.md", "loss_curves.png",
                                               "accuracy.png", "variance_depth.png"}
    assert set(res) == {"config", "dataset", "versions", "notices", "summary", "parity", "runs",
                        "variance"}
    assert [(s["scheme"], s["framework"], s["seeds"], s["layers"])
            for s in res["variance"]["sweep"]] == [("he_normal", "jax", 2, 50),
                                                   ("he_normal", "torch", 2, 50)]
    assert res["dataset"]["name"] == "sample" and res["dataset"]["n_train"] == 300
    assert res["dataset"]["n_test"] == 10_000  # the real test split under --data-dir
    assert {"jax", "flax", "torch", "device"} <= set(res["versions"])
    assert [(r["scheme"], r["framework"]) for r in res["runs"]] == [
        ("he_normal", "jax"), ("he_normal", "torch"), ("he_normal", "torch_paired")]
    for r in res["runs"]:
        assert len(r["losses"]) == 3  # 300 rows / batch 100, one epoch
    v = res["parity"]["he_normal"]
    assert set(v) == {"scheme", "verdict", "init", "paired", "independent"}
    assert v["verdict"] == "agree" and v["independent"]["note"] == "n/a (needs 3 seeds)"
    assert v["init"]["tensors"] == 10 and v["init"]["values"] == 784 * 512
    report = (out / "report.md").read_text()
    assert "he_normal" in report and "![loss_curves.png](loss_curves.png)" in report


@pytest.mark.slow
def test_json_numbers_equal_the_library(tiny_run, shared_data):
    _, res = tiny_run
    data = load_dataset("sample", shared_data).head(300, 10_000)
    lib = train_and_evaluate(TrainConfig(scheme="he_normal", epochs=1, seed=0), data.arrays())
    run = res["runs"][0]
    assert run["losses"] == lib.losses  # same key, same data: bit-identical on CPU
    for field in ("train_acc", "test_acc", "output_var", "input_var", "final_loss"):
        assert run[field] == getattr(lib, field), field
    from reference_torch.lab.train import train_and_evaluate as torch_train
    ref = torch_train(TrainConfig(scheme="he_normal", epochs=1, seed=0), data.arrays())
    assert res["runs"][1]["losses"] == ref["losses"]
    from winit_jax.lab.experiment import paired_torch_run
    paired = paired_torch_run(TrainConfig(scheme="he_normal", epochs=1, seed=0), data)
    assert res["runs"][2]["losses"] == paired.losses


@pytest.mark.slow
def test_plots_are_pngs_of_sensible_size(tiny_run):
    import matplotlib.image as mpimg
    out, _ = tiny_run
    for name in ("loss_curves.png", "accuracy.png", "variance_depth.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        h, w = mpimg.imread(out / name).shape[:2]
        assert 300 <= w <= 2000 and 200 <= h <= 3000
        assert np.ptp(mpimg.imread(out / name)) > 0  # not blank


@pytest.fixture(scope="module")
def variance_run(tmp_path_factory, shared_data):
    """``winit-jax variance`` on TINY_VARIANCE, with the two library calls it makes recorded
    (arguments and results) as it makes them: the wiring is checked against what the
    library computed in this run, not against a second run of it."""
    require_torch()
    from winit_jax.lab import depth, gain_depth
    calls = {}

    def spy(module):
        real = module.run

        def run(*args, **kwargs):
            calls[module.__name__] = (args, kwargs, result := real(*args, **kwargs))
            return result
        return run

    out = tmp_path_factory.mktemp("variance")
    with pytest.MonkeyPatch.context() as mp:
        for module in (depth, gain_depth):
            mp.setattr(module, "run", spy(module))
        assert main(["variance", *TINY_VARIANCE, "--data-dir", str(shared_data),
                     "--out", str(out)]) == 0
    return out, json.loads((out / "results.json").read_text()), calls


@pytest.mark.slow
def test_variance_files_and_numbers_equal_the_library(variance_run, sample_dataset):
    out, res, calls = variance_run
    assert {p.name for p in out.iterdir()} == {"results.json", "report.md", "variance_depth.png",
                                               "gain_depth.png"}
    assert set(res) == {"config", "dataset", "versions", "notices", "variance"}
    assert res["config"]["width"] == 16 and res["dataset"]["notebook_a_rows"] == 100
    # the flags reach the library: 100 training digits drawn with seed 0, notebook B's inputs
    (schemes, frameworks, x_a, x_b), kw, lib = calls["winit_jax.lab.depth"]
    pick = np.random.default_rng(0).permutation(len(sample_dataset.x_train))[:100]
    assert (schemes, frameworks) == (["he_normal", "standard_normal"], ["jax", "torch"])
    np.testing.assert_array_equal(x_a, sample_dataset.x_train[pick])
    np.testing.assert_array_equal(x_b, sample_dataset.x_b)
    assert {k: v for k, v in kw.items() if k != "on_step"} == dict(
        seeds=3, width=16, depth=4, product_seeds=3, notebook_b_seeds=2)
    args, kw, gains = calls["winit_jax.lab.gain_depth"]
    assert args == (["gelu", "tanh"], ["jax", "torch"])
    assert {k: v for k, v in kw.items() if k != "on_step"} == dict(seeds=2, width=16, depth=4,
                                                                   rows=4)
    # and what they returned is what results.json holds: the typed rows, as JSON
    assert res["variance"] == json.loads(json.dumps(plain({**lib, "gain_sweep": gains})))
    assert [len(res["variance"][k]) for k in ("sweep", "product", "notebook_b", "gain_sweep")] \
        == [4, 4, 4, 8]  # gain sweep: 2 activations x 2 gains x 2 frameworks
    report = (out / "report.md").read_text()
    assert "Notebook B" in report and "![variance_depth.png](variance_depth.png)" in report
    assert "Exact gains through depth" in report and "![gain_depth.png](gain_depth.png)" in report


@pytest.mark.slow
def test_diverging_run_is_reported_and_others_go_on(tmp_path, shared_data):
    out = tmp_path / "run"
    main(["compare", "--schemes", "standard_normal,he_uniform", "--frameworks", "jax", "--epochs",
          "1", "--limit", "500", "--dataset", "sample", "--quiet", "--lr", "0.5",
          "--data-dir", str(shared_data), "--out", str(out)])
    runs = {r["scheme"]: r for r in json.loads((out / "results.json").read_text())["runs"]}
    assert runs["standard_normal"]["diverged_at"] is not None
    assert runs["standard_normal"]["final_loss"] is None  # NaN is written as null
    assert len(runs["he_uniform"]["losses"]) == 5


@pytest.mark.parametrize("args,needle", [
    (["--schemes", "glorot_banana"], "--schemes"),
    (["--frameworks", "jax,mxnet"], "--frameworks"),
    (["--dataset", "cifar"], "--dataset"),
    (["--epochs", "0"], "--epochs"),
    (["--epochs", "-3"], "--epochs"),
    (["--batch-size", "0"], "--batch-size"),
    (["--lr", "0"], "--lr"),
    (["--lr", "nan"], "--lr"),
    (["--lr", "abc"], "--lr"),
    (["--momentum", "1.5"], "--momentum"),
    (["--seeds", "0"], "--seeds"),
    (["--data-dir", "/etc/hostname"], "--data-dir"),
    (["--out", "/proc/version/run"], "--out"),
    (["--variance-seeds", "0"], "--variance-seeds"),
    (["--limit", "0"], "--limit"),
    (["--seed", "x"], "--seed"),
    (["--batch-size", "2.5"], "--batch-size"),
])
def test_bad_input_exits_2_with_one_line(args, needle, capsys, tmp_path):
    _exits_2_naming(["compare", *args], needle, capsys, tmp_path)


@pytest.mark.parametrize("args,needle", [
    (["--width", "0"], "--width"), (["--depth", "-1"], "--depth"), (["--rows", "x"], "--rows"),
    (["--seeds", "0"], "--seeds"), (["--product-seeds", "0"], "--product-seeds"),
    (["--schemes", "he_normal,nope"], "--schemes"), (["--frameworks", "tf"], "--frameworks"),
    (["--activations", "swish"], "--activations"), (["--gain-seeds", "0"], "--gain-seeds"),
    (["--gain-width", "-2"], "--gain-width"), (["--gain-rows", "1.5"], "--gain-rows"),
    (["--out", "/proc/version/run"], "--out"),
])
def test_variance_bad_input_exits_2_with_one_line(args, needle, capsys, tmp_path):
    _exits_2_naming(["variance", *args], needle, capsys, tmp_path)


def _exits_2_naming(argv, needle, capsys, tmp_path):
    if "--out" not in argv:
        argv = [*argv, "--out", str(tmp_path / "o")]
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and needle in err[0] and "Traceback" not in err[0], err


def test_allowed_values_are_named(capsys, tmp_path):
    with pytest.raises(SystemExit):
        main(["compare", "--schemes", "nope", "--out", str(tmp_path)])
    assert "he_normal" in capsys.readouterr().err


def test_unreadable_data_dir(tmp_path, capsys, monkeypatch):
    d = tmp_path / "locked"
    d.mkdir(mode=0)
    if os.geteuid() == 0:  # root reads any directory: make access() answer as for a user
        real = os.access
        monkeypatch.setattr(os, "access", lambda p, m: False if str(p) == str(d) else real(p, m))
    with pytest.raises(SystemExit):
        main(["compare", "--data-dir", str(d), "--out", str(tmp_path / "o")])
    assert "--data-dir" in capsys.readouterr().err


def test_python_dash_m_entry_point():
    out = subprocess.run([sys.executable, "-m", "winit_jax", "compare", "--help"],
                         capture_output=True, text=True, check=True).stdout
    assert "--schemes" in out and "--dataset" in out


def test_torch_missing_means_jax_only_or_exit_2(tmp_path, capsys, monkeypatch):
    import winit_jax.lab.experiment as E
    monkeypatch.setattr(E, "torch_available", lambda: False)
    with pytest.raises(SystemExit) as e:
        main(["compare", "--frameworks", "torch", "--out", str(tmp_path)])
    err = capsys.readouterr().err
    assert e.value.code == 2 and "--frameworks" in err.splitlines()[-1]
