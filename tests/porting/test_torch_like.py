"""winit_jax.torch_like against torch itself: every supported layer's parameters drawn by
``torch_like.init`` and by a freshly constructed torch module, compared in distribution.

Each parameter is pooled over enough seeds to hold >= 2,000 values in each framework
(at most 100,000, subsampled), and compared by a two-sample KS test; a test passes when
every p-value is >= 1e-3 / (the number of parameters it compares) (Bonferroni). The seeds
are fixed, so the tests are deterministic; 1e-3 is the false-alarm rate per test a new
seed would have. Constants (norm weights, biases torch zeroes, running statistics) are
compared exactly. Negative controls (Flax's own defaults, a wrong fan) must fail the same
comparison.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from scipy import stats

import winit_jax.torch_like as tl
from tests.conftest import require_torch

torch = require_torch()
nn = torch.nn

ALPHA = 1e-3
MIN_VALUES, MAX_VALUES = 2_000, 100_000


def _pool(arrays):
    v = np.concatenate([np.asarray(a, np.float64).ravel() for a in arrays])
    if v.size > MAX_VALUES:  # an unbiased subsample, fixed
        v = np.random.default_rng(0).choice(v, MAX_VALUES, replace=False)
    return v


def _seeds(size):
    return max(1, math.ceil(MIN_VALUES / size))


def flax_draws(build, get, size, *, init=tl.init, **kw):
    """``get(model)`` -> {name: array}, pooled over seeds of ``init``."""
    model = build(nnx.Rngs(0))
    out = {}
    for seed in range(_seeds(size)):
        init(model, jax.random.key(1000 + seed), **kw)
        for k, v in get(model).items():
            out.setdefault(k, []).append(v)
    return {k: _pool(v) for k, v in out.items()}


def torch_draws(build, get, size):
    out = {}
    for seed in range(_seeds(size)):
        torch.manual_seed(seed)
        with torch.no_grad():
            for k, v in get(build()).items():
                out.setdefault(k, []).append(v.detach().numpy())
    return {k: _pool(v) for k, v in out.items()}


def pvalues(ours, theirs):
    assert set(ours) == set(theirs)
    return {k: stats.ks_2samp(ours[k], theirs[k]).pvalue for k in ours}


def assert_same_law(ours, theirs):
    p = pvalues(ours, theirs)
    threshold = ALPHA / len(p)
    assert min(p.values()) >= threshold, {k: f"{v:.2g}" for k, v in p.items()}


def assert_different_law(ours, theirs, name):
    """The negative control: the comparison above must reject this parameter."""
    p = pvalues(ours, theirs)
    assert p[name] < ALPHA / len(p), p[name]


def v(x):
    return x[...]


def flax_default(build):
    """An ``init`` that gives the model Flax's own default draw (the negative control)."""
    return lambda m, k: nnx.update(m, nnx.state(build(nnx.Rngs(params=k))))


# --- Linear, Conv, ConvTranspose --------------------------------------------------------

@pytest.mark.parametrize("n_in,n_out", [(50, 30), (7, 300)])
def test_linear(n_in, n_out):
    def get_f(m):
        return {"w": v(m.kernel), "b": v(m.bias)}

    def get_t(m):
        return {"w": m.weight, "b": m.bias}
    size = n_out  # the bias is the smaller parameter
    ours = flax_draws(lambda r: nnx.Linear(n_in, n_out, rngs=r), get_f, size)
    theirs = torch_draws(lambda: nn.Linear(n_in, n_out), get_t, size)
    assert_same_law(ours, theirs)
    # Flax's own default (lecun_normal, truncated; zero bias) is not torch's
    default = flax_draws(lambda r: nnx.Linear(n_in, n_out, rngs=r), get_f, size,
                         init=flax_default(lambda r: nnx.Linear(n_in, n_out, rngs=r)))
    assert_different_law(default, theirs, "w")


CONVS = [  # (nnx kwargs, torch class, torch args)
    ((3, 8, (5,)), nn.Conv1d, (3, 8, 5), 1),
    ((4, 6, (3, 3)), nn.Conv2d, (4, 6, 3), 1),
    ((6, 12, (3, 5)), nn.Conv2d, (6, 12, (3, 5)), 3),   # groups: fan_in = 6/3 * 15
    ((2, 4, (2, 3, 3)), nn.Conv3d, (2, 4, (2, 3, 3)), 2),
]


