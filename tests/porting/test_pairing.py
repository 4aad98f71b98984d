"""Pairing that never reads attribute order, classes matched by isinstance, a porter's own
layer pair through the one registry, and errors that name the right layer and change
nothing. Public API only."""

import copy
import dataclasses
import re

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

import winit_jax.torch_like as tl
from tests.conftest import require_torch
from winit_jax import parity as P
from winit_jax.torch_draws import constant, torch_linear_kernel

torch = require_torch()
nn = torch.nn


# --- the jit-sorted swap (issue #25's first finding) ---------------------------------------

class TorchGated(nn.Module):
    """Two same-shaped Linears defined as proj, then gate (not in alphabetical order)."""

    def __init__(self):
        super().__init__()
        self.proj = nn.Linear(8, 8)
        self.gate = nn.Linear(8, 8)

    def forward(self, x):
        return self.proj(x) * torch.sigmoid(self.gate(x))


class FlaxGated(nnx.Module):
    def __init__(self, rngs):
        self.proj = nnx.Linear(8, 8, rngs=rngs)
        self.gate = nnx.Linear(8, 8, rngs=rngs)

    def __call__(self, x):
        return self.proj(x) * jax.nn.sigmoid(self.gate(x))


def _after_jit(m):
    nnx.jit(lambda m, x: m(x))(m, jnp.ones((1, 8)))
    return m


def _after_update(m):
    nnx.update(m, nnx.state(m))
    return m


def _after_optimizer_step(m):
    opt = nnx.Optimizer(m, optax.sgd(0.0), wrt=nnx.Param)
    grads = nnx.grad(lambda m: m(jnp.ones((1, 8))).sum())(m)
    opt.update(m, grads)
    return m


def _after_split_merge(m):
    return nnx.merge(*nnx.split(m))


@pytest.mark.parametrize("touch", [_after_jit, _after_update, _after_optimizer_step,
                                   _after_split_merge, copy.deepcopy],
                         ids=["nnx.jit", "nnx.update", "optimizer", "split/merge", "deepcopy"])
def test_pairs_do_not_depend_on_attribute_order(touch):
    torch.manual_seed(0)
    t = TorchGated()
    model = FlaxGated(nnx.Rngs(0))
    before = [(p.torch_name, p.flax_path) for p in P.pair(t, model)]
    model = touch(model)
    assert [(p.torch_name, p.flax_path) for p in P.pair(t, model)] == before == [
        ("proj", "proj"), ("gate", "gate")]
    P.from_torch(t, model)
    x = np.random.default_rng(0).standard_normal((4, 8)).astype(np.float32)
    with torch.no_grad():
        ref = t(torch.from_numpy(x)).numpy()
    assert P.rel_gap(np.asarray(model(jnp.asarray(x))), ref) < 1e-6
    # and a second check on the same (now jit-touched) port still passes
    assert P.check(t, model, x, steps=2, init_seeds=2).ok


def test_negative_control_the_swap_is_what_the_forward_would_catch():
    """Were proj and gate swapped (what reading attribute order after nnx.jit did), the
    forward would be far off: the regression test above can fail."""
    torch.manual_seed(0)
    t = TorchGated()
    model = P.from_torch(t, FlaxGated(nnx.Rngs(0)), mapping={"proj": "gate", "gate": "proj"})
    x = np.random.default_rng(0).standard_normal((4, 8)).astype(np.float32)
    with torch.no_grad():
        ref = t(torch.from_numpy(x)).numpy()
    assert P.rel_gap(np.asarray(model(jnp.asarray(x))), ref) > 0.1


# --- classes by isinstance ------------------------------------------------------------------

class MyTorchLinear(nn.Linear):
    pass


class MyFlaxLinear(nnx.Linear):
    pass


class Linear(nn.Module):  # merely named Linear
    def __init__(self):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(3, 4))


def test_subclasses_pair_and_a_class_merely_named_linear_does_not():
    t = MyTorchLinear(4, 3)
    f = P.from_torch(t, MyFlaxLinear(4, 3, rngs=nnx.Rngs(0)))
    np.testing.assert_array_equal(np.asarray(f.kernel[...]), t.weight.detach().numpy().T)
    assert P.pair(t, f)[0].kind.name == "Linear"
    with pytest.raises(P.ParityError, match=r"torch <root> \(Linear's own parameters weight\) vs "
                                            r"nnx <root> \(Linear\): no layer kind pairs these "
                                            r"two \(winit_jax.parity.layer_kind builds one"):
        P.pair(Linear(), nnx.Linear(4, 3, rngs=nnx.Rngs(0)))


