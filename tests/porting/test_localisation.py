"""Where does a port part from torch? ``check`` compares every paired layer's input and
output in one forward pass of each framework, and the loss's gradient at every layer's
output in one backward pass, and names the first divergence: "inside" a layer (its input
agrees, its output not), "before" it (the code between two layers), or, when the forward
agrees, "backward" (the last layer whose output gradient is off). Proven on ports of models
nobody here wrote, with the mistakes porters make."""

import dataclasses

import numpy as np
import pytest
from flax import nnx

from tests.conftest import require_torch
from winit_jax import parity as P
from winit_jax.lab import examples as E

torch = require_torch()


@pytest.fixture(scope="module")
def vit():
    return E.vit()


def _check(net, port, x, **kw):
    return P.check(net, port, x, init_seeds=0, **kw)


def test_a_faithful_port_has_no_divergence(vit):
    net, port, x, _ = vit
    report = _check(net, port, x, flax_inputs=E.nhwc)
    assert report.ok and report.first_divergence is None
    assert len(report.layers) == 13 and all(r.ok for r in report.layers)
    assert all(np.isfinite(r.grad_gap) and r.grad_gap <= r.grad_tol for r in report.layers)
    assert report.layers[0].torch_name == "conv_proj"  # torch's call order
    assert report.layers[-1].torch_name == "heads.head"


@pytest.mark.slow
@pytest.mark.parametrize("slip,where,layer", [
    (dict(gelu_approximate=(1,)), "before", "encoder.layers.encoder_layer_1.mlp.3"),
    (dict(ln_2_eps=(1,)), "inside", "encoder.layers.encoder_layer_1.ln_2"),
    (dict(patch_order="wh"), "before", "encoder.layers.encoder_layer_0.ln_1"),
], ids=["tanh GELU in block 1", "LayerNorm eps 1e-5 in one ln_2", "patches (w, h)"])
def test_vit_mutants_are_localised(vit, slip, where, layer):
    net, _, x, _ = vit
    port = nnx.eval_shape(lambda: E.flax_vit(nnx.Rngs(0), **slip))
    report = _check(net, port, x, flax_inputs=E.nhwc)
    d = report.first_divergence
    assert (d.torch_name, d.where) == (layer, where), str(d)
    assert str(d).startswith(f"first divergence {where} torch {layer}")
    assert not report.ok and str(d) in report.table().splitlines()[0]


def test_the_epsilon_slip_is_caught_though_the_output_passes(vit):
    """LayerNorm eps 1e-5 for 1e-6 in one layer: the model's output stays within the forward
    tolerance (the check used to pass), the layer's own output does not."""
    net, _, x, _ = vit
    port = nnx.eval_shape(lambda: E.flax_vit(nnx.Rngs(0), ln_2_eps=(1,)))
    report = _check(net, port, x, flax_inputs=E.nhwc)
    assert all(c.ok for c in report.checks if c.part == "forward")
    assert [c.name for c in report.failures()][0] == "encoder.layers.encoder_layer_1.ln_2 output"
    assert "epsilon" in report.first_divergence.hint


@pytest.mark.slow
def test_qkv_projections_in_the_wrong_order_are_inside_the_attention(vit):
    net, port, x, _ = vit
    base = next(k for k in P.kinds() if k.name == "MultiheadAttention")

    def swapped(t, f):
        out = base.to_flax(t, f)
        out["query/kernel"], out["key/kernel"] = out["key/kernel"], out["query/kernel"]
        return out
    with P.registered(dataclasses.replace(base, to_flax=swapped)):
        d = _check(net, port, x, flax_inputs=E.nhwc).first_divergence
    assert (d.torch_name, d.where) == ("encoder.layers.encoder_layer_0.self_attention", "inside")
    assert "q/k/v order" in d.hint


def test_lstm_gate_order_is_inside_the_lstm():
    from tests.porting.test_ports import SwappedGates
    net, port, data, kw = E.language_model("LSTM", cell_class=SwappedGates)
    d = P.check(net, port, data, init_seeds=0, loss=kw["loss"],
                targets=kw["targets"]).first_divergence
    assert (d.torch_name, d.flax_path, d.where) == ("rnn", "rnn/0", "inside")
    assert "gate order" in d.hint


def test_a_fault_in_an_unrecorded_stacked_lstm_names_its_layers():
    """A 2-layer nn.LSTM runs as one fused call: no hook sees its layers' outputs, so they
    are not recorded. A gate-order slip there shows first at the head's input ("before");
    the hint must name the stacked layers as candidates, not only "the code between"."""
    from tests.porting.test_ports import SwappedGates
    net, port, data, kw = E.language_model("LSTM", num_layers=2, cell_class=SwappedGates)
    d = P.check(net, port, data, init_seeds=0, loss=kw["loss"],
                targets=kw["targets"]).first_divergence
    assert (d.torch_name, d.where) == ("head", "before")
    assert "rnn.l0, rnn.l1" in d.hint


