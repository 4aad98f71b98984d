"""LSUV: the algorithm's contract, its failures, and parity with the torch twin."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import winit_jax as wj
from tests.conftest import require_torch
from winit_jax.lab import data as D
from winit_jax.lsuv import LSUVError, lsuv, lsuv_layer
from winit_jax.models import NOTEBOOK_A_SIZES
from winit_jax.parity import to_torch
from winit_jax.registry import get_scheme


@pytest.fixture(scope="module")
def batch(test_digits):
    """100 real digits, pixels / 256: one of notebook A's batches."""
    return D.notebook_a_inputs(test_digits[0][:100])


def fresh(scheme="lsuv", seed=0):
    return wj.MLP(NOTEBOOK_A_SIZES, **get_scheme(scheme).mlp_kwargs(), rngs=nnx.Rngs(seed))


def outputs(model, x):
    """Every layer's pre-activation on x, recomputed from the final weights."""
    ys, h = [], jnp.asarray(x)
    for i, layer in enumerate(model.layers):
        ys.append(layer(h))
        h = jax.nn.relu(ys[-1]) if i < len(model.layers) - 1 else ys[-1]
    return ys


@pytest.mark.parametrize("tol", [0.1, 1e-4])
def test_every_layer_ends_within_tol_of_unit_variance(batch, tol):
    model = fresh()
    before = [float(jnp.var(y)) for y in outputs(model, batch)]
    results = lsuv(model, batch, tol=tol)
    after = [float(jnp.var(y)) for y in outputs(model, batch)]
    assert all(abs(v - 1) <= tol for v in after), after
    np.testing.assert_allclose(after, [float(r.variance) for r in results], rtol=1e-5)
    # The first layer of an orthogonal net sees pixels / 256 (E[x^2] ~ 0.1): it had to move.
    assert abs(before[0] - 1) > 0.5 and int(results[0].iterations) >= 1


def test_center_bias_zeroes_each_units_mean(batch):
    model = fresh("torch_default")  # non-zero biases to start from
    lsuv(model, batch, tol=1e-3, center_bias=True)
    for y in outputs(model, batch):
        assert float(jnp.abs(jnp.mean(y, axis=0)).max()) < 1e-4 * float(jnp.std(y))


def test_non_convergence_is_a_clear_error_and_leaves_the_model_alone(batch):
    model = fresh("torch_default")  # with uncentred biases one rescaling is not exact
    before = [np.asarray(l.kernel[...]) for l in model.layers]
    with pytest.raises(LSUVError, match=r"layer \d+ has output variance .* after 1 of 1"):
        lsuv(model, batch, tol=1e-9, max_iter=1)
    for k, layer in zip(before, model.layers):
        np.testing.assert_array_equal(k, layer.kernel[...])


def test_constant_output_cannot_be_rescaled(batch):
    with pytest.raises(LSUVError, match="layer 1 .* constant"):
        lsuv(fresh(), np.zeros_like(batch))


@pytest.mark.parametrize("kwargs,match", [
    ({"tol": 0.0}, "tol"), ({"tol": float("nan")}, "tol"), ({"max_iter": 0}, "max_iter"),
    ({"max_iter": 2.5}, "max_iter"), ({"x": np.zeros((100, 783), np.float32)}, "784"),
    ({"x": np.zeros((1, 784), np.float32)}, "N >= 2"),
])
def test_bad_arguments(batch, kwargs, match):
    x = kwargs.pop("x", batch)
    with pytest.raises(ValueError, match=match):
        lsuv(fresh(), x, **kwargs)


def test_lsuv_layer_vmaps_over_models(batch):
    keys = jax.random.split(jax.random.key(0), 4)
    ws = jax.vmap(lambda k: wj.orthogonal()(k, (784, 64)))(keys)
    w, b, res = jax.jit(jax.vmap(lambda w: lsuv_layer(batch, w, jnp.zeros(64), tol=1e-3)))(ws)
    assert w.shape == (4, 784, 64)
    np.testing.assert_allclose(np.asarray(jax.vmap(lambda w: jnp.var(batch @ w))(w)), 1, atol=1e-3)


# --- the torch twin ------------------------------------------------------------------

@pytest.mark.parametrize("scheme,center_bias,tol", [
    ("lsuv", False, 0.1), ("lsuv", True, 1e-3),
    ("torch_default", False, 1e-5),  # uncentred biases: several rescalings per layer
    ("torch_default", True, 1e-5),
])
def test_torch_twin_gives_the_same_weights(batch, scheme, center_bias, tol):
    require_torch()
    from reference_torch.lsuv import lsuv as torch_lsuv

    model = fresh(scheme, seed=3)
    net = to_torch(model)  # the same starting weights, (in, out) -> (out, in)
    ours = lsuv(model, batch, tol=tol, center_bias=center_bias)
    theirs = torch_lsuv(net, batch, tol=tol, center_bias=center_bias)
    assert [int(r.iterations) for r in ours] == [it for it, _ in theirs]
    if scheme == "torch_default" and not center_bias:
        assert max(it for it, _ in theirs) >= 2  # the loop, not just one exact step
    linears = [m for m in net if hasattr(m, "weight")]
    for layer, m in zip(model.layers, linears):
        k, w = np.asarray(layer.kernel[...]), m.weight.detach().numpy().T
        assert np.abs(k - w).max() <= 1e-5 * np.abs(w).max()
        b, tb = np.asarray(layer.bias[...]), m.bias.detach().numpy()
        assert np.abs(b - tb).max() <= 1e-5 * max(np.abs(tb).max(), 1e-3)


