"""The ``winit-jax parity`` command (the lab's front end to ``winit_jax.parity.check``) and
the notebooks' digit CNN checked end to end on real MNIST."""

import pytest

from tests.conftest import require_torch
from winit_jax import parity as P

torch = require_torch()


@pytest.mark.slow
def test_small_cnn_trained_one_epoch_on_real_digits(shared_data):
    """Two convolutions with BatchNorm and ReLU and a Linear head, trained in both frameworks
    from the same start on the same 50 batches (one epoch of the 5,000-digit sample, SGD lr
    0.01 momentum 0.6, train mode), then evaluated on the real 10,000-digit test split: every
    step's loss, every tensor, the running statistics and the accuracy agree."""
    from winit_jax.lab.cnn_example import mnist_cnn

    torch_module, model, x, kwargs = mnist_cnn(data_dir=shared_data)
    assert len(kwargs["eval_data"]["targets"]) == 10_000  # the real test split, not the sample
    report = P.check(torch_module, model, x, **kwargs)
    report.assert_ok()
    assert len(report.curves["torch"]) == len(report.curves["flax"]) == 5_000 // 100
    parts = {s["part"]: s["checks"] for s in report.summary()}
    assert parts["batch_stats"] == 4 and parts["metric"] == 1
    assert report.metrics["torch"] > 0.5  # it learned (chance: 0.1), so the check means something


def test_cli_leads_with_the_first_divergence_and_prints_layers_on_request(capsys):
    from winit_jax.lab.cli import main

    me = "tests.porting.test_parity_harness"
    assert main(["parity", "--torch", f"{me}:tiny_torch", "--flax", f"{me}:tiny_flax_wrong",
                 "--input-shape", "16,6", "--steps", "0", "--init-seeds", "0",
                 "--layers"]) == 1
    out = capsys.readouterr().out.splitlines()
    # tanh for ReLU between the two Linears: the second Linear's input is the first to part
    assert out[0].startswith("first divergence before torch 2 / nnx layers/2 (Linear)")
    assert any(line.startswith("torch layer") for line in out)


def test_cli_parity_channels_last(capsys):
    """--channels-last maps inputs NCHW -> NHWC and the port's outputs back (it used to exit 2
    asking for a flax_outputs the command does not have); without it the inputs do not fit
    the port, and the error blames --input-shape, not --flax."""
    from winit_jax.lab.cli import main

    me = "tests.porting.test_parity_harness"
    argv = ["parity", "--torch", f"{me}:tiny_conv_torch", "--flax", f"{me}:tiny_conv_flax",
            "--input-shape", "2,3,8,8", "--steps", "2", "--init-seeds", "2"]
    assert main(argv + ["--channels-last"]) == 0
    assert "every check passed" in capsys.readouterr().out
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "argument --input-shape: inputs: shape (2, 3, 8, 8) (after flax_inputs) does not " \
           "fit the nnx model" in err


@pytest.mark.slow
def test_cli_parity_on_a_built_in_example_and_a_user_pair(capsys, tmp_path):
    from winit_jax.lab.cli import main

    assert main(["parity", "--example", "lstm", "--steps", "0", "--init-seeds", "2"]) == 0
    assert "every check passed" in capsys.readouterr().out
    me = "tests.porting.test_parity_harness"
    out = tmp_path / "report.json"
    assert main(["parity", "--torch", f"{me}:tiny_torch", "--flax", f"{me}:tiny_flax",
                 "--input-shape", "16,6", "--json", str(out)]) == 0
    import json
    report = json.loads(out.read_text())
    assert report["ok"] and {"init", "forward", "gradient", "layer", "step",
                             "step (float64)"} <= {s["part"] for s in report["summary"]}
    assert report["first_divergence"] is None and len(report["layers"]) == 2
    # a port that computes something else (tanh for ReLU) fails, exit 1, naming the worst check
    assert main(["parity", "--torch", f"{me}:tiny_torch", "--flax", f"{me}:tiny_flax_wrong",
                 "--input-shape", "16,6"]) == 1
    assert "parity failed" in capsys.readouterr().out


@pytest.mark.parametrize("argv,needle", [
    (["parity"], "--example"),
    (["parity", "--torch", "nowhere.at_all:f", "--flax", "x:y", "--input-shape", "2,3"],
     "argument --torch: cannot load"),
    (["parity", "--torch", "tests.porting.test_parity_harness:tiny_torch", "--flax",
      "tests.porting.test_parity_harness:tiny_flax"], "--input-shape"),
    (["parity", "--example", "lstm", "--input-shape", "2,x"], "--input-shape"),
    (["parity", "--example", "mnist_cnn", "--steps", "3"], "argument --steps: the mnist_cnn"),
])
def test_cli_parity_bad_input_exits_2_with_one_line(argv, needle, capsys):
    from winit_jax.lab.cli import main

    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2
    err = capsys.readouterr().err.strip()
    assert needle in err and "\n" not in err