@pytest.mark.slow
def test_mobilenet_same_padding_is_inside_that_conv():
    """Also the negative control of test_ports' kink-flip test (a port that differs fails
    on the inputs where a correct one is inconclusive): failing, nothing inconclusive."""
    net, _, x, kw = E.mobilenet_v2(seed=0, batch=4)
    port = nnx.eval_shape(lambda: E.flax_mobilenet_v2(nnx.Rngs(0), same_padding=(2,)))
    report = P.check(net, port, x, flax_inputs=E.nhwc, init_seeds=0)
    d = report.first_divergence
    assert (d.torch_name, d.where) == ("features.2.conv.1.0", "inside")
    assert "padding" in d.hint
    assert "forward" in {c.part for c in report.failures()} and not report.inconclusive()


@pytest.mark.slow
def test_relu_for_relu6_is_before_the_next_conv_with_trained_batchnorms():
    """ReLU for ReLU6 after block 2's expansion conv. At init no activation reaches 6 and the
    slip changes nothing; with a checkpoint's BatchNorm affine parameters (what a porter
    checks a pretrained model with) a faithful port still passes every part and the slip
    is named: the input of block 2's depthwise conv parts, every earlier layer agrees."""
    import torch

    net, _, x, _ = E.mobilenet_v2(seed=0, batch=4)
    E.checkpoint_like_batchnorms(net)
    capped = []  # the negative control's premise: torch's ReLU6 does cap something there
    hook = net.features[2].conv[0][1].register_forward_hook(
        lambda m, i, o: capped.append(float((o > 6).float().mean())))
    with torch.no_grad():
        net.eval()(torch.from_numpy(x))
    hook.remove()
    assert capped[0] > 0.01, capped
    faithful = P.check(net, nnx.eval_shape(lambda: E.flax_mobilenet_v2(nnx.Rngs(0))), x,
                       flax_inputs=E.nhwc, init_seeds=0)
    assert faithful.ok and faithful.first_divergence is None, faithful.table()
    slipped = P.check(net, nnx.eval_shape(
        lambda: E.flax_mobilenet_v2(nnx.Rngs(0), relu_after=(2,))), x,
                      flax_inputs=E.nhwc, init_seeds=0)
    d = slipped.first_divergence
    assert (d.torch_name, d.where) == ("features.2.conv.1.0", "before"), str(d)
    assert "features.2.conv.0.1" in d.hint and "ReLU6" in d.hint


def test_a_zero_head_is_flagged():
    """torchvision's ViT as built: its head is zero, so the output is 0 in both."""
    torch.manual_seed(0)
    net = E.torch_vit()
    x = np.random.default_rng(0).standard_normal((2, 3, 32, 32)).astype(np.float32)
    port = nnx.eval_shape(lambda: E.flax_vit(nnx.Rngs(0)))
    report = _check(net, port, x, flax_inputs=E.nhwc)
    assert any("heads.head) outputs only zeros" in n for n in report.notes)


def test_a_stop_gradient_is_named_in_the_backward_pass(vit):
    """A stop_gradient on block 1's attention output: the forward is unchanged (every layer
    row agrees); the gradient at that attention's output is 1 off while every later one
    agrees, so it is named, "backward"."""
    net, _, x, _ = vit
    port = nnx.eval_shape(lambda: E.flax_vit(nnx.Rngs(0), stop_gradient=(1,)))
    report = _check(net, port, x, flax_inputs=E.nhwc)
    assert all(r.forward_ok for r in report.layers)
    assert all(c.ok for c in report.checks if c.part == "forward")
    d = report.first_divergence
    assert (d.torch_name, d.where) == ("encoder.layers.encoder_layer_1.self_attention",
                                       "backward"), str(d)
    assert "stop_gradient" in d.hint and str(d) == report.table().splitlines()[0]


class Twice(torch.nn.Module):
    """One Linear called twice (weight sharing), then a head."""

    def __init__(self):
        super().__init__()
        self.lin, self.head = torch.nn.Linear(8, 8), torch.nn.Linear(8, 2)

    def forward(self, x):
        return self.head(self.lin(torch.relu(self.lin(x))))


class TwicePort(nnx.Module):
    def __init__(self, between=nnx.relu, frozen=False):
        self.lin = nnx.Linear(8, 8, rngs=nnx.Rngs(0))
        self.head = nnx.Linear(8, 2, rngs=nnx.Rngs(1))
        self.between, self.frozen = between, frozen

    def __call__(self, x):
        import jax
        h = self.lin(x)
        h = jax.lax.stop_gradient(h) if self.frozen else h
        return self.head(self.lin(self.between(h)))


@pytest.mark.parametrize("port,where,call", [
    (TwicePort(), None, None),
    (TwicePort(between=nnx.gelu), "before", 1),   # GELU for ReLU between the two calls
    (TwicePort(frozen=True), "backward", 0),      # the first call's output frozen
], ids=["faithful", "GELU between the calls", "stop_gradient after call 1"])
def test_a_shared_layer_is_compared_call_by_call(port, where, call):
    torch.manual_seed(0)
    net = Twice()
    x = np.random.default_rng(0).standard_normal((4, 8)).astype(np.float32)
    report = _check(net, port, x)
    assert [(r.torch_name, r.call) for r in report.layers] == [("lin", 0), ("lin", 1),
                                                               ("head", 0)]
    d = report.first_divergence
    if where is None:
        assert d is None and report.ok
    else:
        assert (d.torch_name, d.where, d.call) == ("lin", where, call), str(d)
