"""winit_jax.parity on models nobody here wrote: weights across both ways for every supported
layer, and ``check`` (init, forward, gradients, training steps, BatchNorm statistics) on
torchvision's ResNet-18, torch's Transformer encoder layer and LSTM, with mutations that
must make it fail."""


import contextlib
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import winit_jax.torch_like as tl
from tests.conftest import require_torch
from winit_jax import parity as P
from winit_jax.models import ResNet18, TransformerEncoderLayer
from winit_jax.parity import nchw, nhwc

torch = require_torch()
nn = torch.nn


@contextlib.contextmanager
def mutant(name, **changes):
    """The built-in kind ``name`` with ``changes``, in force inside the block only."""
    base = next(k for k in P.kinds() if k.name == name)
    with P.registered(dataclasses.replace(base, **changes)):
        yield base


# --- weights across, both ways --------------------------------------------------------------

class Pair:
    """A torch module and its nnx twin built layer for layer (same definition order)."""

    @staticmethod
    def torch(dtype):
        return nn.ModuleDict(dict(
            lin=nn.Linear(6, 5), conv=nn.Conv2d(4, 6, 3, groups=2), ct=nn.ConvTranspose1d(3, 5, 4),
            emb=nn.Embedding(7, 6), ln=nn.LayerNorm(6), gn=nn.GroupNorm(2, 6), rms=nn.RMSNorm(6),
            bn=nn.BatchNorm1d(6), mha=nn.MultiheadAttention(8, 2, batch_first=True),
            lstm=nn.LSTM(4, 5, batch_first=True))).to(dtype)

    @staticmethod
    def flax(dtype):
        class Twin(nnx.Module):
            def __init__(self, rngs):
                kw = dict(param_dtype=dtype, rngs=rngs)
                self.lin = nnx.Linear(6, 5, **kw)
                self.conv = nnx.Conv(4, 6, (3, 3), feature_group_count=2, **kw)
                self.ct = nnx.ConvTranspose(3, 5, (4,), **kw)
                self.emb = nnx.Embed(7, 6, **kw)
                self.ln = nnx.LayerNorm(6, **kw)
                self.gn = nnx.GroupNorm(6, num_groups=2, **kw)
                self.rms = nnx.RMSNorm(6, **kw)
                self.bn = nnx.BatchNorm(6, **kw)
                self.mha = nnx.MultiHeadAttention(2, 8, decode=False, **kw)
                self.lstm = nnx.RNN(nnx.OptimizedLSTMCell(4, 5, **kw))
        return Twin(nnx.Rngs(0))


def _torch_state(m):
    return {k: v.detach().clone() for k, v in m.state_dict().items()}


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_round_trips_are_exact_for_every_layer(dtype):
    with jax.enable_x64(dtype == "float64"):
        torch.manual_seed(0)
        t = Pair.torch(getattr(torch, dtype))
        with torch.no_grad():  # non-trivial statistics and biases everywhere
            for name, b in t.named_buffers():
                if b.is_floating_point():
                    b.copy_(torch.rand_like(b) + 0.5)
            t.lstm.bias_hh_l0.zero_()  # Flax holds one bias: b_ih + b_hh (with b_hh = 0 exact)
        f = P.from_torch(t, Pair.flax(jnp.dtype(dtype)))
        back = P.to_torch(f, Pair.torch(getattr(torch, dtype)))
        a, b = _torch_state(t), _torch_state(back)
        for k in a:
            if k.endswith("num_batches_tracked"):
                continue
            assert a[k].dtype == b[k].dtype, k
            if k.startswith("bn.running") and dtype == "float64":
                # nnx.BatchNorm keeps its statistics in float32 whatever its param_dtype
                assert torch.equal(a[k].float(), b[k].float()), k
            else:
                assert torch.equal(a[k], b[k]), k
        again = P.from_torch(back, Pair.flax(jnp.dtype(dtype)))
        def weights(m):
            return {p: np.asarray(v.get_value()) for p, v in nnx.iter_graph(m)
                    if isinstance(v, (nnx.Param, nnx.BatchStat))}
        w1, w2 = weights(f), weights(again)
        assert set(w1) == set(w2) and len(w1) >= 20
        for p in w1:
            np.testing.assert_array_equal(w1[p], w2[p], err_msg=str(p))


