"""Ports written with Flax's naming habits, not torch's, pair without a mapping: what names
and shapes leave unpaired is paired by the order in which each side calls its layers.
torchvision's MobileNetV2 (``Conv2dNormActivation`` is a ``Sequential``: ``0, 1, 2``) against
a port whose ``ConvBN`` holds ``conv`` and ``bn``, its blocks ``expand``, ``depthwise``,
``project``; a realistic slip is still localised; a port whose call order really differs
is refused by name, never paired wrongly; a swapped mapping entry is refused."""

import jax
import numpy as np
import pytest
from flax import nnx

from tests.conftest import require_torch
from tests.porting.vision_ports import CNBlock, ConvBN, InvertedResidual
from winit_jax import parity as P
from winit_jax.parity import nhwc

torch = require_torch()
nn = torch.nn


class MobileNetV2(nnx.Module):
    """torchvision's MobileNetV2 (width 1), ported with Flax's names: ``stem``, ``blocks``,
    ``last``, ``head`` where torchvision numbers ``features`` (the blocks are
    ``tests/porting/vision_ports.py``'s)."""

    def __init__(self, rngs, same_padding=()):
        self.stem = ConvBN(3, 32, rngs, stride=2, act=jax.nn.relu6)
        blocks, cin, i = [], 32, 1
        for t, c, n, s in ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2),
                           (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1)):
            for j in range(n):
                blocks.append(InvertedResidual(cin, c, s if j == 0 else 1, t, rngs,
                                               "same padding" if i in same_padding else None))
                cin, i = c, i + 1
        self.blocks = nnx.List(blocks)
        self.last = ConvBN(cin, 1280, rngs, k=1, act=jax.nn.relu6)
        self.head = nnx.Linear(1280, 10, rngs=rngs)

    def __call__(self, x):
        x = self.stem(x)
        for block in self.blocks:
            x = block(x)
        return self.head(self.last(x).mean(axis=(1, 2)))


def _models(**slips):
    from torchvision.models import mobilenet_v2
    torch.manual_seed(0)
    net = mobilenet_v2(num_classes=10, dropout=0.0).eval()
    x = np.random.default_rng(0).standard_normal((2, 3, 32, 32)).astype(np.float32)
    return net, nnx.eval_shape(lambda: MobileNetV2(nnx.Rngs(0), **slips)), x


def test_a_port_with_flax_names_pairs_by_call_order():
    net, port, x = _models()
    with pytest.raises(P.ParityError, match=r"(ambiguous|has no partner).*; pass the inputs "
                                            r"\(pair\(\.\.\., inputs=x\), or check's\) to "
                                            r"pair what is left by call order"):
        P.pair(net, port)  # names and shapes alone cannot tell, and the error says what to do
    pairing = P.pair(net, port, inputs=x, flax_inputs=nhwc)
    got = {p.torch_name: p.flax_path for p in pairing}
    assert len(got) == 105  # 52 convolutions, 52 BatchNorms, the classifier
    assert got["features.0.0"] == "stem/conv" and got["features.0.1"] == "stem/bn"
    assert got["features.2.conv.1.0"] == "blocks/1/depthwise/conv"
    assert got["features.17.conv.2"] == "blocks/16/project/conv"
    assert got["classifier.1"] == "head"
    assert "call order" in {p.rule for p in pairing}


@pytest.mark.slow
def test_the_flax_named_port_passes_and_its_slip_is_localised():
    net, port, x = _models()
    report = P.check(net, port, x, flax_inputs=nhwc, init_seeds=0)
    report.assert_ok()
    net, slipped, x = _models(same_padding=(2,))
    d = P.check(net, slipped, x, flax_inputs=nhwc, init_seeds=0).first_divergence
    assert (d.torch_name, d.flax_path, d.where) == ("features.2.conv.1.0",
                                                    "blocks/1/depthwise/conv", "inside"), str(d)