# --- list order -----------------------------------------------------------------------------

def test_same_shaped_layers_in_lists_pair_in_index_order():
    t = nn.Sequential(nn.Linear(5, 5), nn.ReLU(), nn.Linear(5, 5), nn.ReLU(), nn.Linear(5, 5))

    class Port(nnx.Module):
        def __init__(self, rngs):
            self.layers = nnx.List([nnx.Linear(5, 5, rngs=rngs) for _ in range(3)])
    got = [(p.torch_name, p.flax_path, p.rule) for p in P.pair(t, _after_update(Port(
        nnx.Rngs(0))))]
    assert got == [("0", "layers/0", "list order"), ("2", "layers/1", "list order"),
                   ("4", "layers/2", "list order")]


# --- a porter's own layer pair ----------------------------------------------------------------

class TorchScaled(nn.Module):
    """A porter's layer: y = (x W^T) * s, W drawn as torch's Linear draws it, s = 1."""

    def __init__(self, n_in, n_out):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(n_out, n_in))
        self.scale = nn.Parameter(torch.ones(n_out))
        self.reset_parameters()

    def reset_parameters(self):
        nn.init.kaiming_uniform_(self.weight, a=5 ** 0.5)
        nn.init.ones_(self.scale)

    def forward(self, x):
        return (x @ self.weight.T) * self.scale


class FlaxScaled(nnx.Module):
    def __init__(self, n_in, n_out, rngs):
        self.kernel = nnx.Param(jax.random.normal(rngs.params(), (n_in, n_out)))
        self.scale = nnx.Param(jnp.ones(n_out))

    def __call__(self, x):
        return (x @ self.kernel[...]) * self.scale[...]


def _scaled_models():
    torch.manual_seed(0)
    t = nn.Sequential(TorchScaled(6, 12), nn.Tanh(), TorchScaled(12, 3))
    f = nnx.Sequential(FlaxScaled(6, 12, nnx.Rngs(0)), nnx.tanh, FlaxScaled(12, 3, nnx.Rngs(1)))
    x = np.random.default_rng(0).standard_normal((16, 6)).astype(np.float32)
    return t, f, x


def test_a_registered_layer_pair_works_everywhere():
    t, f, x = _scaled_models()
    # unregistered, the two are only bare parameters, and their names differ
    with pytest.raises(P.ParityError, match=r"torch layer 0 \(TorchScaled's own parameters "
                                            r"weight, scale\) has no partner .* torch gives "
                                            r"weight, which the nnx layer does not have"):
        P.pair(t, f)
    kind = P.register(P.layer_kind(
        TorchScaled, FlaxScaled, tensors={"weight": ("kernel", "transpose"), "scale": "scale"},
        init={"kernel": torch_linear_kernel(), "scale": constant(1.0)}))
    try:
        # torch_like.init knows it (and draws torch's law: checked by check's init part)
        tl.init(f, jax.random.key(0))
        assert np.abs(np.asarray(f.layers[0].kernel[...])).max() <= 1 / 6 ** 0.5
        # both transfers, exactly
        P.from_torch(t, f)
        back = P.to_torch(f, nn.Sequential(TorchScaled(6, 12), nn.Tanh(), TorchScaled(12, 3)))
        for a, b in zip(t.state_dict().values(), back.state_dict().values()):
            assert torch.equal(a, b)
        report = P.check(t, f, x, steps=3, momentum=0.9, init_seeds=4)
        report.assert_ok()
        parts = {s["part"] for s in report.summary()}
        assert {"init", "forward", "gradient", "layer", "step", "step (float64)"} <= parts
        assert parts <= {"init", "forward", "gradient", "layer", "step", "step (float64)",
                         "single step"}  # single steps where float32 training is chaotic
    finally:
        P.unregister(kind)


def test_a_registered_pair_with_the_wrong_layout_fails_check():
    """Mutant: the porter forgets the transpose (a square weight, so shapes cannot tell)."""
    torch.manual_seed(0)
    t = TorchScaled(5, 5)
    f = FlaxScaled(5, 5, nnx.Rngs(0))
    x = np.random.default_rng(1).standard_normal((8, 5)).astype(np.float32)
    kind = P.layer_kind(TorchScaled, FlaxScaled, tensors={"weight": "kernel", "scale": "scale"})
    assert not P.check(t, f, x, init_seeds=0, kinds=[kind]).ok


