"""A port initialised as its torch model initialises itself, with no recipe written by hand:
the laws found from torch's own draws (HF's ``type(m)(m.config)``, torchvision's
constructors through ``fresh_torch``), checked by ``check``'s init part with 4 seeds, and
the same recipe saved as JSON and applied where torch cannot be imported. Mutants of a
recipe (the realistic slips of a hand-written one) each fail the init part, naming the
tensor, torch's law and the port's. The laws expected are transformers' and torchvision's
own (their ``_init_weights`` and constructors), not values read from a run."""

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest
from flax import nnx

import tests.porting.vision_ports as V
from tests.conftest import require_torch
from tests.porting import bert_port, gpt2_port, llama_port
from winit_jax import parity as P
from winit_jax.parity.inference import InitRecipe, Law, infer_recipe

torch = require_torch()
transformers = pytest.importorskip("transformers")
ROOT = Path(__file__).resolve().parents[2]


def _bert():
    torch.manual_seed(0)
    net = transformers.BertForMaskedLM(transformers.BertConfig(**bert_port.CONFIG)).eval()
    ids = np.random.default_rng(0).integers(0, bert_port.CONFIG["vocab_size"], (2, 8))
    kw = dict(kwargs=dict(attention_mask=np.ones((2, 8), np.int64)),
              torch_outputs=lambda out: out.logits)
    return net, (lambda: bert_port.BertMLM(nnx.Rngs(0))), ids, kw


def _gpt2():
    torch.manual_seed(0)
    net = transformers.GPT2LMHeadModel(transformers.GPT2Config(**gpt2_port.CONFIG)).eval()
    ids = np.random.default_rng(0).integers(0, gpt2_port.CONFIG["vocab_size"], (2, 8))
    kw = dict(kwargs=dict(attention_mask=np.ones((2, 8), np.int64), use_cache=False),
              torch_outputs=lambda out: out.logits)
    return net, (lambda: gpt2_port.GPT2(nnx.Rngs(0))), ids, kw


def _llama():
    torch.manual_seed(0)
    net = transformers.LlamaForCausalLM(transformers.LlamaConfig(**llama_port.CONFIG)).eval()
    ids = np.random.default_rng(0).integers(0, llama_port.CONFIG["vocab_size"], (2, 8))
    return net, (lambda: llama_port.Llama(nnx.Rngs(0))), ids, dict(
        kwargs=dict(use_cache=False), torch_outputs=lambda out: out.logits)


def _convnext():
    from torchvision.models.convnext import CNBlockConfig, ConvNeXt

    def build():
        return ConvNeXt([CNBlockConfig(16, 32, 2), CNBlockConfig(32, None, 2)],
                        stochastic_depth_prob=0.0, layer_scale=1e-6, num_classes=10)
    torch.manual_seed(0)
    x = np.random.default_rng(0).standard_normal((2, 3, 32, 32)).astype(np.float32)
    return build().eval(), (lambda: V.ConvNeXt(nnx.Rngs(0))), x, dict(
        flax_inputs=P.nhwc, fresh_torch=build)


def _resnet18():
    import torchvision

    def build():
        return torchvision.models.resnet18(num_classes=10)
    torch.manual_seed(0)
    x = np.random.default_rng(0).standard_normal((2, 3, 32, 32)).astype(np.float32)
    return build().eval(), (lambda: V.ResNet18(nnx.Rngs(0))), x, dict(
        flax_inputs=P.nhwc, fresh_torch=build)


def _unet():
    from tests.porting.test_unet import UNet, data, torch_unet

    sample, t = data()
    return torch_unet(), (lambda: UNet(nnx.Rngs(0))), (sample, t), dict(
        flax_inputs=(P.nhwc, None), flax_outputs=P.nchw, torch_outputs=lambda out: out.sample)


MODELS = {"bert": _bert, "gpt2": _gpt2, "llama": _llama, "convnext": _convnext,
          "resnet18": _resnet18, "unet": _unet}


def _recipe(name):
    net, port, x, kw = MODELS[name]()
    pair_kw = {k: v for k, v in kw.items() if k in ("kwargs", "flax_inputs")}
    return infer_recipe(net, nnx.eval_shape(port), inputs=x,
                        fresh_torch=kw.get("fresh_torch"), **pair_kw)


