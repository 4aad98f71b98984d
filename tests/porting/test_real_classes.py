"""Whole models built by their libraries' own constructors (torchvision's ``resnet18``,
``efficientnet_b0``, ``mobilenet_v2``, ``ConvNeXt(block_setting)``, ``VisionTransformer``;
HF's ``BertForMaskedLM`` and ``LlamaForCausalLM``), repeated blocks and all, against ports
written the way a Flax user writes them (Flax's names and nesting, NHWC): no ``mapping=``,
no ``register_layer``. Each pairs, passes forward, gradients and every layer, and a
realistic slip is localised to the layer where it first shows. The expected pairs and
places follow from each model's structure, not from a run."""

import re

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import tests.porting.vision_ports as V
from tests.conftest import require_torch
from tests.porting import bert_port, llama_port
from winit_jax import parity as P
from winit_jax.parity import nhwc

torch = require_torch()
transformers = pytest.importorskip("transformers")


def _vision(name):
    import torchvision
    from torchvision.models.convnext import CNBlockConfig, ConvNeXt
    torch.manual_seed(0)
    if name == "resnet18":
        net, port = torchvision.models.resnet18(num_classes=10), V.ResNet18
    elif name == "efficientnet_b0":
        net, port = torchvision.models.efficientnet_b0(num_classes=10), V.EfficientNetB0
    elif name == "mobilenet_v2":
        net, port = torchvision.models.mobilenet_v2(num_classes=10, dropout=0.0), V.MobileNetV2
    elif name == "convnext":
        net = ConvNeXt([CNBlockConfig(16, 32, 2), CNBlockConfig(32, None, 2)],
                       stochastic_depth_prob=0.0, num_classes=10)
        port = V.ConvNeXt
    else:
        net, port = torchvision.models.VisionTransformer(**V.VIT), V.ViT
        with torch.no_grad():  # torchvision zeroes the head: the output would test nothing
            net.heads.head.weight.normal_(std=0.02)
    x = np.random.default_rng(0).standard_normal((2, 3, 32, 32)).astype(np.float32)
    return net.eval(), port, x


# (model, {torch name: nnx path} that only call order can give, number of pairs)
VISION = [
    # 20 convolutions, 20 BatchNorms, the head
    ("resnet18", {"conv1": "stem/conv", "bn1": "stem/bn",
                  "layer2.0.downsample.0": "stages/1/0/shortcut/conv",
                  "layer4.1.bn2": "stages/3/1/second/bn"}, 41),
    # 49 conv + BatchNorm, 16 squeeze-excitations of two convolutions, the head
    ("efficientnet_b0", {"features.0.0": "stem/conv", "features.2.1.block.2.fc1":
                         "blocks/2/se/reduce", "features.7.0.block.3.1": "blocks/15/project/bn",
                         "features.8.0": "top/conv"}, 131),
    # 52 conv + BatchNorm, the classifier; features kept as a list, Flax's names inside
    ("mobilenet_v2", {"features.0.0": "features/0/conv", "features.0.1": "features/0/bn",
                      "features.2.conv.1.0": "features/2/depthwise/conv",
                      "features.18.0": "features/18/conv"}, 105),
    # a block's own layer_scale and its children; 4 blocks in 2 stages
    ("convnext", {"features.1.0": "stages/0/0", "features.1.0.block.0": "stages/0/0/dwconv",
                  "features.3.1": "stages/1/1", "features.3.1.block.5": "stages/1/1/pwconv2",
                  "features.2.0": "downsamples/0/norm", "classifier.0": "norm"}, 26),
    # the root's class token, the encoder's position embedding, packed attention
    ("vit", {"": "", "encoder": "encoder", "conv_proj": "patch_embed",
             "encoder.layers.encoder_layer_1.ln_2": "encoder/blocks/1/norm2",
             "encoder.layers.encoder_layer_0.mlp.3": "encoder/blocks/0/mlp/fc2"}, 15),
]


@pytest.mark.parametrize("name,expected,count", VISION, ids=[v[0] for v in VISION])
def test_whole_torchvision_models_pair_with_flax_names(name, expected, count):
    net, port, x = _vision(name)
    pairing = P.pair(net, nnx.eval_shape(lambda: port(nnx.Rngs(0))), inputs=x, flax_inputs=nhwc)
    got = {p.torch_name: p.flax_path for p in pairing}
    assert len(got) == count
    assert {k: got.get(k) for k in expected} == expected


