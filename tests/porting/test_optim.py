"""``winit_jax.parity.translate_optimizer`` and ``winit_jax.optim``'s pieces against torch
itself: 100 float64 steps of the same model
in both frameworks, every optimiser and option, schedulers, param groups, clipping; the
parameters must agree to 1e-10 relative (float64 rounding, ~1e-16 a step, stays far
below that over 100 steps; a wrong rule is off by > 1e-4 within a few steps: the controls
at the end show it)."""


import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from tests.conftest import require_torch
from winit_jax import optim
from winit_jax import parity as P
from winit_jax.parity import ParityError, from_torch, pair, translate_optimizer
from winit_jax.parity.pairing.transfer import torch_values

torch = require_torch()
T = torch.optim
S = torch.optim.lr_scheduler
TOL = 1e-10
STEPS = 100


class MLPPort(nnx.Module):
    def __init__(self):
        f64 = dict(param_dtype=jnp.float64, dtype=jnp.float64)
        self.layers = nnx.List([nnx.Linear(6, 8, rngs=nnx.Rngs(0), **f64),
                                nnx.Linear(8, 3, rngs=nnx.Rngs(1), **f64)])

    def __call__(self, x):
        return self.layers[1](jnp.tanh(self.layers[0](x)))


def mlp():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.Tanh(),
                              torch.nn.Linear(8, 3)).double()
    with jax.enable_x64(True):
        return net, MLPPort()


class CNNPort(nnx.Module):
    """A small CNN with BatchNorm, ported as a Flax user does (NHWC, explicit padding)."""

    def __init__(self, bias, dtype=jnp.float64):
        f64 = dict(param_dtype=dtype, dtype=dtype)
        r = nnx.Rngs(0)
        self.conv = nnx.Conv(3, 4, (3, 3), padding=((1, 1), (1, 1)), use_bias=bias, rngs=r,
                             **f64)
        self.bn = nnx.BatchNorm(4, momentum=0.9, epsilon=1e-5, rngs=r, **f64)  # torch 0.1
        self.fc = nnx.Linear(4 * 4 * 4, 3, rngs=r, **f64)
        for stat in (self.bn.mean, self.bn.var):   # nnx makes them float32 whatever the dtype
            stat.set_value(stat.get_value().astype(dtype))

    def __call__(self, x):                                   # x: NCHW, as torch's
        h = nnx.relu(self.bn(self.conv(jnp.transpose(x, (0, 2, 3, 1)))))
        h = jnp.transpose(h, (0, 3, 1, 2))                   # flatten in torch's order
        return self.fc(h.reshape(h.shape[0], -1))