@pytest.mark.parametrize("flax_args,cls,torch_args,groups", CONVS)
def test_conv(flax_args, cls, torch_args, groups):
    def get(m):
        return {"w": v(m.kernel), "b": v(m.bias)}
    ours = flax_draws(lambda r: nnx.Conv(*flax_args, feature_group_count=groups, rngs=r),
                      get, flax_args[1])
    theirs = torch_draws(lambda: cls(*torch_args, groups=groups),
                         lambda m: {"w": m.weight, "b": m.bias}, flax_args[1])
    assert_same_law(ours, theirs)


@pytest.mark.slow
@pytest.mark.parametrize("transpose_kernel", [False, True])
@pytest.mark.parametrize("flax_args,cls,torch_args", [
    ((3, 8, (5,)), nn.ConvTranspose1d, (3, 8, 5)),
    ((12, 4, (3, 3)), nn.ConvTranspose2d, (12, 4, 3)),   # fan = out x 9 = 36, not in x 9
])
def test_conv_transpose_uses_torchs_fan(flax_args, cls, torch_args, transpose_kernel):
    def get(m):
        return {"w": v(m.kernel), "b": v(m.bias)}

    def build(r):
        return nnx.ConvTranspose(*flax_args, transpose_kernel=transpose_kernel, rngs=r)
    ours = flax_draws(build, get, flax_args[1])
    theirs = torch_draws(lambda: cls(*torch_args), lambda m: {"w": m.weight, "b": m.bias},
                         flax_args[1])
    assert_same_law(ours, theirs)
    if flax_args[0] != flax_args[1]:
        # negative control: the fan_in a Linear would use (in x prod(k)) is not torch's
        k = math.prod(flax_args[2])
        wrong_fan = {"kernel": tl.uniform_sum(bound=1 / math.sqrt(flax_args[0] * k), terms=1)}
        wrong = flax_draws(build, get, flax_args[1], overrides={nnx.ConvTranspose: wrong_fan})
        assert_different_law(wrong, theirs, "w")


# --- Embedding and the norms ---------------------------------------------------------------

@pytest.mark.parametrize("num,features", [(100, 16), (10, 300)])
def test_embedding(num, features):
    def get(m):
        return {"w": v(m.embedding)}
    ours = flax_draws(lambda r: nnx.Embed(num, features, rngs=r), get, num * features)
    theirs = torch_draws(lambda: nn.Embedding(num, features), lambda m: {"w": m.weight},
                         num * features)
    assert_same_law(ours, theirs)
    default = flax_draws(lambda r: nnx.Embed(num, features, rngs=r), get, num * features,
                         init=flax_default(lambda r: nnx.Embed(num, features, rngs=r)))
    assert_different_law(default, theirs, "w")  # Flax: N(0, 1/features)


def test_embedding_padding_idx():
    m = tl.init(nnx.Embed(10, 4, rngs=nnx.Rngs(0)), jax.random.key(0), padding_idx={"": 3})
    t = nn.Embedding(10, 4, padding_idx=3)
    np.testing.assert_array_equal(np.asarray(m.embedding[...])[3], t.weight.detach().numpy()[3])
    assert not np.asarray(m.embedding[...])[3].any() and np.asarray(m.embedding[...])[4].any()
    with pytest.raises(ValueError, match="out of range"):
        tl.init(nnx.Embed(10, 4, rngs=nnx.Rngs(0)), jax.random.key(0), padding_idx={"": 10})


class Norms(nnx.Module):
    def __init__(self, rngs):
        self.ln, self.rms = nnx.LayerNorm(5, rngs=rngs), nnx.RMSNorm(5, rngs=rngs)
        self.gn, self.bn = nnx.GroupNorm(6, num_groups=3, rngs=rngs), nnx.BatchNorm(5, rngs=rngs)


def test_norms_are_torchs_constants():
    model = Norms(nnx.Rngs(0))
    for _, var in nnx.iter_graph(model):  # scramble everything first
        if isinstance(var, nnx.Variable):
            var.set_value(jnp.full(var.get_value().shape, 7.0, var.get_value().dtype))
    tl.init(model, jax.random.key(0))
    torch_mods = {"ln": nn.LayerNorm(5), "gn": nn.GroupNorm(3, 6), "rms": nn.RMSNorm(5),
                  "bn": nn.BatchNorm1d(5)}
    names = {"weight": "scale", "bias": "bias", "running_mean": "mean", "running_var": "var"}
    for key, t in torch_mods.items():
        for tname, tensor in list(t.named_parameters()) + list(t.named_buffers()):
            if tname == "num_batches_tracked":
                continue
            ours = np.asarray(getattr(getattr(model, key), names[tname])[...])
            np.testing.assert_array_equal(ours, tensor.detach().numpy(), err_msg=f"{key}.{tname}")


