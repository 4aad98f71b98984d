"""Hugging Face transformers' ``GPT2LMHeadModel`` as it is (tiny config, no wrapper), against a
port written the way a Flax user writes it: HF's module names, the tied head through
``nnx.Embed.attend``, ``attention_mask`` as a keyword input, the ``ModelOutput`` compared by
its logits, HF's ``Conv1D`` paired with ``nnx.Linear`` with no registration, AdamW with
GPT's param groups and a warm-up schedule. Realistic slips fail, naming the cause."""


import jax
import numpy as np
import pytest
from flax import nnx

from tests.conftest import require_torch
from tests.porting.gpt2_port import CONFIG, GPT2
from winit_jax import parity as P

torch = require_torch()
transformers = pytest.importorskip("transformers")

def torch_gpt2():
    torch.manual_seed(0)
    return transformers.GPT2LMHeadModel(transformers.GPT2Config(**CONFIG)).eval()


def data():
    rng = np.random.default_rng(0)
    ids = rng.integers(0, CONFIG["vocab_size"], (2, 8))
    mask = np.ones((2, 8), np.int64)
    mask[1, -3:] = 0  # the second sequence is right-padded
    return ids, mask


def gpt_groups(model):
    """GPT's recipe: weight decay on matrices only (not biases, LayerNorms, embeddings)."""
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "wte" not in n
             and "wpe" not in n]
    ids = {id(p) for p in decay}
    return [{"params": decay, "weight_decay": 0.1},
            {"params": [p for p in model.parameters() if id(p) not in ids], "weight_decay": 0.0}]


def _check(port, **kw):
    ids, mask = data()
    options = dict(kwargs=dict(attention_mask=mask, use_cache=False), targets=ids,
                   loss=P.cross_entropy, init_seeds=0,
                   torch_outputs=lambda out: out.logits)
    return P.check(torch_gpt2(), port, ids, **{**options, **kw})


def test_gpt2_pairs_without_a_mapping_or_a_registration():
    pairing = P.pair(torch_gpt2(), GPT2(nnx.Rngs(0)))
    kinds = {p.torch_name: p.kind.name for p in pairing}
    assert kinds["transformer.h.0.attn.c_attn"] == "Conv1D"
    assert kinds["transformer.h.1.mlp.c_proj"] == "Conv1D"
    assert "lm_head" not in kinds and pairing.ties == {"lm_head.weight":
                                                       "transformer.wte.weight"}
    assert {p.rule for p in pairing} == {"name"}


@pytest.mark.slow
def test_gpt2_passes_forward_gradients_layers_and_adamw_steps():
    def warmup(opt):
        return torch.optim.lr_scheduler.LambdaLR(opt, lambda step: min(1.0, (step + 1) / 3))
    report = _check(GPT2(nnx.Rngs(0)), steps=4,
                    make_optimizer=lambda m: torch.optim.AdamW(gpt_groups(m), lr=1e-2),
                    make_scheduler=warmup)
    report.assert_ok()
    parts = {s["part"] for s in report.summary()}
    assert {"forward", "gradient", "layer", "step"} <= parts
    # the tied embedding's gradient is compared once, summed over both uses
    assert "transformer.wte.weight" in {c.name for c in report.checks if c.part == "gradient"}


@pytest.mark.slow
@pytest.mark.parametrize("slip,where", [
    ("ln_f forgotten", ("transformer.ln_f", "never called")),
    ("mask ignored", None),
    ("swapped q/k", ("transformer.h.0.attn.c_proj", "before")),
])
def test_gpt2_slips_fail_naming_the_cause(slip, where):
    report = _check(GPT2(nnx.Rngs(0), slip=slip))
    assert not report.ok
    d = report.first_divergence
    if where is not None:
        assert (d.torch_name, d.where) == where, str(d)
    else:  # only the padded sequence differs: the forward fails
        assert "forward" in {c.part for c in report.failures()}


class UntiedGPT2(GPT2):
    """A realistic slip: the head is a Linear of its own, where HF ties it to ``wte``."""

    def __init__(self, rngs):
        super().__init__(rngs)
        self.lm_head = nnx.Linear(CONFIG["n_embd"], CONFIG["vocab_size"], use_bias=False,
                                  rngs=rngs)

    def __call__(self, input_ids, attention_mask, use_cache=False):
        return self.lm_head(self.transformer(input_ids, attention_mask))


def test_an_untied_head_is_refused_naming_the_tie():
    port = UntiedGPT2(nnx.Rngs(0))
    before = [np.array(x) for x in jax.tree.leaves(nnx.state(port, nnx.Param))]
    tie = (r"torch ties lm_head\.weight to transformer\.wte\.weight \(one tensor\) and the "
           r"port holds nnx lm_head and transformer/wte \(two variables\)")
    with pytest.raises(P.ParityError, match=tie):
        _check(port)
    with pytest.raises(P.ParityError, match=tie):
        P.from_torch(torch_gpt2(), port)
    after = jax.tree.leaves(nnx.state(port, nnx.Param))
    assert all(np.array_equal(a, b) for a, b in zip(before, after))  # left as it was


def _decay_matrices_but_wte(params):  # a porter's mask that forgets wpe (torch's groups don't)
    return jax.tree_util.tree_map_with_path(
        lambda path, x: x.ndim >= 2 and "wte" not in jax.tree_util.keystr(path), params)


@pytest.mark.slow
@pytest.mark.parametrize("slip", [None, "every tensor decayed", "mask keyed on the wrong name",
                                  "optax's default weight decay"])
def test_optimiser_slips_fail_in_float64_at_the_step_they_act(slip):
    """float32 rounding can hide what an optimiser slip does to a few steps; the same steps
    in float64 in both frameworks cannot: the faithful port passes them, each slip fails at
    step 1, the first loss after an update (step 0 is the forward)."""
    import optax

    from winit_jax import optim

    def torch_adamw(m):
        return torch.optim.AdamW(gpt_groups(m), lr=1e-2)
    kw = {None: dict(make_optimizer=torch_adamw),
          "every tensor decayed": dict(make_optimizer=torch_adamw,
                                       tx=optim.adamw(1e-2, weight_decay=0.1)),
          "mask keyed on the wrong name": dict(
              make_optimizer=torch_adamw,
              tx=optax.adamw(1e-2, eps=1e-8, weight_decay=0.1, mask=_decay_matrices_but_wte)),
          "optax's default weight decay": dict(
              make_optimizer=lambda m: torch.optim.AdamW(m.parameters(), lr=1e-2),
              tx=optax.adamw(1e-2))}[slip]
    with jax.numpy_dtype_promotion("standard"):  # optax mixes its int32 count with floats
        report = _check(GPT2(nnx.Rngs(0)), steps=3, **kw)
    float64 = [c for c in report.checks if c.part == "step (float64)"]
    assert len(float64) > 3
    if slip is None:
        report.assert_ok()
        assert all(c.outcome is P.Outcome.PASSED for c in float64)
    else:
        assert not report.ok
        failed = {c.name for c in float64 if c.outcome is P.Outcome.FAILED}
        assert "loss 1" in failed and "loss 0" not in failed, failed