def cnn(bias=False, dtype="float64"):
    """``bias``: a conv bias before the BatchNorm, whose gradient is zero in exact
    arithmetic (torchvision's CNNs leave it out)."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1, bias=bias),
                              torch.nn.BatchNorm2d(4),
                              torch.nn.ReLU(), torch.nn.Flatten(),
                              torch.nn.Linear(64, 3)).to(getattr(torch, dtype))
    mapping = {"0": "conv", "1": "bn", "4": "fc"}
    with jax.enable_x64(dtype == "float64"):
        return net, CNNPort(bias, jnp.dtype(dtype)), mapping


def _data(shape):
    rs = np.random.RandomState(0)
    return rs.randn(*shape), rs.randn(shape[0], 3)


def train_both(net, port, make_opt, *, make_sched=None, steps=STEPS, clip=None,
               clip_value=None, norm_type=2.0, tx=None, mapping=None, x_shape=(16, 6)):
    """Trains torch and the port side by side; returns the largest relative gap over
    every parameter after ``steps`` steps."""
    x, y = _data(x_shape)
    x_t, y_t = torch.from_numpy(x), torch.from_numpy(y)
    with jax.enable_x64(True):
        pairing = pair(net, port, mapping=mapping)
        from_torch(net, port, pairing=pairing)
        opt = make_opt(net)
        sched = make_sched(opt) if make_sched else None
        if tx is None:
            tx = translate_optimizer(opt, pairing, scheduler=sched,
                                     steps=steps if sched else None, clip_grad_norm=clip,
                                     clip_grad_value=clip_value, norm_type=norm_type)
        nnx_opt = nnx.Optimizer(port, tx, wrt=nnx.Param)
        x_f, y_f = jnp.asarray(x), jnp.asarray(y)

        @nnx.jit
        def step(model, o):
            g = nnx.grad(lambda m: ((m(x_f) - y_f) ** 2).mean())(model)
            o.update(model, g)

        net.train()
        port.train()
        for _ in range(steps):
            opt.zero_grad()
            ((net(x_t) - y_t) ** 2).mean().backward()
            if clip is not None:
                torch.nn.utils.clip_grad_norm_(net.parameters(), clip, norm_type=norm_type)
            if clip_value is not None:
                torch.nn.utils.clip_grad_value_(net.parameters(), clip_value)
            opt.step()
            if sched is not None:
                sched.step()
            step(port, nnx_opt)
        ours, theirs = torch_values(pairing, "flax"), torch_values(pairing, "torch")
    params = {n for n, _ in net.named_parameters()}
    return max(np.abs(ours[k] - theirs[k]).max() / np.abs(theirs[k]).max() for k in params)


def no_decay_groups(net, **kw):
    """The transformer recipe: no weight decay on biases and norm parameters."""
    decay = [p for n, p in net.named_parameters() if n.endswith("weight") and p.ndim > 1]
    rest = [p for n, p in net.named_parameters() if not (n.endswith("weight") and p.ndim > 1)]
    return [{"params": decay}, {"params": rest, "weight_decay": 0.0, **kw}]


OPTIMISERS = {
    "SGD": lambda n: T.SGD(n.parameters(), lr=0.05),
    "SGD momentum dampening decay": lambda n: T.SGD(n.parameters(), lr=0.05, momentum=0.9,
                                                    dampening=0.3, weight_decay=1e-2),
    "SGD nesterov maximize": lambda n: T.SGD(n.parameters(), lr=0.005, momentum=0.8,
                                             nesterov=True, maximize=True),
    "Adam": lambda n: T.Adam(n.parameters(), lr=1e-2, betas=(0.8, 0.99), eps=1e-6),
    "Adam L2 amsgrad": lambda n: T.Adam(n.parameters(), lr=1e-2, weight_decay=0.1,
                                        amsgrad=True),
    "AdamW": lambda n: T.AdamW(n.parameters(), lr=1e-2),
    "AdamW maximize groups": lambda n: T.AdamW(no_decay_groups(n, lr=3e-4), lr=1e-3,
                                               weight_decay=0.3, maximize=True),
    "Adam beta1 < 0.5": lambda n: T.Adam(n.parameters(), lr=1e-2, betas=(0.3, 0.9)),
    "RMSprop": lambda n: T.RMSprop(n.parameters(), lr=1e-3),
    "RMSprop centered momentum decay": lambda n: T.RMSprop(
        n.parameters(), lr=1e-3, alpha=0.9, centered=True, momentum=0.5, weight_decay=1e-2),
    "Adagrad": lambda n: T.Adagrad(n.parameters(), lr=0.05, lr_decay=0.01, weight_decay=1e-3,
                                   initial_accumulator_value=0.1, eps=1e-8),
}


@pytest.mark.parametrize("name", OPTIMISERS)
def test_every_optimiser_follows_torch_for_100_steps_on_an_mlp(name):
    assert train_both(*mlp(), OPTIMISERS[name]) < TOL


SCHEDULERS = {
    "LambdaLR (Python lambda)": lambda o: S.LambdaLR(o, lambda s: 1.0 / (1 + 0.05 * s)),
    "warm-up SequentialLR": lambda o: S.SequentialLR(
        o, [S.LinearLR(o, start_factor=0.1, total_iters=10),
            S.CosineAnnealingLR(o, T_max=90, eta_min=1e-4)], milestones=[10]),
    "OneCycleLR (cycles momentum)": lambda o: S.OneCycleLR(o, max_lr=0.1, total_steps=STEPS),
    "CosineAnnealingWarmRestarts": lambda o: S.CosineAnnealingWarmRestarts(o, T_0=7, T_mult=2),
    "StepLR": lambda o: S.StepLR(o, step_size=9, gamma=0.5),
}


@pytest.mark.parametrize("name", SCHEDULERS)
def test_schedulers_are_replayed_exactly(name):
    make = ((lambda n: T.SGD(n.parameters(), lr=0.05, momentum=0.9)) if "OneCycle" in name
            else (lambda n: T.AdamW(no_decay_groups(n), lr=1e-2)))
    assert train_both(*mlp(), make, make_sched=SCHEDULERS[name]) < TOL


@pytest.mark.parametrize("opt", ["SGD momentum dampening decay", "AdamW maximize groups",
                                 "RMSprop centered momentum decay"])
@jax.numpy_dtype_promotion("standard")  # nnx's batch statistics promote float64 with float32
def test_a_cnn_with_batchnorm_trains_alike(opt):
    net, port, mapping = cnn()
    gap = train_both(net, port, OPTIMISERS[opt], mapping=mapping, x_shape=(8, 3, 4, 4),
                     make_sched=SCHEDULERS["warm-up SequentialLR"])
    assert gap < TOL


@pytest.mark.parametrize("norm_type", [2.0, 1.0, float("inf")])
def test_clip_grad_norm_is_torchs_over_every_parameter(norm_type):
    # max_norm 0.05 is far below the gradients' norm, so every step is clipped
    make = OPTIMISERS["Adam"] if norm_type == 1.0 else OPTIMISERS["SGD"]
    assert train_both(*mlp(), make, clip=0.05, norm_type=norm_type) < TOL


def test_clip_grad_value():
    assert train_both(*mlp(), OPTIMISERS["SGD momentum dampening decay"], clip_value=0.01) < TOL


def test_eager_equals_jit():
    net, port = mlp()
    with jax.enable_x64(True):
        from_torch(net, port)
        tx = translate_optimizer(T.AdamW(no_decay_groups(net), lr=1e-2), pair(net, port),
                                 clip_grad_norm=0.1)
        params = nnx.state(port, nnx.Param)
        grads = jax.tree.map(lambda p: jnp.cos(p * 3.0), params)
        state = tx.init(params)
        eager = optax.apply_updates(params, tx.update(grads, state, params)[0])
        jitted = optax.apply_updates(params, jax.jit(tx.update)(grads, state, params)[0])
        # XLA may fuse a * b + c differently under jit: the new parameters an ulp or two
        # apart, no more
        for a, b in zip(jax.tree.leaves(eager), jax.tree.leaves(jitted)):
            np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=8 * 2.0 ** -52)


# --- controls: the comparison above detects a wrong translation ------------------------

@jax.numpy_dtype_promotion("standard")   # optax's own adamw mixes int32 and float
def test_controls_optax_defaults_and_slips_are_far_off():
    """What a porter writes by hand instead, each > 1e-4 from torch (so TOL above would
    catch a translation that made the same slip)."""
    adamw = lambda n: T.AdamW(n.parameters(), lr=1e-2)  # noqa: E731
    assert train_both(*mlp(), adamw, tx=optax.adamw(1e-2), steps=20) > 1e-4  # decay 1e-4
    adam_l2 = lambda n: T.Adam(n.parameters(), lr=1e-2, weight_decay=0.1)  # noqa: E731
    assert train_both(*mlp(), adam_l2, tx=optax.adamw(1e-2, weight_decay=0.1), steps=20) > 1e-4
    nesterov = lambda n: T.SGD(n.parameters(), lr=0.05, momentum=0.9, nesterov=True)  # noqa
    assert train_both(*mlp(), nesterov, tx=optax.sgd(0.05, momentum=0.9), steps=20) > 1e-4
    clipped = optax.chain(optax.clip_by_global_norm(0.05), optax.sgd(0.05))
    assert 0 < train_both(*mlp(), OPTIMISERS["SGD"], clip=0.05, tx=clipped, steps=20) > 1e-9


# --- check(make_optimizer=, make_scheduler=, tx=, clip_grad_norm=) -----------------------------

def _per_tensor_clip(max_norm):
    """A porter's clipping: each tensor to max_norm on its own (torch clips them together)."""
    def update(u, state, params=None):
        scale = lambda g: jnp.minimum(1.0, max_norm / (jnp.sqrt(jnp.sum(g * g)) + 1e-6))  # noqa
        return jax.tree.map(lambda g: g * scale(g), u), state
    return optax.GradientTransformation(lambda p: optax.EmptyState(), update)