# --- attention and recurrent cells ----------------------------------------------------------

@pytest.mark.parametrize("embed,heads", [(16, 4), (32, 8)])
def test_multihead_attention(embed, heads):
    def get(m):
        return {"in_proj": np.concatenate([np.asarray(v(getattr(m, n).kernel)).ravel()
                                           for n in ("query", "key", "value")]),
                "out": v(m.out.kernel)}

    def build(r):
        return nnx.MultiHeadAttention(heads, embed, decode=False, rngs=r)
    ours = flax_draws(build, get, embed * embed)
    theirs = torch_draws(lambda: nn.MultiheadAttention(embed, heads, batch_first=True),
                         lambda m: {"in_proj": m.in_proj_weight, "out": m.out_proj.weight},
                         embed * embed)
    assert_same_law(ours, theirs)
    m = tl.init(build(nnx.Rngs(0)), jax.random.key(0))
    for n in ("query", "key", "value", "out"):  # torch zeroes in_proj_bias and out_proj.bias
        assert not np.asarray(getattr(m, n).bias[...]).any()
    # negative controls: Flax's default, and xavier on a (E, E) matrix instead of (3E, E)
    default = flax_draws(build, get, embed * embed, init=flax_default(build))
    assert_different_law(default, theirs, "in_proj")
    unpacked = {"query/kernel": tl.packed_xavier_uniform(n_packed=1, in_axis=0, out_axis=(1, 2)),
                "key/kernel": tl.packed_xavier_uniform(n_packed=1, in_axis=0, out_axis=(1, 2)),
                "value/kernel": tl.packed_xavier_uniform(n_packed=1, in_axis=0, out_axis=(1, 2))}
    wrong = flax_draws(build, get, embed * embed, overrides={nnx.MultiHeadAttention: unpacked})
    assert_different_law(wrong, theirs, "in_proj")


def _lstm_torch(m):
    return {"w_ih": m.weight_ih_l0, "w_hh": m.weight_hh_l0, "b": m.bias_ih_l0 + m.bias_hh_l0}


@pytest.mark.slow
@pytest.mark.parametrize("hidden", [8, 20])
@pytest.mark.parametrize("cell", ["OptimizedLSTMCell", "LSTMCell"])
def test_lstm(cell, hidden):
    def get(m):
        if cell == "OptimizedLSTMCell":
            return {"w_ih": v(m.dense_i.kernel), "w_hh": v(m.dense_h.kernel),
                    "b": v(m.dense_h.bias)}
        gates = ("i", "f", "g", "o")
        inputs = {"i": m.ii, "f": m.if_, "g": m.ig, "o": m.io}
        hidden_ = {"i": m.hi, "f": m.hf, "g": m.hg, "o": m.ho}
        return {"w_ih": np.concatenate([np.asarray(v(inputs[g].kernel)) for g in gates]),
                "w_hh": np.concatenate([np.asarray(v(hidden_[g].kernel)) for g in gates]),
                "b": np.concatenate([np.asarray(v(hidden_[g].bias)) for g in gates])}
    ours = flax_draws(lambda r: getattr(nnx, cell)(16, hidden, rngs=r), get, 4 * hidden)
    theirs = torch_draws(lambda: nn.LSTM(16, hidden, batch_first=True), _lstm_torch, 4 * hidden)
    assert_same_law(ours, theirs)
    # negative control: one U(+-1/sqrt(h)) bias instead of torch's sum of two
    single = flax_draws(lambda r: getattr(nnx, cell)(16, hidden, rngs=r), get, 4 * hidden,
                        overrides={nnx.Linear: {"bias": tl.uniform_sum(bound=1 / math.sqrt(hidden), terms=1)}}
                        if cell == "LSTMCell" else
                        {"dense_h": {"bias": tl.uniform_sum(bound=1 / math.sqrt(hidden), terms=1)}})
    assert_different_law(single, theirs, "b")