def test_register_layer_still_works_and_names_the_one_way():
    """Code written before layer_kind: register_layer registers as before, with a
    DeprecationWarning naming layer_kind and the three scopes."""
    with pytest.warns(DeprecationWarning, match=r"parity\.register\(parity\.layer_kind"):
        kind = P.register_layer(TorchScaled, FlaxScaled, tensors={"weight": ("kernel",
                                                                             "transpose"),
                                                                  "scale": "scale"})
    try:
        t, f, _ = _scaled_models()
        assert {p.kind.name for p in P.pair(t, f)} == {"TorchScaled"}
    finally:
        P.unregister(kind)


# --- errors that name the right layer and change nothing -----------------------------------

def _snapshot(t, f):
    return ({k: v.detach().clone() for k, v in t.state_dict().items()},
            jax.tree.map(np.asarray, nnx.state(f)))


def _unchanged(before, t, f):
    after = _snapshot(t, f)
    assert all(torch.equal(before[0][k], after[0][k]) for k in before[0])
    jax.tree.map(np.testing.assert_array_equal, before[1], after[1])


def test_a_partial_mapping_names_the_layers_left_unpaired():
    t = nn.ModuleDict(dict(emb=nn.Embedding(10, 4), fwd=nn.LSTM(4, 4, batch_first=True),
                           bwd=nn.LSTM(4, 4, batch_first=True), head=nn.Linear(4, 10)))

    class Port(nnx.Module):
        def __init__(self, rngs):
            self.emb = nnx.Embed(10, 4, rngs=rngs)
            self.rnn = nnx.List([nnx.RNN(nnx.OptimizedLSTMCell(4, 4, rngs=rngs))
                                 for _ in range(2)])
            self.head = nnx.Linear(4, 10, rngs=rngs)
    f = Port(nnx.Rngs(0))
    with pytest.raises(P.ParityError, match=r"ambiguous: torch fwd \(LSTM\) fits nnx "
                                            r"rnn/0 \(\w+\) and nnx rnn/1 \(\w+\) alike"):
        P.pair(t, f)
    got = P.pair(t, f, mapping={"fwd": "rnn/1"})  # the last one is then forced
    assert [(p.torch_name, p.flax_path, p.rule) for p in got] == [
        ("emb", "emb", "name"), ("fwd", "rnn/1", "mapping"), ("bwd", "rnn/0", "forced"),
        ("head", "head", "name")]
    with pytest.raises(P.ParityError, match=r"mapping: the nnx model has no layer 'rnn/2'"):
        P.pair(t, f, mapping={"fwd": "rnn/2"})
    with pytest.raises(P.ParityError, match=r"mapping: nnx layer 'head' is given to two"):
        P.pair(t, f, mapping={"fwd": "head", "bwd": "head"})


def test_layers_numbered_in_their_names_pair_in_numeric_order():
    """torchvision names its blocks encoder_layer_0, ..., encoder_layer_10; a port keeps them
    in a list: same template on each side, paired by number (10 after 9, not after 1)."""
    t = nn.ModuleDict({f"block{i}": nn.Linear(3, 3) for i in range(11)})

    class Port(nnx.Module):
        def __init__(self, rngs):
            self.blocks = nnx.List([nnx.Linear(3, 3, rngs=rngs) for _ in range(11)])
    got = {p.torch_name: p.flax_path for p in P.pair(t, Port(nnx.Rngs(0)))}
    assert got == {f"block{i}": f"blocks/{i}" for i in range(11)}


def test_a_torch_linear_without_bias_against_one_with_bias_is_refused():
    t = nn.Linear(4, 3, bias=False)
    f = nnx.Linear(4, 3, rngs=nnx.Rngs(0))
    before = _snapshot(t, f)
    with pytest.raises(P.ParityError, match=r"torch <root> \(Linear\) vs nnx <root> \(Linear\): "
                                            r"the nnx layer has bias, which torch does not give"):
        P.from_torch(t, f)
    with pytest.raises(P.ParityError, match="the nnx layer has bias"):
        P.to_torch(f, t)
    _unchanged(before, t, f)


def test_attention_without_biases():
    """nnx attention with use_bias=False: refused against a torch one with biases (was an
    AttributeError), and round trips, initialises and checks against one without."""
    t = nn.MultiheadAttention(8, 2, batch_first=True)
    f = nnx.MultiHeadAttention(2, 8, decode=False, use_bias=False, rngs=nnx.Rngs(0))
    with pytest.raises(P.ParityError, match="torch gives key/bias, out/bias, query/bias"):
        P.from_torch(t, f)
    torch.manual_seed(0)
    t = nn.MultiheadAttention(8, 2, batch_first=True, bias=False)

    class Self(nnx.Module):
        def __init__(self, rngs):
            self.attn = nnx.MultiHeadAttention(2, 8, decode=False, use_bias=False, rngs=rngs)

        def __call__(self, x):
            return self.attn(x)

    class TorchSelf(nn.Module):
        def __init__(self):
            super().__init__()
            self.attn = t

        def forward(self, x):
            return self.attn(x, x, x, need_weights=False)[0]
    x = np.random.default_rng(0).standard_normal((2, 5, 8)).astype(np.float32)
    P.check(TorchSelf(), Self(nnx.Rngs(0)), x, steps=2, init_seeds=4).assert_ok()