def test_each_layer_computes_the_same_after_transfer():
    torch.manual_seed(1)
    rng = np.random.default_rng(0)
    cases = [
        (nn.Conv2d(4, 6, 3, padding=1, groups=2), nnx.Conv(4, 6, (3, 3), feature_group_count=2,
                                                             padding=((1, 1), (1, 1)),
                                                             rngs=nnx.Rngs(0)), (2, 4, 7, 7)),
        (nn.ConvTranspose2d(5, 6, 3, stride=2),
         nnx.ConvTranspose(5, 6, (3, 3), strides=(2, 2), padding="VALID", rngs=nnx.Rngs(0)),
         (2, 5, 6, 6)),
        (nn.ConvTranspose2d(5, 6, 3, stride=2),
         nnx.ConvTranspose(5, 6, (3, 3), strides=(2, 2), padding="VALID", transpose_kernel=True,
                           rngs=nnx.Rngs(0)), (2, 5, 6, 6)),
    ]
    for t, f, shape in cases:
        x = rng.standard_normal(shape).astype(np.float32)
        P.from_torch(t, f)
        with torch.no_grad():
            ref = t(torch.from_numpy(x)).numpy()
        ours = np.moveaxis(np.asarray(f(jnp.asarray(nhwc(x)))), -1, 1)
        assert P.rel_gap(ours, ref) < 1e-5, type(t).__name__


def test_a_mismatch_names_the_pair_and_changes_nothing():
    t = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))
    f = nnx.Sequential(nnx.Linear(4, 3, rngs=nnx.Rngs(0)), nnx.Linear(3, 3, rngs=nnx.Rngs(0)))
    before = np.asarray(f.layers[0].kernel[...]).copy()
    with pytest.raises(P.ParityError, match=r"torch layer 2 \(Linear\) has no partner.*nearest: "
                                            r"nnx layers/1 \(Linear\): kernel: shape \(3, 2\)"):
        P.from_torch(t, f)
    np.testing.assert_array_equal(np.asarray(f.layers[0].kernel[...]), before)  # untouched
    with pytest.raises(P.ParityError, match=r"torch layer 1 \(Linear\) has no partner"):
        P.from_torch(nn.Sequential(nn.Linear(4, 3), nn.Linear(3, 2), nn.Linear(2, 2)), f)
    with pytest.raises(P.ParityError, match=r"torch layer 0 \(Conv1d\) has no partner"):
        P.from_torch(nn.Sequential(nn.Conv1d(4, 3, 1), nn.Linear(3, 2)), f)
    with pytest.raises(P.ParityError, match=r"torch layer 0 \(PReLU\) has no partner"):
        P.from_torch(nn.Sequential(nn.PReLU(), nn.Linear(4, 3)), f)
    with pytest.raises(P.ParityError, match=r"torch layer 0 \(Bilinear's own parameters weight, "
                                            r"bias\) has no partner"):
        P.from_torch(nn.Sequential(nn.Bilinear(4, 4, 3)), f)


class _Seen(nnx.Variable):
    """A port's own counter (neither a parameter nor a batch statistic)."""


class _DropoutPort(nnx.Module):
    """nn.Sequential(Linear(8, 4), Dropout(0.1)) as a Flax user writes it: the Dropout holds
    an nnx.Rngs stream, which no torch tensor pairs with."""

    def __init__(self, rngs, extra=False):
        self.fc = nnx.Linear(8, 4, rngs=rngs)
        self.drop = nnx.Dropout(0.1, rngs=rngs)
        if extra:  # state of the port's own that torch does not have
            self.seen = _Seen(jnp.zeros(()))

    def __call__(self, x):
        return self.drop(self.fc(x))


