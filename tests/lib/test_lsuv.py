"""LSUV: the algorithm's contract and its failures (its torch twin: tests/twin/test_lsuv_twin.py)."""

import gzip

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import winit_jax as wj
from winit_jax.lsuv import LSUVError, lsuv, lsuv_layer
from winit_jax.models import NOTEBOOK_A_SIZES
from winit_jax.schemes import get_scheme


@pytest.fixture(scope="module")
def batch(shared_data):
    """100 real test digits, pixels / 256: one of notebook A's batches, read straight from the
    IDX file (16-byte header, then uint8 pixels) so that the library's tests need no lab."""
    with gzip.open(shared_data / "MNIST" / "raw" / "t10k-images-idx3-ubyte.gz") as f:
        raw = f.read(16 + 100 * 784)
    return np.frombuffer(raw[16:], np.uint8).reshape(100, 784).astype(np.float32) / 256


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