@pytest.mark.parametrize("hidden", [8, 20])
def test_gru(hidden):
    def get(m):
        b = np.asarray(v(m.dense_i.bias))
        return {"w_ih": v(m.dense_i.kernel), "w_hh": v(m.dense_h.kernel),
                "b_rz": b[:2 * hidden], "b_n": b[2 * hidden:]}

    def get_t(m):
        b = m.bias_ih_l0 + m.bias_hh_l0
        return {"w_ih": m.weight_ih_l0, "w_hh": m.weight_hh_l0, "b_rz": b[:2 * hidden],
                "b_n": m.bias_ih_l0[2 * hidden:]}  # b_hn has no place in nnx.GRUCell
    ours = flax_draws(lambda r: nnx.GRUCell(16, hidden, rngs=r), get, hidden)
    theirs = torch_draws(lambda: nn.GRU(16, hidden, batch_first=True), get_t, hidden)
    assert_same_law(ours, theirs)


# --- the walker ------------------------------------------------------------------------------

class Custom(nnx.Module):
    def __init__(self, rngs):
        self.w = nnx.Param(jnp.ones((3, 3)))


class Mixed(nnx.Module):
    def __init__(self, rngs, dtype=jnp.float32, custom=False):
        kw = dict(param_dtype=dtype, rngs=rngs)
        self.lin = nnx.Linear(8, 6, **kw)
        self.conv = nnx.Conv(2, 4, (3,), **kw)
        self.ct = nnx.ConvTranspose(4, 2, (3,), **kw)
        self.emb = nnx.Embed(5, 6, **kw)
        self.norms = nnx.List([nnx.LayerNorm(6, **kw), nnx.RMSNorm(6, **kw),
                               nnx.BatchNorm(6, **kw), nnx.GroupNorm(6, num_groups=2, **kw)])
        self.mha = nnx.MultiHeadAttention(2, 6, decode=False, **kw)
        self.lstm = nnx.OptimizedLSTMCell(6, 4, **kw)
        self.gru = nnx.GRUCell(6, 4, **kw)
        self.custom = Custom(rngs) if custom else None


def _values(model):
    return {"/".join(map(str, p)): np.asarray(x.get_value())
            for p, x in nnx.iter_graph(model) if isinstance(x, nnx.Variable)}


def test_walker_covers_a_model_with_every_supported_layer():
    model = Mixed(nnx.Rngs(0))
    draws, skipped = tl.plan(model)
    assert skipped == []
    drawn = {p for p, _, _ in draws}
    variables = {p for p in _values(model) if not p.endswith("count")}
    assert variables - drawn == set(), variables - drawn  # every parameter and statistic
    tl.init(model, jax.random.key(0))
    assert np.abs(_values(model)["lin/kernel"]).max() <= 1 / math.sqrt(8)


def test_strict_refuses_an_unknown_parametrised_module_and_changes_nothing():
    model = Mixed(nnx.Rngs(0), custom=True)
    before = _values(model)
    with pytest.raises(ValueError, match=r"no torch rule for custom/w \(Custom at custom\)"):
        tl.init(model, jax.random.key(0))
    after = _values(model)
    assert all(np.array_equal(before[k], after[k]) for k in before)
    tl.init(model, jax.random.key(0), strict=False)
    assert [(s.path, s.type) for s in tl.unsupported(model)] == [("custom", "Custom")]
    assert np.array_equal(_values(model)["custom/w"], np.ones((3, 3)))
    assert not np.array_equal(_values(model)["lin/kernel"], before["lin/kernel"])


def test_init_under_nnx_jit_equals_eager_and_on_an_abstract_model():
    eager = tl.init(Mixed(nnx.Rngs(0)), jax.random.key(3))
    jitted = Mixed(nnx.Rngs(1))
    nnx.jit(lambda m, k: tl.init(m, k))(jitted, jax.random.key(3))
    abstract = nnx.eval_shape(lambda: Mixed(nnx.Rngs(2)))  # shapes only, nothing drawn
    tl.init(abstract, jax.random.key(3))
    a, b, c = _values(eager), _values(jitted), _values(abstract)
    for k in a:  # the same key gives the same draw, whatever the model held before
        np.testing.assert_allclose(a[k], b[k], rtol=1e-6, atol=1e-7, err_msg=k)
        np.testing.assert_array_equal(a[k], c[k], err_msg=k)
    # an nnx.Rngs is read through its params stream
    from_rngs = tl.init(Mixed(nnx.Rngs(0)), nnx.Rngs(params=3))
    np.testing.assert_array_equal(_values(from_rngs)["lin/kernel"], _values(
        tl.init(Mixed(nnx.Rngs(0)), nnx.Rngs(params=3).params()))["lin/kernel"])