def test_a_port_built_as_shapes_is_filled_and_checked():
    """``nnx.eval_shape`` skips Flax's initialisers (one compile per shape); check copies
    torch's weights in, gives the Dropout's random stream a fixed key, and checks as usual.
    A variable that nothing fills is one error naming it, and the port stays as it was."""
    t = nn.Sequential(nn.Linear(8, 4), nn.Dropout(0.1))
    x = np.random.default_rng(0).standard_normal((3, 8)).astype(np.float32)
    port = nnx.eval_shape(lambda: _DropoutPort(nnx.Rngs(0)))
    report = P.check(t, port, x, init_seeds=2)
    report.assert_ok()
    np.testing.assert_array_equal(np.asarray(port.fc.kernel[...]),
                                  t[0].weight.detach().numpy().T)
    assert not any(isinstance(v.get_value(), jax.ShapeDtypeStruct)  # nothing left abstract
               for _, v in nnx.iter_graph(port) if isinstance(v, nnx.Variable))
    odd = nnx.eval_shape(lambda: _DropoutPort(nnx.Rngs(0), extra=True))
    with pytest.raises(P.ParityError, match=r"^model: seen \(_Seen\) is abstract \(a port "
                                            r"built with nnx.eval_shape\) and no torch tensor "
                                            r"pairs with it"):
        P.check(t, odd, x, init_seeds=0)
    assert isinstance(odd.fc.kernel.get_value(), jax.ShapeDtypeStruct)  # left as it was


def test_layers_of_different_shapes_pair_whatever_their_order_and_names():
    t = nn.ModuleDict(dict(a=nn.Linear(4, 3), b=nn.Linear(3, 2)))

    class Reversed(nnx.Module):
        def __init__(self, rngs):
            self.second = nnx.Linear(3, 2, rngs=rngs)
            self.first = nnx.Linear(4, 3, rngs=rngs)
    f = P.from_torch(t, Reversed(nnx.Rngs(0)))
    np.testing.assert_array_equal(np.asarray(f.first.kernel[...]), t.a.weight.detach().numpy().T)
    assert {(p.torch_name, p.flax_path, p.rule) for p in P.pair(t, f)} == {
        ("a", "first", "forced"), ("b", "second", "forced")}


def test_two_layers_that_could_be_swapped_are_refused_until_mapped():
    """Same kind, same shapes, different names: no rule can tell them apart, so the error
    names both candidates; an explicit mapping pairs them."""
    t = nn.ModuleDict(dict(a=nn.Linear(4, 4), b=nn.Linear(4, 4)))

    class Port(nnx.Module):
        def __init__(self, rngs):
            self.first = nnx.Linear(4, 4, rngs=rngs)
            self.second = nnx.Linear(4, 4, rngs=rngs)
    f = Port(nnx.Rngs(0))
    before = np.asarray(f.first.kernel[...]).copy()
    with pytest.raises(P.ParityError, match=r"ambiguous: torch a \(Linear\) fits nnx first \(Linear\) "
                                            r"and nnx second \(Linear\) alike; pass mapping="):
        P.from_torch(t, f)
    np.testing.assert_array_equal(np.asarray(f.first.kernel[...]), before)
    P.from_torch(t, f, mapping={"a": "second", "b": "first"})
    np.testing.assert_array_equal(np.asarray(f.second.kernel[...]), t.a.weight.detach().numpy().T)
    np.testing.assert_array_equal(np.asarray(f.first.kernel[...]), t.b.weight.detach().numpy().T)