# (model, slip, where it first shows: (torch layer, nnx layer, before/inside))
VISION_SLIPS = [
    # the block's ReLU before the residual add: first seen by the next block's first conv
    ("resnet18", "relu before add", ("layer3.1.conv1", "stages/2/1/first/conv", "before")),
    # ReLU for SiLU after the 7th block's depthwise conv: the squeeze-excitation's input
    ("efficientnet_b0", "relu for silu", ("features.4.1.block.2.fc1", "blocks/6/se/reduce",
                                          "before")),
    # "SAME" padding on features[2]'s stride-2 depthwise conv: inside that conv
    ("mobilenet_v2", "same padding", ("features.2.conv.1.0", "features/2/depthwise/conv",
                                      "inside")),
    # tanh-approximate GELU in the last block: pwconv2 sees it first
    ("convnext", "tanh gelu", ("features.3.1.block.5", "stages/1/1/pwconv2", "before")),
    # the class token appended instead of prepended: the first block sees it
    ("vit", "cls token last", ("encoder.layers.encoder_layer_0.ln_1", "encoder/blocks/0/norm1",
                               "before")),
]


@pytest.mark.slow
@pytest.mark.parametrize("name,slip,where", VISION_SLIPS, ids=[v[0] for v in VISION_SLIPS])
def test_whole_torchvision_models_pass_and_their_slip_is_localised(name, slip, where):
    net, port, x = _vision(name)
    report = P.check(net, nnx.eval_shape(lambda: port(nnx.Rngs(0))), x, flax_inputs=nhwc,
                     init_seeds=0)
    report.assert_ok()
    assert {"forward", "gradient", "layer"} <= {s["part"] for s in report.summary()}
    d = P.check(net, nnx.eval_shape(lambda: port(nnx.Rngs(0), slip=slip)), x,
                flax_inputs=nhwc, init_seeds=0).first_divergence
    assert d is not None and (d.torch_name, d.flax_path, d.where) == where, str(d)


# --- HF BERT (masked LM, tied decoder) ---------------------------------------------------------

def _bert():
    torch.manual_seed(0)
    net = transformers.BertForMaskedLM(transformers.BertConfig(**bert_port.CONFIG)).eval()
    rng = np.random.default_rng(0)
    ids = rng.integers(0, bert_port.CONFIG["vocab_size"], (2, 8))
    mask = np.ones((2, 8), np.int64)
    mask[1, -3:] = 0
    return net, ids, dict(kwargs=dict(attention_mask=mask), targets=ids, loss=P.cross_entropy,
                          init_seeds=0, torch_outputs=lambda out: out.logits)


def test_bert_pairs_with_flax_names_and_its_ties():
    net, ids, kw = _bert()
    pairing = P.pair(net, bert_port.BertMLM(nnx.Rngs(0)), inputs=ids, kwargs=kw["kwargs"])
    got = {p.torch_name: p.flax_path for p in pairing}
    # 3 embeddings and their norm, 8 layers per block x 2, the head's transform, norm and bias
    assert len(got) == 23
    assert got["bert.encoder.layer.1.attention.self.key"] == "layers/1/attn/key"
    assert got["bert.encoder.layer.0.output.LayerNorm"] == "layers/0/mlp_norm"
    assert got["cls.predictions"] == "head"  # its own bias
    assert pairing.ties == {"cls.predictions.decoder.weight":
                            "bert.embeddings.word_embeddings.weight",
                            "cls.predictions.decoder.bias": "cls.predictions.bias"}


def test_an_untied_bert_decoder_is_refused_naming_the_tie():
    """The port gives the decoder a Linear of its own: before, pairing called the rest
    'parallel branches' and advised mapping=; the tie is what is wrong, whatever else is
    ambiguous."""
    net, ids, kw = _bert()
    with pytest.raises(P.ParityError, match=r"tied weights: torch ties "
                                            r"cls\.predictions\.decoder\.weight to bert\."
                                            r"embeddings\.word_embeddings\.weight .* nnx "
                                            r"head/decoder and embed/tokens"):
        P.pair(net, bert_port.UntiedBertMLM(nnx.Rngs(0)), inputs=ids, kwargs=kw["kwargs"])