_COS = optax.cosine_decay_schedule(0.05, 10)
_SGD = lambda m: T.SGD(m.parameters(), lr=0.05)  # noqa: E731
_ADAMW = lambda m: T.AdamW(m.parameters(), lr=1e-2)  # noqa: E731
_ADAM_L2 = lambda m: T.Adam(m.parameters(), lr=1e-2, weight_decay=0.1)  # noqa: E731
_NESTEROV = lambda m: T.SGD(m.parameters(), lr=0.05, momentum=0.9, nesterov=True)  # noqa: E731
_COSINE = lambda o: S.CosineAnnealingLR(o, T_max=10)  # noqa: E731
# (torch optimiser, scheduler, clip, the porter's optax, first step whose loss parts)
TX_CASES = {
    "optax.adamw's default decay (1e-4, torch 1e-2)": (_ADAMW, None, None, optax.adamw(1e-2), 1),
    "Adam's L2 applied decoupled": (_ADAM_L2, None, None,
                                    optax.adamw(1e-2, weight_decay=0.1), 1),
    "nesterov off": (_NESTEROV, None, None, optax.sgd(0.05, momentum=0.9), 1),
    "scheduler per epoch (5 steps)": (_SGD, _COSINE, None,
                                      optax.sgd(lambda c: _COS((c // 5) * 5)), 2),
    "clipping per tensor": (_SGD, None, 0.05, optax.chain(_per_tensor_clip(0.05),
                                                          optax.sgd(0.05)), 1),
    "optax.clip_by_global_norm (no + 1e-6)": (_SGD, None, 0.05, optax.chain(
        optax.clip_by_global_norm(0.05), optax.sgd(0.05)), 5),
    # controls: the same porter, right
    "Adam's L2 right": (_ADAM_L2, None, None, optax.chain(optax.add_decayed_weights(0.1),
                                                          optax.adam(1e-2)), None),
    "nesterov on": (_NESTEROV, None, None, optax.sgd(0.05, momentum=0.9, nesterov=True), None),
    "scheduler per step": (_SGD, _COSINE, None, optax.sgd(_COS), None),
}


@pytest.mark.parametrize("case", TX_CASES)
@jax.numpy_dtype_promotion("standard")   # optax's own transformations mix int32 and float
def test_check_with_the_porters_tx_fails_where_it_differs(case):
    opt, sched, clip, tx, parts = TX_CASES[case]
    net, port = mlp()
    x = np.random.RandomState(0).randn(16, 6)
    with jax.enable_x64(True):
        report = P.check(net, port, x, steps=10, make_optimizer=opt, make_scheduler=sched, tx=tx,
                         clip_grad_norm=clip, init_seeds=0, layers=False)
    assert report.ok == (parts is None)
    if parts is not None:
        assert f"training parts from torch's at step {parts}:" in report.notes[0]
        assert report.failures()[0].name == f"loss {parts}"


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@jax.numpy_dtype_promotion("standard")  # nnx's batch statistics promote float64 with float32
def test_check_trains_with_torchs_optimiser_translated(dtype):
    """AdamW with no decay on biases and norms, warm-up then cosine, global clipping, on a
    BatchNorm CNN in train mode: passes; the conv bias before the BatchNorm (gradient zero
    in exact arithmetic) is named and not tested, not failed."""
    net, port, mapping = cnn(bias=True, dtype=dtype)
    x = np.random.RandomState(0).randn(8, 3, 4, 4)
    with jax.enable_x64(dtype == "float64"):
        report = P.check(net, port, x, steps=10, train=True, mapping=mapping, init_seeds=0,
                         make_optimizer=lambda m: T.AdamW(no_decay_groups(m), lr=1e-2),
                         make_scheduler=SCHEDULERS["warm-up SequentialLR"], clip_grad_norm=0.5,
                         layers=False)
    report.assert_ok()
    untested = [c for c in report.checks if not c.tested and c.part == "step"]
    assert [c.name for c in untested] == ["0.bias"]
    assert "gradient is zero in exact arithmetic" in untested[0].how


# --- bad input ---------------------------------------------------------------------------

def test_unsupported_optimiser_is_refused():
    net, port = mlp()
    with pytest.raises(ParityError, match=r"optimizer: torch\.optim\.nadam\.NAdam is not"):
        translate_optimizer(T.NAdam(net.parameters()), pair(net, port))


def test_a_scheduler_on_a_metric_is_refused():
    net, port = mlp()
    opt = T.SGD(net.parameters(), lr=0.1)
    with pytest.raises(ParityError, match="scheduler: ReduceLROnPlateau steps on a metric"):
        translate_optimizer(opt, pair(net, port), scheduler=S.ReduceLROnPlateau(opt), steps=5)


def test_a_scheduler_without_steps_is_refused():
    net, port = mlp()
    opt = T.SGD(net.parameters(), lr=0.1)
    with pytest.raises(ParityError, match="steps: a scheduler"):
        translate_optimizer(opt, pair(net, port), scheduler=S.StepLR(opt, 3))


def test_a_parameter_with_no_nnx_twin_is_refused():
    net, port = mlp()
    stray = torch.nn.Parameter(torch.zeros(3, dtype=torch.float64))
    opt = T.SGD([{"params": net.parameters()}, {"params": [stray]}], lr=0.1)
    with pytest.raises(ParityError, match="param group 1 holds a tensor of shape"):
        translate_optimizer(opt, pair(net, port))


def test_an_optimiser_that_has_stepped_is_refused():
    net, port = mlp()
    opt = T.Adam(net.parameters())
    net(torch.ones(1, 6, dtype=torch.float64)).sum().backward()
    opt.step()
    with pytest.raises(ParityError, match="optimizer: this Adam has already stepped"):
        translate_optimizer(opt, pair(net, port))


def test_groups_that_disagree_on_a_flag_are_refused():
    net, port = mlp()
    opt = T.SGD([{"params": net[0].parameters(), "nesterov": True, "momentum": 0.9},
                 {"params": net[2].parameters()}], lr=0.1)
    with pytest.raises(ParityError, match="nesterov differs between param groups"):
        translate_optimizer(opt, pair(net, port))


def test_one_flax_tensor_from_two_groups_that_differ_is_refused():
    """A Flax LSTM cell holds one bias per gate where torch holds b_ih and b_hh."""
    cell = torch.nn.LSTMCell(3, 4)
    port = nnx.LSTMCell(3, 4, rngs=nnx.Rngs(0))
    opt = T.SGD([{"params": [cell.weight_ih, cell.weight_hh, cell.bias_ih]},
                 {"params": [cell.bias_hh], "lr": 0.5}], lr=0.1)
    with pytest.raises(ParityError, match=r"is made of torch bias_ih \(param group 0\) and "
                                          r"bias_hh \(param group 1\)"):
        translate_optimizer(opt, pair(cell, port))
    agree = T.SGD([{"params": [cell.weight_ih, cell.weight_hh, cell.bias_ih]},
                   {"params": [cell.bias_hh]}], lr=0.1)
    translate_optimizer(agree, pair(cell, port))  # same hyperparameters: fine


def test_steps_past_the_record_give_nan_not_a_guess():
    net, port = mlp()
    with jax.enable_x64(True):
        opt = T.SGD(net.parameters(), lr=0.1)
        tx = translate_optimizer(opt, pair(net, port), scheduler=S.StepLR(opt, 1), steps=2)
        params = nnx.state(port, nnx.Param)
        state = tx.init(params)
        for k in range(3):
            updates, state = tx.update(params, state, params)
            assert np.isnan(np.asarray(jax.tree.leaves(updates)[0])).all() == (k == 2)


def test_clipping_both_ways_is_refused():
    net, port = mlp()
    with pytest.raises(ParityError, match="clip_grad_norm and clip_grad_value"):
        translate_optimizer(T.SGD(net.parameters(), lr=0.1), pair(net, port),
                            clip_grad_norm=1.0, clip_grad_value=1.0)


def test_check_needs_the_torch_optimizer():
    net, port = mlp()
    with jax.enable_x64(True), pytest.raises(ParityError, match="make_optimizer: make_scheduler "
                                                               "and tx are checked against"):
        P.check(net, port, np.zeros((2, 6)), steps=2, tx=optax.sgd(0.1))


@pytest.mark.parametrize("factory,needle", [
    # a factory of parameters: called with the module, torch says "'Sequential' object is
    # not iterable"; the error says what the factory must be
    (lambda params: T.SGD(params, lr=0.1), "make_optimizer: it is called with the torch "
                                           "module and must return a torch.optim.Optimizer"),
    ("object", "make_optimizer: must be a function that builds it (got a SGD"),
    (lambda m: [T.SGD(m.parameters(), lr=0.1)], "make_optimizer: the factory returned list"),
])
def test_check_says_what_an_optimizer_factory_must_be(factory, needle):
    net, port = mlp()
    if factory == "object":
        factory = T.SGD(net.parameters(), lr=0.1)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    with jax.enable_x64(True), pytest.raises(ParityError) as e:
        P.check(net, port, np.zeros((2, 6)), steps=2, make_optimizer=factory, init_seeds=0)
    assert needle in str(e.value) and "\n" not in str(e.value)
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())


def test_a_pairing_is_computed_once_and_refused_for_other_models():
    """One ``pair`` serves from_torch, to_torch, translate_optimizer and check; a pairing of
    other models, or a pairing with a mapping, is refused by name."""
    net, port = mlp()
    pairing = pair(net, port)
    assert isinstance(pairing, P.Pairing) and len(pairing) == 2
    with jax.enable_x64(True):
        from_torch(net, port, pairing=pairing)
        P.to_torch(port, net, pairing=pairing)
        translate_optimizer(T.SGD(net.parameters(), lr=0.1), pairing)
        assert P.check(net, port, np.ones((2, 6)), steps=1, pairing=pairing, init_seeds=0).ok
        other, _ = mlp()
        with pytest.raises(ParityError, match="from_torch: the pairing was computed for "
                                              "another torch module"):
            from_torch(other, port, pairing=pairing)
        with pytest.raises(ParityError, match="to_torch: pass mapping to parity.pair, or a "
                                              "pairing; not both"):
            P.to_torch(port, net, pairing=pairing, mapping={})
        with pytest.raises(ParityError, match="pairing: must come from winit_jax.parity.pair"):
            translate_optimizer(T.SGD(net.parameters(), lr=0.1), list(pairing))


def test_from_torch_given_a_state_dict_says_to_load_it_first():
    net, port = mlp()
    with pytest.raises(ParityError, match="from_torch: torch_module must be a torch.nn.Module, "
                                          "got OrderedDict .a state dict: load it"):
        from_torch(net.state_dict(), port)


# --- torch's rules as optax pieces ----------------------------------------------------------

PIECES = {
    "SGD": (lambda ps: T.SGD(ps, lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.01),
            lambda: optim.sgd(0.1, momentum=0.9, nesterov=True, weight_decay=0.01),
            "momentum_buffer"),
    "Adam": (lambda ps: T.Adam(ps, lr=1e-2, weight_decay=0.01, amsgrad=True),
             lambda: optim.adam(1e-2, weight_decay=0.01, amsgrad=True), "max_exp_avg_sq"),
    "AdamW": (lambda ps: T.AdamW(ps, lr=1e-2, weight_decay=0.1),
              lambda: optim.adamw(1e-2, weight_decay=0.1), "exp_avg"),
    "RMSprop": (lambda ps: T.RMSprop(ps, lr=1e-2, momentum=0.5, centered=True, weight_decay=0.01),
                lambda: optim.rmsprop(1e-2, momentum=0.5, centered=True, weight_decay=0.01),
                "grad_avg"),
    "Adagrad": (lambda ps: T.Adagrad(ps, lr=0.1, lr_decay=0.01, initial_accumulator_value=0.1,
                                     weight_decay=0.01),
                lambda: optim.adagrad(0.1, lr_decay=0.01, initial_accumulator_value=0.1,
                                      weight_decay=0.01), "sum"),
}


def _run_both(make_torch, tx, steps=20):
    """The same float64 tensors and gradients through torch's optimiser and through ``tx``
    (jitted); returns (torch's tensors, the optax params, torch's optimiser, optax state)."""
    rng = np.random.default_rng(0)
    start = {"w": rng.standard_normal((4, 3)), "b": rng.standard_normal(3)}
    grads = [{k: rng.standard_normal(v.shape) for k, v in start.items()} for _ in range(steps)]
    tensors = {k: torch.tensor(v, requires_grad=True) for k, v in start.items()}
    opt = make_torch(list(tensors.values()))
    with jax.enable_x64(True):
        params = {k: jnp.asarray(v) for k, v in start.items()}
        state = tx.init(params)
        update = jax.jit(tx.update)
        for g in grads:
            for k, t in tensors.items():
                t.grad = torch.tensor(g[k])
            opt.step()
            updates, state = update({k: jnp.asarray(v) for k, v in g.items()}, state, params)
            params = optax.apply_updates(params, updates)
        return tensors, jax.tree_util.tree_map(np.asarray, params), opt, state


@pytest.mark.parametrize("name", list(PIECES))
def test_each_torch_rule_is_an_optax_transformation_equal_to_torch(name):
    """``winit_jax.optim``'s rule alone (no port, no pairing), jitted, against torch's own
    optimiser on the same float64 tensors and gradients for 20 steps: equal to 1e-12
    relative (the same operations in the same order round alike), and its NamedTuple state
    is where ``optax.tree_utils.tree_get`` finds torch's state."""
    make_torch, make_tx, slot = PIECES[name]
    with jax.enable_x64(True):
        tensors, params, opt, state = _run_both(make_torch, make_tx())
    for k, t in tensors.items():
        theirs = t.detach().numpy()
        assert np.abs(params[k] - theirs).max() <= 1e-12 * np.abs(theirs).max(), k
    ours = optax.tree_utils.tree_get(state, slot)
    for k, t in tensors.items():
        theirs = opt.state[t][slot].numpy()
        assert np.abs(np.asarray(ours[k]) - theirs).max() <= 1e-12 * np.abs(theirs).max()
    assert int(optax.tree_utils.tree_get(state, "count")) == 20


def _follow(make_torch, tx, *, steps, size, seed):
    """One float64 tensor through torch's optimiser and scheduler (``make_torch(params) ->
    (optimiser, scheduler)``) and through ``tx`` (jitted) on the same gradients; returns
    (torch's tensor, the optax one, the optax state)."""
    rng = np.random.default_rng(seed)
    start = rng.standard_normal(size)
    t = torch.tensor(start, requires_grad=True)
    opt, sched = make_torch([t])
    with jax.enable_x64(True):
        p = {"w": jnp.asarray(start)}
        state = tx.init(p)
        update = jax.jit(tx.update)
        for _ in range(steps):
            g = rng.standard_normal(size)
            t.grad = torch.tensor(g)
            opt.step()
            sched.step()
            u, state = update({"w": jnp.asarray(g)}, state, p)
            p = optax.apply_updates(p, u)
        return t.detach().numpy(), np.asarray(p["w"]), state


def test_torch_rules_take_schedules_and_inject_hyperparams():
    """A learning rate given as an optax schedule equals torch's LambdaLR with the same
    rates; ``optax.inject_hyperparams`` over ``optim.sgd`` gives the same trajectory and
    exposes the rate in its state."""
    def rate(count):  # float64 under x64 (an optax schedule of an int32 count may be float32)
        return 0.1 * 0.5 ** jnp.asarray(count, jnp.float64)
    replayed = []
    for tx in (optim.sgd(rate, momentum=0.9),
               optax.inject_hyperparams(optim.sgd, static_args=("nesterov", "maximize"))(
                   learning_rate=rate, momentum=0.9)):
        def torch_sgd(ps):
            opt = T.SGD(ps, lr=0.1, momentum=0.9)
            return opt, S.LambdaLR(opt, lambda step: 0.5 ** step)
        theirs, ours, state = _follow(torch_sgd, tx, steps=6, size=5, seed=1)
        replayed.append(ours)
        assert np.abs(ours - theirs).max() <= 1e-12 * np.abs(theirs).max()
    assert np.array_equal(replayed[0], replayed[1])
    # the rate of the last update (count 5), as inject_hyperparams records it
    assert float(state.hyperparams["learning_rate"]) == pytest.approx(0.1 * 0.5 ** 5)


def test_replay_keeps_float64_and_gives_nan_past_the_record():
    with jax.enable_x64(True):
        schedule = optim.replay([0.1, 0.01])
        assert schedule(jnp.int32(1)).dtype == jnp.float64
        assert float(schedule(jnp.int32(1))) == 0.01 and np.isnan(float(schedule(2)))


def test_whole_tensor_groups_go_through_optax_partition():
    """A port whose tensors each come from one param group: the translation is
    ``optax.partition`` over the groups (its state a PartitionState with one inner state
    per group, each a NamedTuple)."""
    net, port = mlp()
    with jax.enable_x64(True):
        tx = translate_optimizer(T.AdamW(no_decay_groups(net), lr=1e-2), pair(net, port))
        state = tx.init(nnx.state(port, nnx.Param))
    assert type(state).__name__ == "PartitionState"
    assert set(state.inner_states) == {"group 0", "group 1", "not optimised"}
    inner = state.inner_states["group 1"].inner_state
    assert type(inner).__name__ == "AdamState"


def test_a_torch_scheduler_as_an_optax_schedule():
    """``translate_schedule`` records OneCycleLR (which also cycles momentum) and replays it:
    optim.sgd with both schedules follows torch for 30 float64 steps to 1e-12; a
    hyperparameter the optimiser lacks is refused by name."""
    def make(ps):
        opt = T.SGD(ps, lr=0.1, momentum=0.9)
        return opt, S.OneCycleLR(opt, max_lr=0.5, total_steps=30)
    _, sched = make([torch.zeros(1, requires_grad=True)])
    with jax.enable_x64(True):
        tx = optim.sgd(P.translate_schedule(sched, 30),
                       momentum=P.translate_schedule(sched, 30, hyperparameter="momentum"))
    theirs, ours, _ = _follow(make, tx, steps=30, size=4, seed=2)
    assert np.abs(ours - theirs).max() <= 1e-12 * np.abs(theirs).max()
    _, fresh = make([torch.zeros(1, requires_grad=True)])
    with pytest.raises(ParityError, match="hyperparameter: SGD has lr, momentum, dampening, "
                                          "weight_decay, not 'beta1'"):
        P.translate_schedule(fresh, 3, hyperparameter="beta1")


def test_a_float32_learning_rate_in_a_float64_check_is_named():
    """optax's schedules evaluated on its int32 step count give float32 rates under x64
    (relative error up to 6e-8, over the float64 step floor 1e-8): the steps fail and the
    report says why. winit_jax.optim evaluates the same schedule on a float64 count: it
    passes."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(),
                              torch.nn.Linear(8, 2)).double()
    with torch.no_grad():  # tensors that start at 0: their gap is relative to what moved them
        net[0].bias.zero_()
        net[2].bias.zero_()

    class Port(nnx.Module):
        def __init__(self, rngs):
            self.layers = nnx.List([nnx.Linear(4, 8, param_dtype=np.float64, rngs=rngs), None,
                                    nnx.Linear(8, 2, param_dtype=np.float64, rngs=rngs)])

        def __call__(self, x):
            return self.layers[2](jnp.tanh(self.layers[0](x)))

    x = np.random.default_rng(0).standard_normal((16, 4))
    with jax.enable_x64(True):
        def run(schedule_owner):
            return P.check(
                net, Port(nnx.Rngs(0)), x, dtype="float64", steps=4, init_seeds=0,
                make_optimizer=lambda m: torch.optim.SGD(m.parameters(), lr=0.3),
                make_scheduler=lambda opt: torch.optim.lr_scheduler.LambdaLR(
                    opt, lambda s: (0.3 - 0.2 * min(s, 7) / 7) / 0.3),
                tx=schedule_owner.sgd(optax.linear_schedule(0.3, 0.1, 7)))
        slipped = run(optax)
        assert not slipped.ok
        assert any("the optimiser's update computes in float32" in n for n in slipped.notes)
        assert all("computes in float32" in c.how for c in slipped.failures())
        run(optim).assert_ok()


def test_cross_entropy_ignores_torchs_ignore_index_in_both_frameworks():
    """A masked LM's labels: -100 where nothing is predicted. torch's F.cross_entropy skips
    them (its default ignore_index); the JAX side must too, under jit: both equal the mean
    over the kept positions computed by hand. Mutant: the JAX loss without the mask."""
    import jax.numpy as jnp
    import optax

    rng = np.random.default_rng(0)
    logits = rng.standard_normal((2, 5, 7)).astype(np.float32)
    labels = rng.integers(0, 7, (2, 5))
    labels[0, 1:3] = labels[1, 4] = -100
    keep = labels != -100
    z = logits - logits.max(-1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(-1, keepdims=True))
    picked = np.take_along_axis(logp, np.where(keep, labels, 0)[..., None], -1)[..., 0]
    by_hand = -np.mean(picked[keep])
    theirs = float(P.cross_entropy(torch.as_tensor(logits), torch.as_tensor(labels)))
    ours = float(jax.jit(P.cross_entropy)(jnp.asarray(logits), jnp.asarray(labels)))
    assert abs(theirs - by_hand) < 1e-5 and abs(ours - by_hand) < 1e-5
    unmasked = float(optax.softmax_cross_entropy_with_integer_labels(
        jnp.asarray(logits), jnp.asarray(np.where(keep, labels, 0))).mean())
    assert abs(unmasked - by_hand) > 1e-2  # the mask matters here