def test_float64_needs_x64_and_dtypes_must_match():
    t = nn.Linear(3, 2).double()
    with pytest.raises(P.ParityError, match="jax_enable_x64"):
        P.from_torch(t, nnx.Linear(3, 2, rngs=nnx.Rngs(0)))
    with jax.enable_x64(True):
        with pytest.raises(P.ParityError, match="torch dtype float64 vs nnx float32"):
            P.from_torch(t, nnx.Linear(3, 2, rngs=nnx.Rngs(0)))


def test_gru_with_a_hidden_n_bias_is_refused():
    g = nn.GRU(4, 5)
    with pytest.raises(P.ParityError, match="b_hn"):
        P.from_torch(g, nnx.RNN(nnx.GRUCell(4, 5, rngs=nnx.Rngs(0))))


# --- the harness on models nobody here wrote ---------------------------------------------------

@pytest.mark.slow
def test_resnet18_from_torchvision():
    from torchvision.models import resnet18
    torch.manual_seed(0)
    net = resnet18(num_classes=10)
    model = nnx.eval_shape(lambda: ResNet18(num_classes=10, rngs=nnx.Rngs(0)))  # check fills it
    x = np.random.default_rng(0).standard_normal((2, 3, 64, 64)).astype(np.float32)
    report = P.check(net, model, x, flax_inputs=nhwc, steps=5, train=True, momentum=0.9,
                     init_seeds=1, fresh_torch=lambda: resnet18(num_classes=10),
                     overrides=tl.resnet_recipe())
    report.assert_ok()
    parts = {s["part"]: s for s in report.summary()}
    # 20 convolutions, 20 BatchNorms x (weight, bias, running mean, running var), fc: 102
    assert parts["init"]["checks"] == 102 and parts["batch_stats"]["checks"] == 40
    assert parts["gradient"]["checks"] == 62 and parts["forward"]["value"] < 1e-5


@pytest.mark.slow
def test_transformer_encoder_layer_from_torch():
    torch.manual_seed(0)
    layer = nn.TransformerEncoderLayer(64, 4, dropout=0.0, batch_first=True)
    model = nnx.eval_shape(lambda: TransformerEncoderLayer(64, 4, rngs=nnx.Rngs(0)))
    x = np.random.default_rng(1).standard_normal((2, 10, 64)).astype(np.float32)
    P.check(layer, model, x, steps=5, momentum=0.9, init_seeds=2).assert_ok()


@pytest.mark.slow
def test_lstm_from_torch():
    """Init (torch's two biases compared as their sum), forward over 20 steps, gradients.
    No SGD steps: torch's b_ih and b_hh each take the bias gradient, so their sum moves twice
    as fast as Flax's one bias under the same learning rate (a port that must train the same
    doubles that bias's learning rate); the harness reports that as a failure, as it should."""
    torch.manual_seed(0)
    lstm = nn.LSTM(16, 32, batch_first=True)
    model = nnx.RNN(nnx.OptimizedLSTMCell(16, 32, rngs=nnx.Rngs(0)))
    x = np.random.default_rng(2).standard_normal((4, 20, 16)).astype(np.float32)
    y = dict(torch_outputs=lambda out: out[0])  # torch's (y, (h, c)); nnx.RNN's y
    P.check(lstm, model, x, init_seeds=4, **y).assert_ok()
    trained = P.check(lstm, model, x, steps=3, learning_rate=0.5, init_seeds=0, **y)
    assert any("bias" in c.name for c in trained.failures())