@pytest.mark.slow
@pytest.mark.parametrize("slip,where", [
    # scores scaled by sqrt(d) for sqrt(d / heads): the attention's output projection
    ("scale by d", ("bert.encoder.layer.0.attention.output.dense", "before")),
    # tanh GELU in the MLP: the second dense sees it
    ("tanh gelu", ("bert.encoder.layer.0.output.dense", "before")),
    # LayerNorm eps 1e-5 for BERT's 1e-12
    ("flax eps", ("bert.encoder.layer.0.attention.output.LayerNorm", "inside")),
])
def test_bert_passes_and_its_slips_are_localised(slip, where):
    d = _passes_and_localises(_bert, bert_port.BertMLM, slip, where)
    if slip == "flax eps":  # the hint reads both layers' own settings (BERT's eps is 1e-12)
        assert "epsilon (torch's 1e-12, the port's 1e-05)" in d.hint, d.hint


def _passes_and_localises(models, port, slip, where):
    """The faithful port passes every part; the slipped one first parts at ``where``."""
    net, ids, kw = models()
    P.check(net, port(nnx.Rngs(0)), ids, **kw).assert_ok()
    d = P.check(net, port(nnx.Rngs(0), slip=slip), ids, **kw).first_divergence
    assert d is not None and (d.torch_name, d.where) == where, str(d)
    return d


# --- HF LLaMA (grouped-query attention, RoPE, SwiGLU, RMSNorm) -----------------------------------

def _llama():
    torch.manual_seed(0)
    net = transformers.LlamaForCausalLM(transformers.LlamaConfig(**llama_port.CONFIG)).eval()
    ids = np.random.default_rng(0).integers(0, llama_port.CONFIG["vocab_size"], (2, 8))
    return net, ids, dict(kwargs=dict(use_cache=False), targets=ids, loss=P.cross_entropy,
                          init_seeds=0, torch_outputs=lambda out: out.logits)


def test_llama_pairs_with_metas_names():
    """q, k, v and gate, up take the same input: they pair by role (wq: q_proj, w1:
    gate_proj), HF's LlamaRMSNorm with nnx.RMSNorm."""
    net, ids, kw = _llama()
    pairing = P.pair(net, llama_port.Llama(nnx.Rngs(0)), inputs=ids, kwargs=kw["kwargs"])
    got = {p.torch_name: p.flax_path for p in pairing}
    assert len(got) == 21  # the embedding, 9 layers per block x 2, the norm, the head
    layer = "model.layers.1."
    assert {k: got[layer + k] for k in ("self_attn.k_proj", "self_attn.v_proj",
                                        "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj",
                                        "post_attention_layernorm")} == {
        "self_attn.k_proj": "layers/1/attention/wk", "self_attn.v_proj": "layers/1/attention/wv",
        "mlp.gate_proj": "layers/1/feed_forward/w1", "mlp.up_proj": "layers/1/feed_forward/w3",
        "mlp.down_proj": "layers/1/feed_forward/w2",
        "post_attention_layernorm": "layers/1/ffn_norm"}
    assert {p.kind.name for p in pairing if "norm" in p.torch_name} == {"RMSNorm"}


@pytest.mark.slow
@pytest.mark.parametrize("slip,where", [
    # Meta's interleaved pairs for HF's rotate-half: q and k rotate otherwise
    ("interleaved rope", ("model.layers.0.self_attn.o_proj", "before")),
    # grouped-query heads tiled (head h uses kv head h % 2) for repeated (h // 2)
    ("kv heads tiled", ("model.layers.0.self_attn.o_proj", "before")),
    # RMSNorm eps 1e-5 for 1e-6
    ("rms eps 1e-5", ("model.layers.0.input_layernorm", "inside")),
    # gate and up swapped in the port's code (same shapes: paired by role, then caught)
    ("gate and up swapped", ("model.layers.0.mlp.down_proj", "before")),
])
def test_llama_passes_and_its_slips_are_localised(slip, where):
    _passes_and_localises(_llama, llama_port.Llama, slip, where)


# --- errors of the port's own code name its layer ----------------------------------------------