def test_torch_twin_fails_the_same_way(batch):
    require_torch()
    from reference_torch.lsuv import lsuv as torch_lsuv

    net = to_torch(fresh("torch_default"))
    before = {k: v.clone() for k, v in net.state_dict().items()}
    with pytest.raises(LSUVError, match="layer 1 .* constant"):
        torch_lsuv(to_torch(fresh()), np.zeros_like(batch))
    with pytest.raises(LSUVError, match=r"after 1 of 1"):
        torch_lsuv(net, batch, tol=1e-9, max_iter=1)
    for k, v in net.state_dict().items():  # left as it was
        assert (v == before[k]).all()


def _head_first_net():
    """A torch net whose head is defined before its body (called body, then head)."""
    import torch
    import torch.nn as nn

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.head = nn.Linear(64, 10)
            self.body = nn.Linear(784, 64)

        def forward(self, x):
            return self.head(torch.relu(self.body(x)))

    torch.manual_seed(0)
    return Net()


@pytest.mark.parametrize("reverse", [False, True])
def test_torch_twin_follows_the_call_order(batch, reverse):
    """Every layer, measured afterwards in a fresh forward pass, is within tol of Var 1 --
    which fails if the head is rescaled first, on the body's input before the body's
    rescaling (the definition order). ``reverse`` is that negative control: the hooks
    replayed in definition order must leave the head off."""
    require_torch()
    import torch

    from reference_torch.lsuv import lsuv as torch_lsuv

    net = _head_first_net()
    x = torch.as_tensor(batch)
    with torch.no_grad():
        net.body.weight *= 3.0  # the body's output far from Var 1: its rescaling matters
    if reverse:  # definition order: head on the unrescaled body, then the body
        with torch.no_grad():
            h = torch.relu(net.body(x))
        torch_lsuv(net.head, h.numpy(), tol=1e-3)
        torch_lsuv(net.body, batch, tol=1e-3)
    else:
        torch_lsuv(net, batch, tol=1e-3)
    with torch.no_grad():
        body = net.body(x)
        head = net.head(torch.relu(body))
    assert abs(float(body.var(unbiased=False)) - 1) <= 1e-3
    ok = abs(float(head.var(unbiased=False)) - 1) <= 1e-3
    assert ok != reverse


# --- any nnx model: Conv and Linear layers, in call order ------------------------------------

class SmallCNN(nnx.Module):
    """Defined head first: LSUV must follow the call order, not the attribute order."""

    def __init__(self, rngs):
        self.head = nnx.Linear(4 * 6 * 6, 10, kernel_init=wj.orthogonal(), rngs=rngs)
        self.conv = nnx.Conv(1, 4, (3, 3), padding="VALID", kernel_init=wj.orthogonal(),
                             rngs=rngs)

    def __call__(self, x):
        h = jax.nn.relu(self.conv(x))
        return self.head(h.reshape(h.shape[0], -1))


def test_lsuv_on_a_cnn_rescales_conv_and_linear_in_call_order():
    x = jax.random.uniform(jax.random.key(2), (64, 8, 8, 1))
    model = SmallCNN(nnx.Rngs(0))
    results = lsuv(model, x, tol=1e-3)
    assert len(results) == 2
    conv_out = model.conv(x)
    head_out = model(x)
    # each layer's output variance on the batch is 1 after its own rescaling (tol 1e-3)
    assert abs(float(jnp.var(conv_out)) - 1) <= 1e-3
    assert abs(float(jnp.var(head_out)) - 1) <= 1e-3
    # negative control: rescaling the head before the conv (attribute order) would have
    # measured the head on the un-rescaled conv's output, and left its variance off 1
    fresh = SmallCNN(nnx.Rngs(0))
    h = jax.nn.relu(fresh.conv(x)).reshape(64, -1)
    w, b, _ = lsuv_layer(h, fresh.head.kernel[...], fresh.head.bias[...], tol=1e-3)
    fresh.head.kernel.set_value(w)
    lsuv_layer_conv = lsuv(nnx.Sequential(fresh.conv), x, tol=1e-3)
    assert len(lsuv_layer_conv) == 1
    assert abs(float(jnp.var(fresh(x))) - 1) > 1e-2


def test_lsuv_refuses_a_model_without_linear_layers():
    with pytest.raises(ValueError, match="no Linear or Conv layer"):
        lsuv(nnx.Sequential(nnx.LayerNorm(4, rngs=nnx.Rngs(0))), jnp.ones((4, 4)))
