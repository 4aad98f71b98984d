"""Per-layer statistics: exact against NumPy and torch, then the closed forms on real digits.

Tolerances of the statistical tests come from the issue (10% one step, 15% end to
end, 5%/10% notebook B) and are checked to be at least 5 standard errors wide
for the seed counts used, so a pass is not luck and a wrong Var[w] (a factor 2)
fails by many standard errors.
"""

import json
import math
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from tests.conftest import require_torch
from winit_jax.lab import stats as S
from winit_jax.lab import depth as V
from winit_jax.models import MLP, NOTEBOOK_A_SIZES, NOTEBOOK_B_SIZES
from winit_jax.schemes import SCHEMES, get_scheme

WIDTH, DEPTH, SWEEP_SEEDS, ROWS = 256, 50, 32, 500
F32_MAX, F32_TINY = np.finfo(np.float32).max, np.finfo(np.float32).tiny


def _numpy_stats(kernels, x):
    """The forward pass and the moments in float64 NumPy, written from the definitions."""
    rows = []
    for i, w in enumerate(kernels):
        y = x @ w
        rows.append((x.mean(), np.log(x.var()), np.log((x * x).mean()), y.mean(),
                     np.log(y.var()), np.log((y * y).mean())))
        x = np.maximum(y, 0)
    return np.array(rows).T


def test_layer_stats_equal_numpy_definitions():
    rng = np.random.default_rng(0)
    x = rng.normal(0.3, 1.0, (64, 20)).astype(np.float32)
    model = MLP((20, 16, 8, 3), kernel_init=get_scheme("he_normal").jax_init(), rngs=nnx.Rngs(1))
    st = S.layer_stats(model, jnp.asarray(x))
    kernels = [np.asarray(layer.kernel[...], np.float64) for layer in model.layers]
    expected = _numpy_stats(kernels, x.astype(np.float64))
    got = np.array([np.asarray(a, np.float64) for a in st[:6]])
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
    assert np.all(np.asarray(st.status) == S.OK)


@pytest.mark.parametrize("magnitude", [1e37, 1e-30, 3.0])
def test_moments_hold_near_the_float32_limits(magnitude):
    """Squares of 1e37 overflow float32 and a reciprocal of it is subnormal: neither may leak."""
    x = (np.random.default_rng(4).normal(0.5, 1.0, (200, 8)) * magnitude).astype(np.float32)
    model = MLP((8, 4), kernel_init=lambda k, s, d=jnp.float32: jnp.full(s, 0.1, d),
                rngs=nnx.Rngs(0))
    st = S.layer_stats(model, jnp.asarray(x))
    x64 = x.astype(np.float64)
    np.testing.assert_allclose([float(st.in_mean[0]) / magnitude, float(st.in_log_var[0]),
                                float(st.in_log_sq[0])],
                               [x64.mean() / magnitude, np.log(x64.var()), np.log((x64 ** 2).mean())],
                               rtol=1e-5)


def test_status_flags_overflow_and_underflow():
    x = jnp.ones((4, 8))
    for scale, status in ((1e30, S.OVERFLOW), (1e-30, S.UNDERFLOW), (1.0, S.OK)):
        model = MLP((8, 8, 8), kernel_init=lambda k, s, d=jnp.float32: jnp.full(s, scale, d),
                    rngs=nnx.Rngs(0))
        st = S.layer_stats(model, x)
        # layer 1: y = 8 scale; layer 2: y = 64 scale^2 (1e61 overflows, 1e-59 underflows)
        assert int(st.status[0]) == S.OK and int(st.status[1]) == status, scale