@pytest.mark.slow
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16, jnp.float64])
def test_dtypes_are_kept(dtype):
    with jax.enable_x64(dtype == jnp.float64):
        # abstract: Flax's own bfloat16 LSTM init (orthogonal) has no LAPACK kernel to run
        model = nnx.eval_shape(lambda: Mixed(nnx.Rngs(0), dtype=dtype))
        before = {"/".join(map(str, p)): (x.get_value().dtype, type(x))
                  for p, x in nnx.iter_graph(model) if isinstance(x, nnx.Variable)}
        tl.init(model, jax.random.key(0))
        for path, value in _values(model).items():
            assert value.dtype == before[path][0], path  # kept, whatever it was
            if before[path][1] is nnx.Param:
                assert value.dtype == jnp.dtype(dtype), path


def test_trunc_normal_has_absolute_bounds():
    w = np.asarray(tl.trunc_normal(std=1.0, a=-0.5, b=2.0)(jax.random.key(0), (200, 500)))
    assert w.min() >= -0.5 and w.max() <= 2.0 and w.min() < -0.49
    t = torch.empty(200, 500)
    torch.manual_seed(0)
    nn.init.trunc_normal_(t, std=1.0, a=-0.5, b=2.0)
    assert stats.ks_2samp(w.ravel(), t.numpy().ravel()).pvalue > ALPHA
    # std 0.02 with torch's default bounds +-2: 100 sigma, so no cut (jax's cuts at 2 sigma)
    small = np.asarray(tl.trunc_normal(std=0.02)(jax.random.key(1), (400, 500)))
    assert np.abs(small).max() > 2 * 0.02 * 1.5
    with pytest.raises(ValueError, match="bounds"):
        tl.trunc_normal(std=1.0, a=1.0, b=0.0)


# --- models nobody here wrote ------------------------------------------------------------------

# ResNet-18 against torchvision, per parameter (KS on the 22 random tensors, every BatchNorm
# tensor exactly): the init part of tests/porting/test_parity_harness.py::test_resnet18_from_torchvision.


# TransformerEncoderLayer against torch: the init part of
# tests/porting/test_parity_harness.py::test_transformer_encoder_layer_from_torch.


def test_vit_and_convnext_recipes():
    class Tiny(nnx.Module):
        def __init__(self, rngs):
            self.conv = nnx.Conv(3, 64, (4, 4), rngs=rngs)
            self.mlp = nnx.Linear(64, 256, rngs=rngs)
            self.norm = nnx.LayerNorm(256, rngs=rngs)
            self.head = nnx.Linear(256, 10, rngs=rngs)

    vit = tl.init(Tiny(nnx.Rngs(0)), jax.random.key(0),
                  overrides=tl.timm_vit_recipe(cls_token=None, pos_embed=None))
    w = np.asarray(vit.mlp.kernel[...], np.float64)
    # trunc_normal_(std=0.02) with torch's absolute bounds +-2: nothing is cut, std 0.02
    t = torch.empty(64, 256)
    torch.manual_seed(0)
    nn.init.trunc_normal_(t, std=0.02)
    assert stats.ks_2samp(w.ravel(), t.numpy().ravel()).pvalue > ALPHA
    assert not np.asarray(vit.mlp.bias[...]).any()
    head = np.asarray(vit.head.kernel[...])  # timm's default draws the head like every Linear
    assert abs(head.std() - 0.02) < 5 * 0.02 / np.sqrt(2 * head.size)
    assert np.asarray(vit.norm.scale[...]).min() == 1  # LayerNorm keeps torch's 1 / 0
    convnext = tl.init(Tiny(nnx.Rngs(0)), jax.random.key(0), overrides=tl.convnext_recipe())
    k = np.asarray(convnext.conv.kernel[...], np.float64)
    assert stats.ks_2samp(k.ravel(), t.numpy().ravel()).pvalue > ALPHA
    assert np.asarray(convnext.head.kernel[...]).std() > 0.015  # head: trunc_normal too
    assert not np.asarray(convnext.conv.bias[...]).any()