def test_gru_from_torch():
    """A torch GRU whose b_hn is 0 (the one bias nnx.GRUCell has no place for): init (the n
    gate's b_in alone), forward over 12 steps, gradients; a port with r and z swapped fails."""
    torch.manual_seed(0)
    gru = nn.GRU(8, 16, batch_first=True)
    with torch.no_grad():
        gru.bias_hh_l0[32:] = 0.0
    model = nnx.RNN(nnx.GRUCell(8, 16, rngs=nnx.Rngs(0)))
    x = np.random.default_rng(3).standard_normal((4, 12, 8)).astype(np.float32)
    report = P.check(gru, model, x, init_seeds=4, torch_outputs=lambda out: out[0])
    report.assert_ok()
    # init: weight_ih, weight_hh, the summed bias_ih, and bias_hh (0 in both once summed)
    assert {s["part"]: s["checks"] for s in report.summary()} == {
        "init": 4, "forward": 1, "gradient": 3, "layer": 2}  # its output and output gradient

    def r_z_swapped(t, f):
        out = base.to_flax(t, f)
        for k in ("cell/dense_i/kernel", "cell/dense_h/kernel", "cell/dense_i/bias"):
            v = out[k]
            out[k] = np.concatenate([v[..., 16:32], v[..., :16], v[..., 32:]], axis=-1)
        return out
    base = next(k for k in P.kinds() if k.name == "GRU")
    with mutant("GRU", to_flax=r_z_swapped):
        bad = P.check(gru, model, x, init_seeds=0, torch_outputs=lambda out: out[0])
    assert "forward" in {c.part for c in bad.failures()}


def test_small_cnn_port_that_flattens_channels_last_fails():
    """The classic slip: flattening the NHWC activations as they are permutes the head's
    inputs. The harness's forward check catches it (control: the careful port passes)."""
    from winit_jax.lab import examples as E

    torch.manual_seed(0)
    torch_module = E.torch_cnn()
    x = np.random.default_rng(4).random((8, 1, 28, 28)).astype(np.float32)
    assert P.check(torch_module, E.flax_cnn(nnx.Rngs(0)), x, flax_inputs=nhwc, init_seeds=0).ok
    slip = E.flax_cnn(nnx.Rngs(0))

    class Slip(type(slip)):
        def __call__(self, x):
            x = nnx.relu(self.bn1(self.conv1(x)))
            x = nnx.relu(self.bn2(self.conv2(x)))
            return self.head(x.reshape(x.shape[0], -1))
    slip.__class__ = Slip
    bad = P.check(torch_module, slip, x, flax_inputs=nhwc, init_seeds=0)
    assert {"forward", "gradient"} <= {c.part for c in bad.failures()}


def _frozen(t, f):
    return ({k: v.detach().clone() for k, v in t.state_dict().items()},
            jax.tree.map(np.asarray, nnx.state(f)))


@pytest.mark.parametrize("kwargs,needle", [
    (dict(inputs=np.zeros((4, 5), np.float32)), "inputs: shape (4, 5) does not fit the torch"),
    (dict(flax_inputs=lambda x: x[:, :5]), "(after flax_inputs) does not fit the nnx model"),
    (dict(flax_outputs=lambda y: y[:, :2]), "outputs: torch (4, 3) vs nnx (4, 2)"),
    (dict(batches=[dict(inputs=np.zeros((4, 6))), dict(inputs=np.zeros((4, 5)))]),
     "batches[1]: shape (4, 5)"),
    (dict(batches=[dict(inputs=np.zeros((4, 6)))], steps=2), "steps: 2 steps with batches"),
    (dict(metric=P.accuracy), "metric: metric and eval_data go together"),
    (dict(targets=np.zeros(4, np.int64), batches=[
        dict(inputs=np.zeros((4, 6)), targets=np.zeros(4, np.int64)),
        dict(inputs=np.zeros((4, 6)))]),
     "batches[1]: give targets with every batch or with none"),
    (dict(targets=np.zeros(4, np.int64),
          batches=[dict(inputs=np.zeros((4, 6)), targets=np.zeros(3, np.int64))]),
     "batches[0]: 3 targets for 4"),
    # the old (inputs, targets) forms: refused, saying what to pass instead
    (dict(batches=[(np.zeros((4, 6)), np.zeros(4, np.int64))]),
     "batches[0]: each item is a dict(inputs=..., kwargs=..., targets=...), got tuple"),
    (dict(inputs=(np.ones((4, 6), np.float32), np.zeros(4, np.int64))),
     "takes 2 positional arguments but 3 were given; a tuple is several positional inputs: "
     "pass the loss's targets as targets="),
    (dict(kwargs=dict(attention_mask=np.ones((4, 6)))), "inputs: shape (4, 6) and keyword "
     "inputs ['attention_mask'] does not fit the torch module"),
    (dict(torch_outputs=lambda y: "logits"), "torch_outputs: gives str, which holds no tensor"),
    (dict(torch_outputs=lambda y: (y, y)), "outputs: torch gives tuple(0 (4, 3), 1 (4, 3)) and "
     "the port gives array (4, 3); pass torch_outputs="),
])
def test_data_that_does_not_fit_is_one_parity_error_and_changes_nothing(kwargs, needle):
    torch.manual_seed(0)
    t = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3))
    f = nnx.Sequential(nnx.Linear(6, 8, rngs=nnx.Rngs(0)), nnx.relu,
                       nnx.Linear(8, 3, rngs=nnx.Rngs(0)))
    before_t, before_f = _frozen(t, f)
    inputs = kwargs.pop("inputs", np.ones((4, 6), np.float32))
    with pytest.raises(P.ParityError) as e:
        P.check(t, f, inputs, **kwargs)
    assert needle in str(e.value) and "\n" not in str(e.value)
    after_t, after_f = _frozen(t, f)
    assert all(torch.equal(before_t[k], after_t[k]) for k in before_t)
    jax.tree.map(np.testing.assert_array_equal, before_f, after_f)