class _TwoBranches(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Linear(4, 4)
        self.b = nn.Linear(4, 4)

    def forward(self, x):
        return torch.tanh(self.a(x)) * self.b(x)  # a, then b


class _Swapped(nnx.Module):
    """Flax names, and the branches computed in the other order (b's role first)."""

    def __init__(self, rngs):
        self.gate = nnx.Linear(4, 4, rngs=rngs)
        self.value = nnx.Linear(4, 4, rngs=rngs)

    def __call__(self, x):
        v = self.value(x)   # torch's b, called first here
        return nnx.tanh(self.gate(x)) * v


def test_parallel_branches_are_refused_not_paired_by_call_order():
    """Two layers of the same shape on the same input (parallel branches), which the port
    computes in the other order: the order they run in proves nothing, so pairing refuses
    naming both (before: paired a with the port's value, wrongly); a mapping pairs them, and
    the port then passes."""
    x = np.random.default_rng(0).standard_normal((3, 4)).astype(np.float32)
    torch.manual_seed(0)
    t = _TwoBranches()
    port = _Swapped(nnx.Rngs(0))
    with pytest.raises(P.ParityError, match=r"call order: torch 'a' and 'b' take the same "
                                            r"input \(parallel branches\) and both fit nnx "
                                            r"'value'"):
        P.pair(t, port, inputs=x)
    with pytest.raises(P.ParityError, match="parallel branches"):
        P.check(t, port, x, init_seeds=0)
    right = P.pair(t, port, mapping={"a": "gate", "b": "value"})
    assert P.check(t, port, x, init_seeds=0, pairing=right).ok


class _InOrder(_Swapped):
    def __call__(self, x):
        g = nnx.tanh(self.gate(x))
        return g * self.value(x)


def test_a_mapping_that_contradicts_the_call_order_is_refused():
    x = np.random.default_rng(0).standard_normal((3, 4)).astype(np.float32)
    with pytest.raises(P.ParityError, match=r"mapping: torch calls a before b, but the port "
                                            r"calls gate \(mapped to b\) before value \(mapped "
                                            r"to a\); the two entries look swapped"):
        P.pair(_TwoBranches(), _InOrder(nnx.Rngs(0)), mapping={"a": "value", "b": "gate"},
               inputs=x)


class _Chain(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Linear(4, 4)
        self.b = nn.Linear(4, 4)

    def forward(self, x):
        return self.b(torch.tanh(self.a(x)))


def test_call_sequences_that_part_are_refused_naming_both():
    """Layers in a chain pair by call order; a port that calls one more layer is refused
    naming it."""
    class Chain(nnx.Module):
        def __init__(self, rngs, extra=False):
            self.first = nnx.Linear(4, 4, rngs=rngs)
            self.second = nnx.Linear(4, 4, rngs=rngs)
            self.proj = nnx.Linear(4, 4, rngs=rngs) if extra else None

        def __call__(self, x):
            y = self.second(nnx.tanh(self.first(x)))
            return self.proj(y) if self.proj is not None else y
    x = np.random.default_rng(0).standard_normal((3, 4)).astype(np.float32)
    torch.manual_seed(0)
    got = P.pair(_Chain(), Chain(nnx.Rngs(0)), inputs=x)
    assert {p.torch_name: (p.flax_path, p.rule) for p in got} == {
        "a": ("first", "call order"), "b": ("second", "call order")}
    assert P.check(_Chain(), Chain(nnx.Rngs(0)), x, init_seeds=0).ok
    with pytest.raises(P.ParityError, match=r"call order: nnx proj \(Linear\) has no partner"):
        P.pair(_Chain(), Chain(nnx.Rngs(0), extra=True), inputs=x)


# --- torchvision's ConvNeXt pieces with the official repo's names ----------------------------

class _ConvNeXtPort(nnx.Module):
    def __init__(self, dim, rngs, approximate=False):
        self.stem = nnx.Conv(3, dim, (4, 4), strides=4, padding="VALID", rngs=rngs)
        self.stem_norm = nnx.LayerNorm(dim, epsilon=1e-6, rngs=rngs)  # on NHWC
        # the official repo's names, its LayerScale called gamma
        self.block = CNBlock(dim, rngs, "tanh gelu" if approximate else None,
                             scale_name="gamma")

    def __call__(self, x):
        return self.block(self.stem_norm(self.stem(x)))


def _convnext(**slip):
    from functools import partial

    from torchvision.models.convnext import CNBlock, LayerNorm2d
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 16, 4, stride=4), LayerNorm2d(16, eps=1e-6),
                        CNBlock(16, 0.5, 0.0, partial(nn.LayerNorm, eps=1e-6)))
    x = np.random.default_rng(0).standard_normal((2, 3, 16, 24)).astype(np.float32)
    from winit_jax.parity import nchw
    return net, _ConvNeXtPort(16, nnx.Rngs(0), **slip), x, dict(flax_inputs=nhwc,
                                                                 flax_outputs=nchw, init_seeds=0)


