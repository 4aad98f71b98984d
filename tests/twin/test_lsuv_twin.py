"""LSUV against its torch twin: the same weights from the same start, the same failures,
the same call order."""

import numpy as np
import pytest
from flax import nnx

import winit_jax as wj
from tests.conftest import require_torch
from winit_jax.lab import data as D
from winit_jax.lsuv import LSUVError, lsuv
from winit_jax.models import NOTEBOOK_A_SIZES
from winit_jax.schemes import get_scheme

torch = require_torch()
from reference_torch.models import torch_from_mlp  # noqa: E402


@pytest.fixture(scope="module")
def batch(test_digits):
    """100 real digits, pixels / 256: one of notebook A's batches."""
    return D.notebook_a_inputs(test_digits[0][:100])


def fresh(scheme="lsuv", seed=0):
    return wj.MLP(NOTEBOOK_A_SIZES, **get_scheme(scheme).mlp_kwargs(), rngs=nnx.Rngs(seed))


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
    net = torch_from_mlp(model)  # the same starting weights, (in, out) -> (out, in)
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

    net = torch_from_mlp(fresh("torch_default"))
    before = {k: v.clone() for k, v in net.state_dict().items()}
    with pytest.raises(LSUVError, match="layer 1 .* constant"):
        torch_lsuv(torch_from_mlp(fresh()), np.zeros_like(batch))
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