def test_float64_is_held_to_float64_tolerances():
    with jax.enable_x64(True):
        torch.manual_seed(0)
        t = nn.Sequential(nn.Linear(12, 16), nn.ReLU(), nn.Linear(16, 3)).double()
        f = nnx.Sequential(nnx.Linear(12, 16, param_dtype=jnp.float64, rngs=nnx.Rngs(0)),
                           nnx.relu, nnx.Linear(16, 3, param_dtype=jnp.float64, rngs=nnx.Rngs(0)))
        x = np.random.default_rng(1).standard_normal((8, 12))
        report = P.check(t, f, x, steps=5, momentum=0.9, init_seeds=0)
        report.assert_ok()
        assert report.dtype == "float64" and all(c.tol <= 1e-8 for c in report.checks)
        worst = max(c.figure for c in report.checks)
        assert worst < 1e-12  # the same algorithm: rounding only


# --- mutations that must make check fail ---------------------------------------------------------

def _transformer():
    torch.manual_seed(0)
    layer = nn.TransformerEncoderLayer(32, 4, dim_feedforward=64, dropout=0.0, batch_first=True)
    model = TransformerEncoderLayer(32, 4, dim_feedforward=64, rngs=nnx.Rngs(0))
    x = np.random.default_rng(1).standard_normal((2, 6, 32)).astype(np.float32)
    return layer, model, x


@pytest.mark.slow
def test_mutation_one_weight_perturbed_after_transfer():
    layer, model, x = _transformer()
    base = next(k for k in P.kinds() if k.name == "Linear")

    def perturbed(t, f):
        out = base.to_flax(t, f)
        if out["kernel"].shape == (32, 64):  # linear1 only
            out["kernel"] = out["kernel"].copy()
            out["kernel"][0, 0] += 1e-3
        return out
    with mutant("Linear", to_flax=perturbed):
        report = P.check(layer, model, x, init_seeds=0)
    assert not report.ok
    # the first place the port parts: linear1 itself (its input agrees)
    with pytest.raises(AssertionError, match="first divergence inside torch linear1 / nnx "
                                             r"linear1 \(Linear\)"):
        report.assert_ok()