# what each library's own init code draws (transformers' _init_weights: normal(0,
# initializer_range=0.02), zero biases, LayerNorm/RMSNorm ones and zeros, the padding row
# zero, GPT-2's c_proj at 0.02 / sqrt(2 n_layer); torchvision's ConvNeXt: trunc_normal(0.02)
# with torch's default bounds +-2 (100 std: a normal), zero biases, layer_scale 1e-6;
# ResNet: kaiming_normal(fan_out) for convs, BatchNorm ones and zeros)
EXPECTED = {
    "bert": {"bert.embeddings.word_embeddings.weight": ("normal", 0.02, (0,)),
             "bert.encoder.layer.1.intermediate.dense.weight": ("normal", 0.02, ()),
             "bert.encoder.layer.1.intermediate.dense.bias": ("constant", 0.0, ()),
             "cls.predictions.bias": ("constant", 0.0, ()),
             "bert.encoder.layer.0.output.LayerNorm.weight": ("constant", 1.0, ())},
    "gpt2": {"transformer.h.0.attn.c_attn.weight": ("normal", 0.02, ()),
             "transformer.h.1.mlp.c_proj.weight": ("normal", 0.02 / 2, ()),
             "transformer.wpe.weight": ("normal", 0.02, ())},
    "llama": {"model.layers.0.mlp.gate_proj.weight": ("normal", 0.02, ()),
              "model.layers.1.input_layernorm.weight": ("constant", 1.0, ()),
              "lm_head.weight": ("normal", 0.02, ())},
    "convnext": {"features.1.0.layer_scale": ("constant", 1e-6, ()),
                 "features.3.1.block.3.weight": ("normal", 0.02, ()),
                 "features.0.0.bias": ("constant", 0.0, ())},
    "resnet18": {"layer1.0.conv1.weight": ("normal", (2 / (64 * 9)) ** 0.5, ()),
                 "layer4.1.bn2.weight": ("constant", 1.0, ())},
    # diffusers' UNet2DModel (built again by from_config) keeps torch's layer defaults:
    # U(+-1/sqrt(fan_in)) for convolutions and Linears, GroupNorm ones
    "unet": {"conv_in.weight": ("uniform", 1 / (3 * 9) ** 0.5, ()),
             "down_blocks.1.attentions.0.to_q.weight": ("uniform", 1 / 32 ** 0.5, ()),
             "mid_block.resnets.0.norm1.weight": ("constant", 1.0, ())},
}


@pytest.mark.parametrize("name", ["bert", "gpt2", "llama", "convnext", "resnet18", "unet"])
def test_the_inferred_laws_are_the_libraries_own(name):
    """Each std within 5 standard errors of the library's (sigma / sqrt(2n) for a pooled
    sample of n values; Bonferroni is moot at this margin), each constant exact."""
    recipe = _recipe(name)
    for key, (family, value, zero_rows) in EXPECTED[name].items():
        law = recipe.laws[key]
        assert law.family == family, (key, law.describe())
        assert law.zero_rows == zero_rows, (key, law.describe())
        if family == "constant":
            assert law.params["value"] == pytest.approx(value, rel=1e-6), key
        elif family == "uniform":  # the fitted bound within 2 % (its error is ~ bound / n)
            assert law.params["high"] == pytest.approx(value, rel=0.02), (key, law.describe())
        else:
            assert abs(law.params["std"] - value) < 5 * value / np.sqrt(2 * law.n), (
                key, law.describe())


@pytest.mark.slow
@pytest.mark.parametrize("name", ["bert", "gpt2", "llama", "convnext", "resnet18", "unet"])
def test_check_init_part_passes_with_no_recipe_written(name):
    net, port, x, kw = MODELS[name]()
    report = P.check(net, nnx.eval_shape(port), x, init_seeds=4, layers=False, **kw)
    report.assert_ok()
    assert any("recipe inferred from torch's own draws" in n for n in report.notes)
    assert {c.part for c in report.checks} >= {"init", "forward", "gradient"}


def _mutants(recipe):
    q = "bert.encoder.layer.0.attention.self.query.weight"
    e = "bert.embeddings.word_embeddings.weight"
    ln = "bert.embeddings.LayerNorm.weight"
    sd = recipe.laws[q].params["std"]
    return {
        "std 0.01 for 0.02": (q, Law("normal", {"mean": 0.0, "std": sd / 2})),
        "uniform for a normal of the same variance": (
            q, Law("uniform", {"low": -sd * 3 ** 0.5, "high": sd * 3 ** 0.5})),
        "padding row missing": (e, dataclasses.replace(recipe.laws[e], zero_rows=())),
        "a constant drawn": (ln, Law("normal", {"mean": 1.0, "std": 0.02})),
    }


@pytest.mark.slow
@pytest.mark.parametrize("mutant", ["std 0.01 for 0.02", "uniform for a normal of the same "
                                    "variance", "padding row missing", "a constant drawn"])
def test_recipe_mutants_fail_the_init_part_naming_tensor_and_laws(mutant):
    net, port, x, kw = _bert()
    recipe = _recipe("bert")
    key, law = _mutants(recipe)[mutant]
    slipped = dataclasses.replace(recipe, laws={**recipe.laws, key: law})
    report = P.check(net, nnx.eval_shape(port), x, init_seeds=4, layers=False,
                     overrides=slipped, **kw)
    failed = [c for c in report.failures() if c.part == "init"]
    assert [c.name.split(" ")[0] for c in failed] == [key], [c.name for c in failed]
    if mutant != "padding row missing":
        assert f"port: {law.describe()}" in failed[0].how and "torch: " in failed[0].how
    # the recipe as inferred passes the same check
    P.check(net, nnx.eval_shape(port), x, init_seeds=4, layers=False, overrides=recipe,
            **kw).assert_ok()


