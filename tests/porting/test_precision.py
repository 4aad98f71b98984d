"""Slips that only float32 precision shows, and the probes that tell a rounding flip from a
slip: Flax's one-pass batch variance (``nnx.BatchNorm``'s default ``use_fast_variance``)
against torch's two-pass one, on a torch.nn tabular model that normalises raw features with
``BatchNorm1d`` (a year, an area, a price: channel means far above their spread); a
kink-free port's slip is failed without nearby-input reruns, a kinked one's only after them.
"""

import jax
import numpy as np
import pytest
from flax import nnx

from tests.conftest import require_torch
from winit_jax import parity as P
from winit_jax.parity import single_steps, stage_forward

torch = require_torch()

# raw tabular features: year of sale, floor area (m2), rooms, lot size (m2), price. The year's
# mean/spread ratio is ~670: a one-pass variance E[x^2] - E[x]^2 in float32 loses about
# 670^2 * 6e-8 ~ 3 % of it, a two-pass one about 2012 * 6e-8 / 3 ~ 4e-5 (on both sides)
MEANS = np.array([2012.0, 120.0, 4.0, 600.0, 3.2e5])
SPREADS = np.array([3.0, 40.0, 1.5, 200.0, 8e4])


def _tabular():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.BatchNorm1d(5), torch.nn.Linear(5, 32),
                               torch.nn.ReLU(), torch.nn.Linear(32, 1))


class _TabularPort(nnx.Module):
    """The port as a Flax user writes it: torch's momentum and epsilon carried over, and
    ``use_fast_variance`` left at Flax's default (the mutant) or set to False (faithful)."""

    def __init__(self, rngs, fast_variance=False):
        self.norm = nnx.BatchNorm(5, momentum=0.9, epsilon=1e-5,
                                  use_fast_variance=fast_variance, rngs=rngs)
        self.hidden = nnx.Linear(5, 32, rngs=rngs)
        self.head = nnx.Linear(32, 1, rngs=rngs)

    def __call__(self, x):
        return self.head(nnx.relu(self.hidden(self.norm(x))))


def _data(seed):
    rng = np.random.default_rng(seed)
    x = (MEANS + SPREADS * rng.standard_normal((64, 5))).astype(np.float32)
    return x, rng.standard_normal((64, 1)).astype(np.float32)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_flax_one_pass_variance_fails_at_the_step_and_layer_where_it_acts(seed):
    """The faithful port passes every part in float32 train mode on each seed. The port with
    Flax's default one-pass variance computes the same function in exact arithmetic (its
    float64 steps agree) and in eval mode (running statistics: its forward passes), but each
    train-mode step from torch's own state is off (single steps, step 0 on), and the
    train-mode layer pass puts the first divergence inside the BatchNorm ("0")."""
    x, y = _data(seed)
    kw = dict(targets=y, steps=3, train=True, init_seeds=0)
    faithful = P.check(_tabular(), _TabularPort(nnx.Rngs(0)), x, **kw)
    assert faithful.ok, faithful.table()
    slipped = P.check(_tabular(), _TabularPort(nnx.Rngs(0), fast_variance=True), x, **kw)
    assert not slipped.ok
    by_part = {}
    for c in slipped.checks:
        by_part.setdefault(c.part, []).append(c)
    assert all(c.outcome is P.Outcome.PASSED for c in by_part["forward"])  # eval mode
    assert all(c.outcome is not P.Outcome.FAILED for c in by_part["step (float64)"])
    failed = {c.name for c in by_part["single step"] if c.outcome is P.Outcome.FAILED}
    assert {"step 0 output", "step 1 output", "step 2 output"} <= failed, slipped.table()
    # its outputs off, a step's failing gradients are never taken for flips
    assert not [c for c in by_part["single step"] if c.outcome is P.Outcome.INCONCLUSIVE]
    where = slipped.first_divergence
    assert (where.torch_name, where.where, where.mode) == ("0", "inside", "train"), str(where)
    assert "use_fast_variance" in str(where)


class _Mlp(torch.nn.Module):
    def __init__(self, act, classes=1):
        super().__init__()
        torch.manual_seed(0)
        self.hidden, self.out = torch.nn.Linear(4, 16), torch.nn.Linear(16, classes)
        self.act = act

    def forward(self, x):
        return self.out(self.act(self.hidden(x)))


class _MlpPort(nnx.Module):
    """The port with its gradients ``slip`` (3e-4: 3 gradient tolerances) too large and its
    values right (a backward slip, as a custom_vjp's); ``slip=0``: faithful."""

    def __init__(self, act, rngs, slip=3e-4, classes=1):
        self.hidden, self.out, self.act = nnx.Linear(4, 16, rngs=rngs), nnx.Linear(
            16, classes, rngs=rngs), act
        self.slip = slip

    def __call__(self, x):
        y = self.out(self.act(self.hidden(x)))
        if not self.slip:
            return y
        return y * (1 + self.slip) - jax.lax.stop_gradient(y * self.slip)