@pytest.mark.slow
def test_mutation_in_projection_split_in_the_wrong_order():
    layer, model, x = _transformer()
    base = next(k for k in P.kinds() if k.name == "MultiheadAttention")

    def swapped(t, f):
        out = base.to_flax(t, f)
        out["query/kernel"], out["key/kernel"] = out["key/kernel"], out["query/kernel"]
        return out
    assert P.check(layer, model, x, init_seeds=0).ok  # control
    with mutant("MultiheadAttention", to_flax=swapped):
        assert not P.check(layer, model, x, init_seeds=0).ok


def test_mutation_conv_kernel_without_its_transpose():
    torch.manual_seed(0)
    t = nn.Sequential(nn.Conv2d(3, 3, 3, padding=1), nn.ReLU(), nn.Conv2d(3, 3, 3, padding=1))
    f = nnx.Sequential(nnx.Conv(3, 3, (3, 3), padding=((1, 1), (1, 1)), rngs=nnx.Rngs(0)),
                       nnx.relu, nnx.Conv(3, 3, (3, 3), padding=((1, 1), (1, 1)),
                                          rngs=nnx.Rngs(0)))
    x = np.random.default_rng(0).standard_normal((2, 3, 8, 8)).astype(np.float32)
    assert P.check(t, f, x, flax_inputs=nhwc, flax_outputs=nchw, init_seeds=0).ok  # control

    def no_transpose(tm, fm):  # (out, in, kh, kw) reshaped, not transposed, to (kh, kw, in, out)
        w = tm.weight.detach().numpy().copy()
        return {"kernel": w.reshape(w.shape[2:] + w.shape[1::-1]),
                "bias": tm.bias.detach().numpy().copy()}
    with mutant("Conv", to_flax=no_transpose):
        assert not P.check(t, f, x, flax_inputs=nhwc, flax_outputs=nchw, init_seeds=0).ok


@pytest.mark.slow
def test_mutation_torch_batchnorm_momentum_left_at_flaxs_default():
    torch.manual_seed(0)
    t = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4, momentum=0.01), nn.ReLU(),
                      nn.Flatten(), nn.Linear(4 * 6 * 6, 2))
    f = nnx.Sequential(nnx.Conv(3, 4, (3, 3), padding="VALID", rngs=nnx.Rngs(0)),
                       nnx.BatchNorm(4, momentum=0.9, epsilon=1e-5, rngs=nnx.Rngs(0)), nnx.relu,
                       lambda y: y.transpose(0, 3, 1, 2).reshape(y.shape[0], -1),
                       nnx.Linear(4 * 6 * 6, 2, rngs=nnx.Rngs(0)))
    x = np.random.default_rng(0).standard_normal((8, 3, 8, 8)).astype(np.float32)
    report = P.check(t, f, x, flax_inputs=nhwc, steps=3, train=True, init_seeds=0)
    bad = {c.name for c in report.failures()}
    assert "1.running_mean" in bad  # torch momentum 0.01 (Flax 0.99) vs the port's 0.9
    t[1].momentum = 0.1  # the honest twin of Flax's 0.9
    assert P.check(t, f, x, flax_inputs=nhwc, steps=3, train=True, init_seeds=0).ok


# --- the command -------------------------------------------------------------------------------

def tiny_torch():
    return nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3))


def tiny_flax(rngs):
    return nnx.Sequential(nnx.Linear(6, 8, rngs=rngs), nnx.relu, nnx.Linear(8, 3, rngs=rngs))


def tiny_conv_torch():
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 2, 3, padding=1))


def tiny_conv_flax(rngs):
    pad = ((1, 1), (1, 1))
    return nnx.Sequential(nnx.Conv(3, 4, (3, 3), padding=pad, rngs=rngs), nnx.relu,
                          nnx.Conv(4, 2, (3, 3), padding=pad, rngs=rngs))


def tiny_flax_wrong(rngs):
    return nnx.Sequential(nnx.Linear(6, 8, rngs=rngs), nnx.tanh, nnx.Linear(8, 3, rngs=rngs))