@pytest.mark.parametrize("where", ["loss", "metric"])
def test_an_error_after_the_init_part_leaves_both_models_as_they_were(where):
    torch.manual_seed(0)
    t = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3))
    f = nnx.Sequential(nnx.Linear(6, 8, rngs=nnx.Rngs(0)), nnx.relu,
                       nnx.Linear(8, 3, rngs=nnx.Rngs(0)))
    x = np.random.default_rng(0).standard_normal((4, 6)).astype(np.float32)
    before = _snapshot(t, f)
    if where == "loss":  # not a scalar: refused before anything changes
        with pytest.raises(P.ParityError, match=r"loss: gives shape \(4,\) on the torch output"):
            P.check(t, f, x, loss=lambda y: (y ** 2).sum(-1), steps=2)
    else:  # a metric that fails after init, transfer and steps: all undone
        def broken(y, c):
            raise RuntimeError("metric broke")
        with pytest.raises(RuntimeError, match="metric broke"):
            P.check(t, f, x, targets=np.zeros(4, np.int64), steps=2, metric=broken,
                    eval_data=dict(inputs=x, targets=np.zeros(4, np.int64)))
    _unchanged(before, t, f)
    assert all(p.grad is None for p in t.parameters())


def test_conv_padding_mode_other_than_zeros_is_refused():
    t = nn.Conv2d(3, 4, 3, padding=1, padding_mode="reflect")
    f = nnx.Conv(3, 4, (3, 3), padding=((1, 1), (1, 1)), rngs=nnx.Rngs(0))
    before = _snapshot(t, f)
    with pytest.raises(P.ParityError, match=r"Conv2d\(padding_mode='reflect'\): nnx.Conv pads "
                                            "with zeros only"):
        P.from_torch(t, f)
    _unchanged(before, t, f)


@pytest.mark.parametrize("port", ["LinearGeneral", "Einsum"])
def test_a_multi_head_projection_as_one_torch_linear(port):
    """A porter's q projection: torch Linear(16, 4 x 8) as nnx LinearGeneral(16, (4, 8)) or
    Einsum("bsd,dhk->bshk"): round trip exact, torch's init, forward, gradients, steps."""
    torch.manual_seed(0)

    class Torch(nn.Module):
        def __init__(self):
            super().__init__()
            self.q = nn.Linear(16, 32)

        def forward(self, x):
            return self.q(x).reshape(x.shape[0], x.shape[1], 4, 8)

    class Port(nnx.Module):
        def __init__(self, rngs):
            self.q = (nnx.LinearGeneral(16, (4, 8), rngs=rngs) if port == "LinearGeneral" else
                      nnx.Einsum("bsd,dhk->bshk", (16, 4, 8), (4, 8), rngs=rngs))

        def __call__(self, x):
            return self.q(x)
    t, f = Torch(), Port(nnx.Rngs(0))
    back = P.to_torch(P.from_torch(t, f), Torch())
    assert torch.equal(back.q.weight, t.q.weight) and torch.equal(back.q.bias, t.q.bias)
    x = np.random.default_rng(0).standard_normal((2, 5, 16)).astype(np.float32)
    P.check(t, f, x, steps=2, init_seeds=4).assert_ok()


# --- a porter's kind changes only the pairs it is about ------------------------------------

class Conv1D(nn.Module):
    """HF transformers' ``Conv1D`` (GPT-2's projections) as transformers writes it: a Linear
    whose weight is (in, out), drawn N(0, 0.02), the bias zero."""

    def __init__(self, nf, nx):
        super().__init__()
        self.nf = nf
        self.weight = nn.Parameter(torch.empty(nx, nf))
        self.bias = nn.Parameter(torch.zeros(nf))
        nn.init.normal_(self.weight, std=0.02)

    def forward(self, x):
        out = torch.addmm(self.bias, x.view(-1, x.size(-1)), self.weight)
        return out.view(x.size()[:-1] + (self.nf,))