def test_kinks_are_found_where_a_derivative_goes_through_them():
    """Smooth functions whose jaxprs hold a max or an abs: softmax and cross-entropy subtract
    their max under stop_gradient, logsumexp takes the abs of a sum of exponentials, and
    optax's cross-entropy computes a sign it never uses, a causal mask selects by integer
    positions; none is a kink. ReLU, leaky ReLU
    (a select on a comparison of reals), a one-pass variance's clamp max(0, E[x^2] - E[x]^2)
    and a max-pool are; a clamp of a sum of squares is not."""
    import jax.numpy as jnp
    import optax

    from winit_jax.parity.jaxprs import (
        differentiable_primitives,
        live_equations,
        primitives,
    )
    from winit_jax.parity.kinks import JUMP_PRIMITIVES, KINK_PRIMITIVES

    x = jnp.linspace(-1.0, 1.0, 12).reshape(3, 4)
    labels = jnp.array([0, 3, 1])

    def kinked(f):
        return bool(differentiable_primitives(jax.make_jaxpr(f)(x)) & KINK_PRIMITIVES)

    smooth = [lambda x: jax.nn.softmax(x).sum(), lambda x: jax.nn.log_softmax(x).sum(),
              lambda x: jax.nn.logsumexp(x),
              lambda x: optax.softmax_cross_entropy_with_integer_labels(x, labels).mean(),
              lambda x: jnp.maximum(0.0, jnp.mean((x - x.mean()) ** 2)), jnp.tanh,
              # a causal mask: a selection no real number sets
              lambda x: jax.nn.softmax(jnp.where(jnp.tril(jnp.ones((3, 4), bool)), x, -1e9)).sum()]
    kinks = [lambda x: jax.nn.relu(x).sum(), lambda x: jnp.where(x > 0, x, 0.1 * x).sum(),
             lambda x: jnp.maximum(0.0, jnp.mean(x ** 2) - jnp.mean(x) ** 2),
             lambda x: jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, (1, 2), (1, 2),
                                             "VALID").sum()]
    assert [kinked(f) for f in smooth] == [False] * len(smooth)
    assert [kinked(f) for f in kinks] == [True] * len(kinks)
    ce = jax.make_jaxpr(lambda x: optax.softmax_cross_entropy_with_integer_labels(
        x, labels).mean())(x)
    assert "sign" in primitives(ce)  # computed, never used
    assert not {e.primitive.name for e in live_equations(ce, derivative=False)} & JUMP_PRIMITIVES


@pytest.mark.parametrize("kinked,classifier", [(False, False), (False, True), (True, False)])
def test_a_kink_free_slip_is_failed_without_reruns(kinked, classifier, monkeypatch):
    """tanh has no kink, nor has a softmax cross-entropy (its max sits under stop_gradient):
    the backward slip fails in the gradient and single-step parts and nothing is
    inconclusive, with no nearby-input probe run (a rerun could only make a failure look
    like a flip). Control: the same slip with ReLU (a kink: gradients may flip, the outputs
    agreeing) is probed, in its gradient rows only, and still fails, since the slip stays on
    every nearby input."""
    probed = []
    real_forward, real_steps = stage_forward._nearby_gaps, single_steps._nearby

    def spy_forward(*a, **k):
        probed.append("forward")
        return real_forward(*a, **k)

    def spy_steps(*a, **k):
        probed.append(tuple(sorted(a[-1])))  # the rows it was asked about
        return real_steps(*a, **k)

    monkeypatch.setattr(stage_forward, "_nearby_gaps", spy_forward)
    monkeypatch.setattr(single_steps, "_nearby", spy_steps)
    torch_act, port_act = ((torch.nn.ReLU(), nnx.relu) if kinked
                           else (torch.nn.Tanh(), jax.numpy.tanh))
    rng = np.random.default_rng(0)
    x = rng.standard_normal((32, 4)).astype(np.float32)
    classes, kw = (3, dict(targets=rng.integers(0, 3, 32), loss=P.cross_entropy)
                   ) if classifier else (1, {})
    report = P.check(_Mlp(torch_act, classes), _MlpPort(port_act, nnx.Rngs(0), classes=classes),
                     x, steps=2, train=True, init_seeds=0, **kw)
    failed = {(c.part, c.name) for c in report.failures()}
    assert ("gradient", "out.weight") in failed, report.table()
    assert ("single step", "step 0 out.weight gradient") in failed, report.table()
    assert not any(part == "forward" for part, _ in failed)
    assert not report.inconclusive()
    if not kinked:
        assert probed == []
    else:
        asked = [name for names in probed if names != "forward" for name in names]
        assert "forward" in probed and asked, probed
        assert all(name.endswith("gradient") for name in asked), asked


def test_bfloat16_optimiser_moments_fail_the_float64_steps():
    """optax's Adam with ``mu_dtype=bfloat16`` against torch's Adam (float32 moments): a
    slip of precision in the optimiser's state, which the single steps (outputs, gradients,
    statistics) cannot see. The float64 steps do: bfloat16 keeps 8 bits, far beyond the
    float64 tolerance (1e-8); the same ``tx`` with float32 moments passes."""
    import optax

    x = np.random.default_rng(0).standard_normal((32, 4)).astype(np.float32)
    for mu_dtype, ok in ((None, True), (jax.numpy.bfloat16, False)):
        with jax.numpy_dtype_promotion("standard"):  # optax's bias correction mixes dtypes
            report = P.check(_Mlp(torch.nn.Tanh()), _MlpPort(jax.numpy.tanh, nnx.Rngs(0), 0.0),
                             x, steps=3, train=True, init_seeds=0,
                             make_optimizer=lambda m: torch.optim.Adam(m.parameters(), lr=1e-2),
                             tx=optax.adam(1e-2, mu_dtype=mu_dtype))
        assert report.ok is ok, report.table()
        if not ok:
            assert {c.part for c in report.failures()} == {"step (float64)"}