def test_convnext_with_the_official_names_pairs_and_passes():
    """No mapping: the two LayerNorm(16) pair by call order, the rest by shape; the bare
    layer_scale (16, 1, 1) pairs with gamma (16,) through the one reshape that fits; the
    channels-first LayerNorm2d's activations (NCHW in torch, NHWC in the port) are compared
    through the one axis order that fits (4x6 maps: unambiguous), not reported as inf."""
    net, port, x, kw = _convnext()
    pairing = P.pair(net, port, inputs=x, flax_inputs=nhwc)
    got = {p.torch_name: (p.flax_path, p.rule) for p in pairing}
    assert got["1"] == ("stem_norm", "call order") and got["2.block.2"][0] == "block/norm"
    assert got["2"][0] == "block"  # layer_scale <-> gamma
    report = P.check(net, port, x, pairing=pairing, **kw)
    report.assert_ok()
    row = next(r for r in report.layers if r.torch_name == "1")
    assert not row.not_compared and row.output_gap < row.output_tol
    P.from_torch(net, port, pairing=pairing)
    assert np.array_equal(np.asarray(port.block.gamma[...]),
                          net[2].layer_scale.detach().numpy().reshape(16))


def test_convnext_gelu_slip_is_localised():
    net, port, x, kw = _convnext(approximate=True)  # GELU's tanh approximation
    d = P.check(net, port, x, **kw).first_divergence
    assert (d.torch_name, d.where) == ("2.block.5", "before"), str(d)


# --- checking a port with the weights it holds ----------------------------------------------

def _load(port, state, transpose=True):
    """A porter's own loader from a torch state dict; ``transpose=False`` is the classic slip
    (square weights, so no shape error says so)."""
    import jax.numpy as jnp
    for torch_name, layer in (("a", port.first), ("b", port.second)):
        w = state[f"{torch_name}.weight"].numpy()
        layer.kernel.set_value(jnp.asarray(w.T if transpose else w))
        layer.bias.set_value(jnp.asarray(state[f"{torch_name}.bias"].numpy()))


class _ChainPort(nnx.Module):
    def __init__(self, rngs):
        self.first = nnx.Linear(4, 4, rngs=rngs)
        self.second = nnx.Linear(4, 4, rngs=rngs)

    def __call__(self, x):
        return self.second(nnx.tanh(self.first(x)))


def test_check_with_the_ports_own_weights_catches_a_loader_slip():
    """``check`` copies torch's weights over the port by default, so a loader that forgets a
    transpose still passes; ``weights="port"`` compares the port as loaded: the faithful
    loader passes, the slip fails at the first layer. An abstract port is refused."""
    x = np.random.default_rng(0).standard_normal((3, 4)).astype(np.float32)
    torch.manual_seed(0)
    net = _Chain()
    slipped = _ChainPort(nnx.Rngs(0))
    _load(slipped, net.state_dict(), transpose=False)
    mapping = {"a": "first", "b": "second"}
    assert P.check(net, slipped, x, init_seeds=0, mapping=mapping).ok  # torch's copied over
    _load(slipped, net.state_dict(), transpose=False)
    report = P.check(net, slipped, x, mapping=mapping, weights="port")
    assert not report.ok and report.first_divergence.torch_name == "a"
    faithful = _ChainPort(nnx.Rngs(0))
    _load(faithful, net.state_dict())
    P.check(net, faithful, x, mapping=mapping, weights="port").assert_ok()
    with pytest.raises(P.ParityError, match="weights: 'port' compares the weights the port "
                                            "holds, but first/bias is abstract"):
        P.check(net, nnx.eval_shape(lambda: _ChainPort(nnx.Rngs(0))), x, mapping=mapping,
                weights="port")