def test_a_recipe_saved_as_json_initialises_without_torch(tmp_path):
    """Inferred where torch is, applied in a process where ``import torch`` fails: the same
    draws, bit for bit, as the recipe applied here."""
    recipe = _recipe("gpt2")
    path = tmp_path / "gpt2_init.json"
    recipe.save(path)
    json.loads(path.read_text())  # plain JSON
    here = gpt2_port.GPT2(nnx.Rngs(0))
    InitRecipe.load(path).init(here, jax.random.key(3))
    out = tmp_path / "drawn.npy"
    code = f"""
import sys
sys.modules["torch"] = None  # import torch fails
import numpy as np, jax
from flax import nnx
from tests.porting.gpt2_port import GPT2
from winit_jax.parity.inference import InitRecipe
port = GPT2(nnx.Rngs(0))
InitRecipe.load({str(path)!r}).init(port, jax.random.key(3))
np.save({str(out)!r}, np.asarray(port.transformer.h[1].mlp.c_proj.kernel[...]))
try:
    import torch
except ImportError:
    print("no torch")
"""
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                          text=True)
    assert proc.returncode == 0 and "no torch" in proc.stdout, proc.stderr[-2000:]
    assert np.array_equal(np.load(out), np.asarray(here.transformer.h[1].mlp.c_proj.kernel[...]))
    # and it is GPT-2's law: the residual projection at 0.02 / sqrt(2 n_layer), in (in, out)
    kernel = np.load(out)
    assert abs(kernel.std() - 0.01) < 5 * 0.01 / np.sqrt(2 * kernel.size)


def test_a_bad_recipe_file_is_refused_by_name(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('{"version": 99}')
    with pytest.raises(P.ParityError, match=r"recipe: .*bad\.json is not an init recipe"):
        InitRecipe.load(bad)


# --- timm's VisionTransformer: built again by its own init_weights, no fresh_torch ------------

def _timm_vit():
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    net = timm.models.VisionTransformer(**V.TIMM_VIT).eval()
    x = np.random.default_rng(0).standard_normal((2, 3, 32, 32)).astype(np.float32)
    return net, (lambda: V.TimmViT(nnx.Rngs(0))), x, dict(flax_inputs=P.nhwc)


MODELS["timm_vit"] = _timm_vit
# timm 1.0's init_weights(''): Linear trunc_normal(0.02) (the head too) and bias 0, pos_embed
# trunc_normal(0.02), cls_token N(0, 1e-6^2), LayerScale init_values, the patch Conv torch's
# default: kaiming_uniform(a=sqrt(5)), i.e. U(+-1/sqrt(fan_in)), fan_in 3 * 8 * 8
EXPECTED["timm_vit"] = {"blocks.0.attn.qkv.weight": ("normal", 0.02, ()),
                        "head.weight": ("normal", 0.02, ()),
                        "blocks.1.ls2.gamma": ("constant", 1e-5, ()),
                        "pos_embed": ("normal", 0.02, ()),
                        "cls_token": ("normal", 1e-6, ())}


def test_timm_vit_is_built_again_by_its_own_init_weights():
    """No fresh_torch: timm's model re-runs its init on a copy. The laws are timm's (the
    class token's 64 values drawn 32 times to reach 2,000); the patch stem is torch's Conv
    default, a uniform of bound 1/sqrt(192)."""
    recipe = _recipe("timm_vit")
    assert "init_weights() on a copy" in recipe.source
    for key, (family, value, _) in EXPECTED["timm_vit"].items():
        law = recipe.laws[key]
        assert law.family == family, (key, law.describe())
        if family == "normal":
            assert abs(law.params["std"] - value) < 5 * value / np.sqrt(2 * law.n), key
        elif family == "constant":
            assert law.params["value"] == pytest.approx(value, rel=1e-6)
    stem = recipe.laws["patch_embed.proj.weight"]
    assert stem.family == "uniform" and stem.params["high"] == pytest.approx(
        1 / np.sqrt(192), rel=0.02)


@pytest.mark.slow
def test_timm_vit_init_part_passes_and_the_fixed_built_in_recipe_agrees():
    """The init part with no recipe passes; timm_vit_recipe (fixed: the head drawn like
    every Linear, the class token, the position embedding, LayerScale) passes against timm's
    own draws too; the old recipe's zero head fails there, named."""
    import winit_jax.torch_like as tl

    net, port, x, kw = _timm_vit()
    P.check(net, nnx.eval_shape(port), x, init_seeds=4, layers=False, **kw).assert_ok()
    recipe = tl.timm_vit_recipe(init_values=1e-5, layer_scale="*/scale[12]/*")
    P.check(net, nnx.eval_shape(port), x, init_seeds=4, layers=False, overrides=recipe,
            **kw).assert_ok()
    old = {**recipe, "head": {"kernel": tl.constant(0.0), "bias": tl.constant(0.0)}}
    failed = P.check(net, nnx.eval_shape(port), x, init_seeds=4, layers=False, overrides=old,
                     **kw).failures()
    assert {c.name for c in failed if c.part == "init"} == {"head.weight"}