def test_an_error_in_the_ports_own_code_names_its_layer_not_the_inputs():
    """A port whose position embedding is one position too long (as a Wav2Vec2 port that
    forgets the positional conv's last-frame removal): the inputs fit, and the error rises
    after the port's layers have run. It names where, with the shapes; the inputs are
    blamed only where the port rejects them before any layer runs."""
    from tests.porting.gpt2_port import CONFIG, GPT2

    torch.manual_seed(0)
    net = transformers.GPT2LMHeadModel(transformers.GPT2Config(**CONFIG)).eval()
    ids = np.random.default_rng(0).integers(0, CONFIG["vocab_size"], (2, 8))
    mask = np.ones((2, 8), np.int64)

    class OffByOne(GPT2):
        def __call__(self, input_ids, attention_mask, use_cache=False):
            t = self.transformer
            x = t.wte(input_ids) + t.wpe(jnp.arange(input_ids.shape[1] + 1))[None]
            return x

    kw = dict(kwargs=dict(attention_mask=mask, use_cache=False), init_seeds=0,
              torch_outputs=lambda out: out.logits)
    with pytest.raises(P.ParityError, match=r"^the port's forward pass failed in the port's "
                                            r"code after nnx layer transformer/wpe: .*"
                                            r"\(2, 8, 32\).*\(1, 9, 32\)"):
        P.check(net, OffByOne(nnx.Rngs(0)), ids, **kw)

    class TakesNoMask(GPT2):
        def __call__(self, input_ids, use_cache=False):
            return super().__call__(input_ids, None)
    with pytest.raises(P.ParityError, match=r"^inputs: .* does not fit the nnx model"):
        P.check(net, TakesNoMask(nnx.Rngs(0)), ids, **kw)


def test_a_meta_skeleton_whose_forward_needs_values_is_refused_saying_what_to_do():
    """BERT's forward calls .item() (its mask): pairing it by call order on the meta device
    cannot run. One ParityError naming the module where it rose and the ways out (before: a
    message blaming the inputs); the CPU skeleton plans, as the message says."""
    net, ids, kw = _bert()
    with torch.device("meta"):
        meta = transformers.BertForMaskedLM(transformers.BertConfig(**bert_port.CONFIG))
    port = nnx.eval_shape(lambda: bert_port.BertMLM(nnx.Rngs(0)))
    with pytest.raises(P.ParityError, match=r"^torch_module is on the meta device \(a skeleton\) "
                                            r"and its forward needs values \(inside torch bert "
                                            r"\(BertModel\)\): Tensor\.item\(\) .* build the "
                                            r"skeleton on the CPU"):
        P.make_plan(meta, port, inputs=ids, kwargs=kw["kwargs"])
    plan = P.make_plan(net, port, inputs=ids, kwargs=kw["kwargs"])
    assert "layers/1/attn/key/kernel" in plan.variables


def test_another_models_checkpoint_is_refused_with_its_keys_grouped(tmp_path):
    """A BertForSequenceClassification file into the masked-LM port: the missing keys (the
    MLM head) and the unexpected ones (the pooler, the classifier) grouped by layer, the
    top-level names of both, and the port left as it was."""
    import safetensors.torch as st

    net, ids, kw = _bert()
    torch.manual_seed(1)
    other = transformers.BertForSequenceClassification(
        transformers.BertConfig(**bert_port.CONFIG))
    st.save_model(other, tmp_path / "cls.safetensors")
    port = bert_port.BertMLM(nnx.Rngs(0))
    before = [np.asarray(v[...]).copy() for _, v in nnx.iter_graph(port)
              if isinstance(v, nnx.Param)]
    with pytest.raises(P.ParityError) as e:
        P.load_checkpoint(tmp_path / "cls.safetensors", port, torch_module=net, inputs=ids,
                          kwargs=kw["kwargs"])
    text = str(e.value)
    assert re.search(r"5 keys the model needs are missing \(cls\.predictions: bias; "
                     r"cls\.predictions\.transform\.dense: bias, weight; cls\.predictions\."
                     r"transform\.LayerNorm: bias, weight\)", text), text
    assert re.search(r"4 keys are not the model's \(bert\.pooler\.dense: bias, weight; "
                     r"classifier: bias, weight;", text), text
    assert "the file's top-level names are ['bert', 'classifier'], the model's ['bert', 'cls']" \
        in text
    assert sorted(e.value.unexpected) == ["bert.pooler.dense.bias", "bert.pooler.dense.weight",
                                          "classifier.bias", "classifier.weight"]
    after = [np.asarray(v[...]) for _, v in nnx.iter_graph(port) if isinstance(v, nnx.Param)]
    assert all(np.array_equal(a, b) for a, b in zip(before, after))
