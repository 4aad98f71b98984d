"""winit_jax.lab.train: the jitted epoch, the partial batch, shuffling, the workdir record."""

import dataclasses
import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from winit_jax.lab import data as D
from winit_jax.models import MLP
from winit_jax.lab.train import TrainConfig, init_model, loss_fn, make_optimizer, train_and_evaluate, train_epoch


@pytest.fixture(scope="module")
def small(test_digits):
    images, labels = test_digits
    x = D.notebook_a_inputs(images)
    return x[:250], labels[:250], x[250:750], labels[250:750]


def test_partial_batch_is_a_step_of_its_own(small):
    x, y = jnp.asarray(small[0]), jnp.asarray(small[1])
    config = TrainConfig(scheme="he_normal", learning_rate=1e-30, batch_size=100)  # weights ~fixed
    graphdef, state = nnx.split(init_model(config))
    tx = make_optimizer(config)
    key = jax.random.key(7)
    _, _, losses, _ = train_epoch(graphdef, state, tx.init(state), key, x, y, tx=tx, batch_size=100)
    assert losses.shape == (3,)  # 100 + 100 + 50: the last 50 rows are not dropped
    perm = np.asarray(jax.random.permutation(key, 250))
    model = nnx.merge(graphdef, state)
    for i, rows in enumerate((perm[:100], perm[100:200], perm[200:])):
        assert float(losses[i]) == pytest.approx(float(loss_fn(model, x[rows], y[rows])), rel=1e-5)


def test_shuffle_follows_the_key(small):
    config = TrainConfig(scheme="he_normal", epochs=2)
    a = train_and_evaluate(config, small)
    b = train_and_evaluate(config, small)
    c = train_and_evaluate(dataclasses.replace(config, seed=1), small)
    assert a.losses == b.losses  # same key: the same run
    assert a.losses != c.losses


def test_notebook_story_and_workdir_record(test_digits, tmp_path):
    x = D.notebook_a_inputs(test_digits[0])
    small = (x[:1000], test_digits[1][:1000], x[1000:2000], test_digits[1][1000:2000])
    he = train_and_evaluate(TrainConfig(scheme="he_uniform", epochs=10), small, workdir=tmp_path)
    uni = train_and_evaluate(TrainConfig(scheme="uniform", epochs=10), small)
    assert len(he.losses) == 100 and he.diverged_at is None
    assert np.mean(he.losses[-10:]) < 0.5 * math.log(10) and he.test_acc > 0.7
    assert abs(uni.final_loss - math.log(10)) < 0.01  # U(-0.01, 0.01) stalls at ln 10
    saved = json.loads((tmp_path / "result.json").read_text())
    assert saved["losses"] == he.losses and saved["test_acc"] == he.test_acc
    assert he.input_var == pytest.approx(float(np.var(small[0].astype(np.float64))), rel=1e-5)


def test_mlp_shapes_and_bad_sizes():
    mlp = MLP((784, 50, 1), kernel_init=jax.nn.initializers.lecun_normal(), rngs=nnx.Rngs(0))
    assert mlp(jnp.ones((3, 784))).shape == (3, 1)
    with pytest.raises(ValueError, match="sizes"):
        MLP((784,), kernel_init=jax.nn.initializers.lecun_normal(), rngs=nnx.Rngs(0))


def test_parameters_going_nonfinite_are_caught_at_their_step(small):
    # Inputs x 1e6 keep the first loss finite (~1e6) but make first-layer gradients ~1e5;
    # lr 3e38 takes weights past float32's 3.4e38 in step 0 (any |g| > 1.2 does). The loss only turns
    # non-finite at step 1: the on-device parameter check must say 0.
    x, y = small[0] * np.float32(1e6), small[1]
    r = train_and_evaluate(TrainConfig(scheme="he_normal", learning_rate=3e38, epochs=1),
                           (x, y, x, y))
    assert math.isfinite(r.losses[0]) and not math.isfinite(r.losses[1])
    assert r.diverged_at == 0


@pytest.mark.parametrize("kwargs, needle", [
    ({"learning_rate": 0}, "learning_rate"), ({"batch_size": -1}, "batch_size"),
    ({"epochs": 0}, "epochs"), ({"momentum": 1.0}, "momentum"), ({"dtype": "float16"}, "dtype"),
    ({"scheme": "nope"}, "unknown scheme 'nope'.*he_normal"), ({"momentum": -0.1}, "momentum"),
])
def test_bad_config_is_refused(kwargs, needle):
    with pytest.raises(ValueError, match=needle):
        TrainConfig(**kwargs)