@pytest.mark.parametrize("scheme", ["he_uniform", "torch_default"])
def test_scan_sweep_equals_the_mlp_with_the_same_kernels(scheme):
    x = jnp.asarray(np.random.default_rng(1).random((50, 30), np.float32))
    key = jax.random.key(3)
    scan = V.deep_net_stats(key, x, scheme=scheme, width=16, depth=5)
    s = get_scheme(scheme)
    init = s.jax_init()
    first, rest = jax.random.split(key)
    model = MLP(V.depth_sizes(30, 16, 5), kernel_init=init, rngs=nnx.Rngs(0))
    for layer, k in zip(model.layers, [first, *jax.random.split(rest, 4)]):
        k_kernel, k_bias = jax.random.split(k)
        layer.kernel.set_value(init(k_kernel, layer.kernel.shape))
        if s.jax_bias_init is not None:
            layer.bias.set_value(s.jax_bias_init(layer.kernel.shape[0])(k_bias, layer.bias.shape))
    for a, b in zip(scan, S.layer_stats(model, x)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_shared_sweep_program_draws_each_scheme_as_alone():
    """The depth sweep's one program per group (a lax.switch over the schemes) gives a scheme
    exactly its own program's statistics: a switch on the wrong branch, or draws that moved,
    would differ (the two schemes differ from each other, checked too). The first and last
    scheme of each group (bench/depth_compile.py checks every scheme at the sweep's size)."""
    x = jnp.asarray(np.random.default_rng(1).random((50, 30), np.float32))
    keys = jnp.stack([jax.random.key(s) for s in range(2)])
    sizes = V.depth_sizes(30, 16, 5)
    groups = list(dict.fromkeys(V.program_group(s) for s in V.SCHEMES))
    assert sorted(n for g in groups for n in g) == sorted(V.SCHEMES)
    for group in groups:
        assert len(group) >= 2
        chunk = 1 if V.one_at_a_time(group[0]) else 8
        ends = []
        for i in (0, len(group) - 1):
            shared = V.jax_stats(jnp.int32(i), keys, x, schemes=group, sizes=sizes, chunk=chunk)
            alone = V.jax_stats(jnp.int32(0), keys, x, schemes=(group[i],), sizes=sizes,
                                 chunk=chunk)
            for a, b in zip(shared, alone):
                np.testing.assert_array_equal(np.asarray(a), np.asarray(b), err_msg=group[i])
            ends.append(np.asarray(alone.pre_log_sq))
        assert not np.array_equal(*ends)


def test_torch_hooks_equal_jax_on_the_same_weights():
    torch = require_torch()
    from reference_torch.lab.stats import layer_stats as torch_stats
    from reference_torch.init import SCHEME_INITS
    from reference_torch.models import make_model
    from reference_torch.models import mlp_from_torch as from_torch

    x = np.random.default_rng(2).random((100, 784), np.float32)
    for scheme in SCHEMES:
        torch.manual_seed(0)
        net = make_model(NOTEBOOK_A_SIZES)
        net.apply(SCHEME_INITS[scheme][0]())
        ref = torch_stats(net, x)
        ours = S.layer_stats(from_torch(net), jnp.asarray(x))
        for name, a, b in zip(S.LayerStats._fields, ours, ref):
            np.testing.assert_allclose(np.asarray(a, np.float64), b, rtol=1e-5, atol=1e-6,
                                       err_msg=f"{scheme} {name}")


# --- closed forms on real digits (slow: about a minute) ---------------------------------

@pytest.fixture(scope="module")
def digits(sample_dataset):
    """Notebook A's inputs: 500 real training digits, drawn with a fixed seed."""
    x = sample_dataset.x_train
    return x[np.random.default_rng(0).permutation(len(x))[:ROWS]]


@pytest.fixture(scope="module")
def sweeps(digits):
    """Depth-50 sweep summaries per (scheme, framework), computed once per module."""
    cache = {}

    def get(scheme, framework):
        if framework == "torch":
            require_torch()
        if (scheme, framework) not in cache:
            sizes = V.depth_sizes(784, WIDTH, DEPTH)
            st = V.stats_over_seeds(framework, scheme, digits, sizes, range(SWEEP_SEEDS))
            cache[scheme, framework] = V.summarise_depth(st, scheme, sizes)
        return cache[scheme, framework]
    return get


def _layers(values):
    return np.array([np.nan if v is None else v for v in values], np.float64)


@pytest.mark.slow
@pytest.mark.parametrize("framework", ["jax", "torch"])
@pytest.mark.parametrize("scheme", list(SCHEMES))
def test_one_step_closed_form_at_every_finite_layer(scheme, framework, sweeps):
    s = sweeps(scheme, framework)
    ratio, se = _layers(s.ratio_mean), _layers(s.ratio_se)
    finite = ~np.isnan(ratio)
    assert finite[:30].all()  # float32 holds at least 30 layers of every scheme
    assert np.all(np.abs(ratio[finite] - 1) < 0.10), np.round(ratio, 3)
    assert np.nanmax(se) < 0.10 / 4  # the tolerance is >= 4 standard errors at every layer


def _first_layer(condition):
    return int(np.argmax(condition)) + 1 if np.any(condition) else None


@pytest.mark.slow
@pytest.mark.parametrize("framework", ["jax", "torch"])
def test_float32_faults_where_theory_puts_them(framework, sweeps):
    """randn multiplies E[y^2] by 256/2 per layer, U(+-0.01) by 256 * 0.01^2/3 / 2 = 0.0043."""
    s = sweeps("standard_normal", framework)
    theory = np.array(s.theory_log10_var)
    rms = theory / 2  # log10 of the typical |y|
    first = _first_layer(s.overflow)
    # the largest of 256 x 500 entries lies within 3 decades above the RMS
    assert _first_layer(rms > math.log10(F32_MAX) - 3) <= first <= _first_layer(
        rms > math.log10(F32_MAX))
    assert not any(s.underflow)

    s = sweeps("uniform", framework)
    per_product = np.array(s.theory_log10_var) / 2 - math.log10(WIDTH) / 2
    expected = _first_layer(per_product < math.log10(F32_TINY))
    assert abs(_first_layer(s.underflow) - expected) <= 1  # the ratio per layer is 240x
    assert not any(s.overflow)
    for scheme in ("he_normal", "he_uniform", "lecun_normal"):
        assert not any(sweeps(scheme, framework).overflow + sweeps(scheme, framework).underflow)


@pytest.mark.slow
@pytest.mark.parametrize("framework", ["jax", "torch"])
def test_spread_over_seeds_grows_like_depth_over_width(framework, sweeps):
    """For one input, Var[log |y^l|^2] ~ 5 l / width for ReLU nets (the fourth moment of a
    rectified Gaussian: E[z^4 1(z>0)] / E[z^2 1(z>0)]^2 - 1 = 5). Over a batch of correlated
    digits the spread is a little smaller; 32 seeds estimate a std to about 13%."""
    s = sweeps("he_normal", framework)
    std = _layers(s.log_var_std)
    for layer in (10, 25, 50):
        expected = math.sqrt(5 * layer / WIDTH)
        assert 0.5 * expected < std[layer - 1] < 1.5 * expected, (layer, std[layer - 1])
    assert std[49] > 1.5 * std[9]


@pytest.mark.slow
@pytest.mark.parametrize("scheme", list(SCHEMES))
def test_jax_and_torch_sweeps_agree(scheme, sweeps):
    j, t = sweeps(scheme, "jax"), sweeps(scheme, "torch")
    assert j.overflow == t.overflow and j.underflow == t.underflow
    rj, rt = _layers(j.ratio_mean), _layers(t.ratio_mean)
    ok = ~np.isnan(rj)
    assert np.all(np.abs(rj[ok] / rt[ok] - 1) < 0.10)
    # medians of log Var over 32 seeds each: SE of a median is about 1.25 std / sqrt(n)
    med_j, med_t = _layers(j.log10_var_median), _layers(t.log10_var_median)
    std = np.maximum(_layers(j.log_var_std), _layers(t.log_var_std)) / math.log(10)
    se = 1.25 * std * math.sqrt(2 / SWEEP_SEEDS)
    assert np.all(np.abs(med_j - med_t)[ok] <= 5 * se[ok] + 1e-3)


@pytest.mark.slow
@pytest.mark.parametrize("framework", ["jax", "torch"])
@pytest.mark.parametrize("scheme", ["he_normal", "he_uniform"])
def test_product_formula_for_notebook_a(scheme, framework, digits):
    if framework == "torch":
        require_torch()
    st = V.stats_over_seeds(framework, scheme, digits, NOTEBOOK_A_SIZES, range(256))
    p = V.product_formula(st, scheme, NOTEBOOK_A_SIZES)
    # He: every factor n_l Var[w^l] / 2 is 1, so E[(y^5)^2] should equal E[(y^1)^2]
    assert p.predicted == pytest.approx(p.first_layer, rel=1e-12)
    assert abs(p.ratio - 1) < 0.15
    assert 0.15 * p.predicted > 4 * p.output_sq_se
    # Negative control: the same measurements against the formula with a wrong Var[w],
    # 1/n instead of 2/n (a factor 2 in each of the 4 later layers), must fail the check.
    wrong = V.product_formula(st, "lecun_normal", NOTEBOOK_A_SIZES)
    assert abs(wrong.ratio - 1) > 0.15 and wrong.ratio == pytest.approx(16 * p.ratio)


@pytest.mark.slow
@pytest.mark.parametrize("framework", ["jax", "torch"])
@pytest.mark.parametrize("scheme", ["standard_normal", "lecun_normal"])
def test_notebook_b_one_layer(scheme, framework, sample_dataset):
    if framework == "torch":
        require_torch()
    st = V.stats_over_seeds(framework, scheme, sample_dataset.x_b, NOTEBOOK_B_SIZES, range(64))
    b = V.notebook_b(st, scheme)
    assert abs(b.input_mean_sq - 1) < 0.05  # standardised with a similar set's mean and std
    exact_sd = math.sqrt(784 * get_scheme(scheme).var_w(784, 50) * b.input_mean_sq)
    assert b.std.exact == pytest.approx(exact_sd)
    assert abs(b.std.bias) < 0.05
    assert b.relu_mean.exact == pytest.approx(exact_sd / math.sqrt(2 * math.pi))
    assert abs(b.relu_mean.bias) < 0.10 and abs(b.relu_std.bias) < 0.10
    for key in ("std", "relu_mean", "relu_std"):  # 64 seeds: each bound is >= 4 SE wide
        se = getattr(b, key).spread / math.sqrt(b.seeds)
        assert (0.05 if key == "std" else 0.10) * getattr(b, key).exact > 4 * se


@pytest.mark.slow
def test_orthogonal_notebook_a_nets_do_not_hang(tmp_path):
    # jaxlib 0.10.2's CPU runtime deadlocked (no error, every thread asleep) on 8 orthogonal
    # notebook A nets vmapped inside lax.map; stats_over_seeds steps one model at a time for it.
    # A subprocess, so that a hang fails with a timeout instead of stalling the suite.
    import subprocess
    import sys
    code = ("import json, numpy as np; from winit_jax.lab import depth as V; "
            "from winit_jax.models import NOTEBOOK_A_SIZES as A; "
            "x = np.random.default_rng(0).random((100, 784), dtype=np.float32) / 2; "
            "st = V.stats_over_seeds('jax', 'orthogonal', x, A, range(64)); "
            "import dataclasses; "
            "print(json.dumps(dataclasses.asdict(V.product_formula(st, 'orthogonal', A))))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=300, cwd=Path(__file__).resolve().parents[1])
    assert proc.returncode == 0, proc.stderr[-2000:]
    p = json.loads(proc.stdout.splitlines()[-1])
    # Orthogonal rows with gain sqrt(2) where fan_in >= fan_out: Var[w] = 2 / fan_in, as He.
    assert abs(p["output_sq"] - p["predicted"]) <= 5 * p["output_sq_se"]


def test_layer_stats_of_any_nnx_model_follow_its_call_order():
    """A CNN whose head is defined before its convolution: the statistics come in call order,
    from the model's own forward pass, equal to the moments computed by hand."""
    class CNN(nnx.Module):
        def __init__(self, rngs):
            self.head = nnx.Linear(4 * 6 * 6, 10, rngs=rngs)
            self.conv = nnx.Conv(1, 4, (3, 3), padding="VALID", rngs=rngs)

        def __call__(self, x):
            h = jax.nn.relu(self.conv(x))
            return self.head(h.reshape(h.shape[0], -1))

    model = CNN(nnx.Rngs(0))
    x = jax.random.uniform(jax.random.key(1), (16, 8, 8, 1))
    st = S.layer_stats(model, x)
    conv_out = model.conv(x)
    h = jax.nn.relu(conv_out).reshape(16, -1)
    head_out = model.head(h)
    expected_log_sq = [math.log(float(jnp.mean(conv_out ** 2))), math.log(float(jnp.mean(head_out ** 2)))]
    np.testing.assert_allclose(np.asarray(st.pre_log_sq), expected_log_sq, rtol=1e-5)
    np.testing.assert_allclose(float(st.in_mean[1]), float(jnp.mean(h)), rtol=1e-5)