def _linear_draws():
    """torch_like.init's draws for a model of plain nnx.Linear layers (no Conv1D)."""
    model = nnx.eval_shape(lambda: nnx.Sequential(nnx.Linear(64, 64, rngs=nnx.Rngs(0)),
                                                  nnx.Linear(64, 8, rngs=nnx.Rngs(0))))
    tl.init(model, jax.random.key(0))
    return [np.asarray(v[...]) for _, v in nnx.iter_graph(model) if isinstance(v, nnx.Param)]


def test_a_porters_kind_changes_only_the_pairs_it_is_about():
    """Registering Conv1D against nnx.Linear (as a GPT-2 porter does) leaves
    torch_like.init of a model without Conv1D bit for bit as it was; the Conv1D pair draws
    Conv1D's N(0, 0.02) (sample std within 5 standard errors, sigma / sqrt(2n); torch's
    Linear default would be 1/sqrt(3 * 64) = 0.072) and copies in HF's (in, out) layout."""
    before = _linear_draws()
    kind = P.register(P.layer_kind(Conv1D, nnx.Linear,
                                   tensors={"weight": "kernel", "bias": "bias"},
                                   init={"kernel": jax.nn.initializers.normal(0.02),
                                         "bias": jax.nn.initializers.zeros}))
    try:
        assert all(np.array_equal(a, b) for a, b in zip(before, _linear_draws()))
        torch.manual_seed(0)
        t = Conv1D(64, 64)
        port = nnx.eval_shape(lambda: nnx.Linear(64, 64, rngs=nnx.Rngs(0)))
        pairing = P.pair(t, port)
        assert [p.kind for p in pairing] == [kind]
        tl.init(port, jax.random.key(0), pairing=pairing)
        kernel = np.asarray(port.kernel[...])
        assert abs(kernel.std() - 0.02) < 5 * 0.02 / np.sqrt(2 * kernel.size)
        assert not np.any(np.asarray(port.bias[...]))
        P.from_torch(t, port, pairing=pairing)
        assert np.array_equal(np.asarray(port.kernel[...]), t.weight.detach().numpy())
    finally:
        P.unregister(kind)
    # negative control: the same kind put ahead of every other (what "last one wins" did to
    # the whole process) changes the plain model's draws; scoped, it is gone after the block
    with P.registered(kind):
        assert not np.array_equal(_linear_draws()[0], before[0])
    assert np.array_equal(_linear_draws()[0], before[0])


def test_kinds_given_to_one_call_pair_without_a_global_registration():
    kind = dataclasses.replace(
        next(k for k in P.kinds() if k.name == "Linear"), name="Conv1D",
        torch_classes=(Conv1D,),
        to_flax=lambda t, f: {"kernel": t.weight.detach().numpy().copy(),
                              "bias": t.bias.detach().numpy().copy()},
        to_torch=lambda f, t: {"weight": np.asarray(f.kernel[...]),
                               "bias": np.asarray(f.bias[...])})
    t, port = Conv1D(8, 4), nnx.Linear(4, 8, rngs=nnx.Rngs(0))
    with pytest.raises(P.ParityError, match="no layer kind pairs these two"):
        P.pair(t, port)
    assert [p.kind.name for p in P.pair(t, port, kinds=[kind])] == ["Conv1D"]
    assert kind not in P.kinds()


def test_the_root_is_named_in_a_candidate_list_never_blank():
    """A model's own parameters (a ViT's class token) among the candidates of an ambiguity:
    labelled <root> with what it holds (before: a blank '')."""
    class TorchRoot(nn.Module):  # the tokens on two children of the root
        def __init__(self):
            super().__init__()
            self.embed = nn.Module()
            self.embed.cls = nn.Parameter(torch.zeros(4))
            self.encoder = nn.Module()
            self.encoder.pos = nn.Parameter(torch.zeros(4))

    class Encoder(nnx.Module):
        def __init__(self):
            self.pos_embed = nnx.Param(jnp.zeros(4))

    class FlaxRoot(nnx.Module):
        def __init__(self):
            self.cls_token = nnx.Param(jnp.zeros(4))
            self.blocks = Encoder()
    with pytest.raises(P.ParityError) as e:
        P.pair(TorchRoot(), FlaxRoot())
    message = str(e.value)
    assert re.search(r"ambiguous: torch embed \(Module's own parameters cls\) fits nnx <root> "
                     r"\(FlaxRoot's own parameters cls_token\) and nnx blocks \(Encoder's own "
                     r"parameters pos_embed\) alike", message), message
    assert "nnx ''" not in message  # (the mapping hint {'embed': ''} is the root's path)
