"""Tied weights: a torch tensor held by two modules (a language model's head tied to its
embedding) pairs with the port's one variable however the port uses it; weights go across
once each way and the tie survives; gradients and steps compare the summed gradient; a port
that unties it is refused, naming the tie."""

import numpy as np
import pytest
from flax import nnx

from tests.conftest import require_torch
from winit_jax import parity as P

torch = require_torch()
nn = torch.nn


class TiedLM(nn.Module):
    """The GPT-2 pattern: ``head.weight`` *is* ``emb.weight``."""

    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(20, 8)
        self.body = nn.Linear(8, 8)
        self.head = nn.Linear(8, 20, bias=False)
        self.head.weight = self.emb.weight

    def forward(self, ids):
        return self.head(torch.tanh(self.body(self.emb(ids))))


class TiedPort(nnx.Module):
    """The port as a Flax user writes it: the logits through ``Embed.attend``."""

    def __init__(self, rngs):
        self.emb = nnx.Embed(20, 8, rngs=rngs)
        self.body = nnx.Linear(8, 8, rngs=rngs)

    def __call__(self, ids):
        return self.emb.attend(nnx.tanh(self.body(self.emb(ids))))


class UntiedPort(TiedPort):
    """A realistic slip: a separate head, so the two copies part as soon as training moves
    them (and ``to_torch`` would write torch's one tensor twice)."""

    def __init__(self, rngs):
        super().__init__(rngs)
        self.head = nnx.Linear(8, 20, use_bias=False, rngs=rngs)

    def __call__(self, ids):
        return self.head(nnx.tanh(self.body(self.emb(ids))))


def _ids():
    return np.random.default_rng(0).integers(0, 20, (4, 6))


def test_a_tied_head_pairs_with_the_ports_one_variable_and_trains_alike():
    torch.manual_seed(0)
    t = TiedLM()
    pairing = P.pair(t, TiedPort(nnx.Rngs(0)))
    assert [p.torch_name for p in pairing] == ["emb", "body"]
    assert pairing.ties == {"head.weight": "emb.weight"}
    report = P.check(t, pairing.model, _ids(), pairing=pairing, steps=3, learning_rate=0.5,
                     init_seeds=0)
    report.assert_ok()
    # the summed gradient (embedding and head uses) is compared once, under torch's name
    assert {c.name for c in report.checks if c.part == "gradient"} == {
        "emb.weight", "body.weight", "body.bias"}


def test_weights_go_across_once_and_the_tie_survives():
    torch.manual_seed(0)
    t, port = TiedLM(), TiedPort(nnx.Rngs(1))
    P.from_torch(t, port)
    assert np.array_equal(np.asarray(port.emb.embedding[...]), t.emb.weight.detach().numpy())
    back = TiedLM()
    P.to_torch(port, back)
    assert back.head.weight is back.emb.weight
    assert np.array_equal(back.head.weight.detach().numpy(), t.emb.weight.detach().numpy())


def test_a_port_that_unties_what_torch_ties_is_refused_naming_the_tie():
    torch.manual_seed(0)
    t, port = TiedLM(), UntiedPort(nnx.Rngs(0))
    before = np.asarray(port.head.kernel[...]).copy()
    for call in (lambda: P.from_torch(t, port), lambda: P.to_torch(port, t),
                 lambda: P.check(t, port, _ids(), init_seeds=0)):
        with pytest.raises(P.ParityError, match=r"tied weights: torch ties head.weight to "
                                                r"emb.weight \(one tensor\) and the port holds "
                                                r"nnx head and emb \(two variables\)"):
            call()
    assert np.array_equal(np.asarray(port.head.kernel[...]), before)
    assert t.head.weight is t.emb.weight


# --- a layer the port never calls -----------------------------------------------------------

class WithFinalNorm(TiedLM):
    def __init__(self):
        super().__init__()
        self.ln_f = nn.LayerNorm(8)

    def forward(self, ids):
        return self.head(self.ln_f(torch.tanh(self.body(self.emb(ids)))))


class ForgetsFinalNorm(TiedPort):
    """GPT-2's classic slip: ``ln_f`` built, never called."""

    def __init__(self, rngs, call_it=False):
        super().__init__(rngs)
        self.ln_f = nnx.LayerNorm(8, epsilon=1e-5, rngs=rngs)
        self.call_it = call_it

    def __call__(self, ids):
        h = nnx.tanh(self.body(self.emb(ids)))
        return self.emb.attend(self.ln_f(h) if self.call_it else h)


def test_a_layer_the_port_never_calls_is_named_as_such():
    torch.manual_seed(0)
    faithful = P.check(WithFinalNorm(), ForgetsFinalNorm(nnx.Rngs(0), call_it=True), _ids(),
                       init_seeds=0)
    faithful.assert_ok()
    report = P.check(WithFinalNorm(), ForgetsFinalNorm(nnx.Rngs(0)), _ids(), init_seeds=0)
    d = report.first_divergence
    assert (d.torch_name, d.where) == ("ln_f", "never called"), str(d)
    assert "ln_f / nnx ln_f (LayerNorm): the port never calls it" in str(d)
    assert any("the port never does: ln_f" in n for n in report.notes)
