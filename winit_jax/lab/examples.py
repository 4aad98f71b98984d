"""Ported examples: torch models nobody here wrote (torchvision, torch.nn) and their nnx
ports written the way a Flax user writes them, each with inputs and ``check`` arguments;
and how a user's ``module:factory`` pair is loaded. The notebooks' digit CNN, which needs
the lab's data, is ``winit_jax.lab.cnn_example``. The lab's, not the library's: the
``winit-jax parity --example`` command, the benchmarks and the tests use them."""

from __future__ import annotations

import importlib

import numpy as np

from winit_jax.parity.io import nhwc


def example(name: str):
    """``(torch module, nnx model, inputs, check kwargs)`` for a built-in example.

    Every example's port but the scanned stack's is built as shapes (``nnx.eval_shape``):
    ``check`` fills it (``torch_like.init``, then torch's weights), so Flax's own
    initialisers never run (compiling them, one program per shape, was a third of a cold
    MobileNetV2 check)."""
    import torch
    from flax import nnx

    import winit_jax.torch_like as tl
    from winit_jax.models import ResNet18, TransformerEncoderLayer

    rng = np.random.default_rng(0)
    torch.manual_seed(0)
    if name == "resnet18":
        from torchvision.models import resnet18
        return (resnet18(num_classes=10),
                nnx.eval_shape(lambda: ResNet18(num_classes=10, rngs=nnx.Rngs(0))),
                rng.standard_normal((2, 3, 64, 64)).astype(np.float32),
                dict(flax_inputs=nhwc, train=True, init_seeds=1, overrides=tl.resnet_recipe(),
                     fresh_torch=lambda: resnet18(num_classes=10)))
    if name == "transformer":
        return (torch.nn.TransformerEncoderLayer(64, 4, dropout=0.0, batch_first=True),
                nnx.eval_shape(lambda: TransformerEncoderLayer(64, 4, rngs=nnx.Rngs(0))),
                rng.standard_normal((2, 10, 64)).astype(np.float32), dict(init_seeds=4))
    if name == "lstm":
        return (torch.nn.LSTM(16, 32, batch_first=True),
                nnx.eval_shape(lambda: nnx.RNN(nnx.OptimizedLSTMCell(16, 32, rngs=nnx.Rngs(0)))),
                rng.standard_normal((4, 20, 16)).astype(np.float32),
                # torch's LSTM gives (y, (h, c)), nnx.RNN gives y: compare y
                dict(init_seeds=8, torch_outputs=lambda out: out[0]))
    if name == "vit":
        return vit()
    if name == "mobilenet_v2":
        return mobilenet_v2()
    if name == "scanned_transformer":
        return scanned_transformer()
    if name == "lstm_lm":
        return language_model("LSTM", num_layers=2)
    if name == "bigru_lm":
        return language_model("GRU", bidirectional=True)
    raise ValueError(f"unknown example {name!r}; known: {', '.join(EXAMPLES)}")


EXAMPLES = ("resnet18", "transformer", "lstm", "vit", "mobilenet_v2", "scanned_transformer",
            "lstm_lm", "bigru_lm")


def torch_cnn():
    """Two 3x3 convolutions (stride 2) with BatchNorm and ReLU, flattened, a Linear head:
    28x28 digits -> 10 logits."""
    from torch import nn
    return nn.Sequential(nn.Conv2d(1, 16, 3, stride=2, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
                         nn.Conv2d(16, 32, 3, stride=2, padding=1), nn.BatchNorm2d(32), nn.ReLU(),
                         nn.Flatten(), nn.Linear(32 * 7 * 7, 10))


def flax_cnn(rngs):
    """``torch_cnn``'s nnx port, NHWC, with torch's BatchNorm (momentum 0.1 = Flax's 0.9)."""
    from flax import nnx

    class CNN(nnx.Module):
        def __init__(self, rngs):
            conv = dict(kernel_size=(3, 3), strides=2, padding=((1, 1), (1, 1)), rngs=rngs)
            bn = dict(momentum=0.9, epsilon=1e-5, use_fast_variance=False,  # torch's BatchNorm2d
                      rngs=rngs)  # (its variance: the two-pass form, see models/resnet.py)
            self.conv1, self.bn1 = nnx.Conv(1, 16, **conv), nnx.BatchNorm(16, **bn)
            self.conv2, self.bn2 = nnx.Conv(16, 32, **conv), nnx.BatchNorm(32, **bn)
            self.head = nnx.Linear(32 * 7 * 7, 10, rngs=rngs)

        def __call__(self, x):
            x = nnx.relu(self.bn1(self.conv1(x)))
            x = nnx.relu(self.bn2(self.conv2(x)))
            # torch flattens (C, H, W); flattening NHWC as it is would permute the head's
            # inputs (the port's classic slip): back to channels-first first
            return self.head(x.transpose(0, 3, 1, 2).reshape(x.shape[0], -1))

    return CNN(rngs)


# --- torchvision's VisionTransformer, ported the way a Flax user writes it ---------------------

VIT = dict(image_size=32, patch_size=8, num_layers=2, num_heads=4, hidden_dim=64, mlp_dim=128,
           num_classes=10)


def torch_vit(**kw):
    """``torchvision.models.VisionTransformer`` at a small size (no pretrained weights)."""
    from torchvision.models import VisionTransformer
    return VisionTransformer(**{**VIT, **kw})


def flax_vit(rngs, *, image_size=32, patch_size=8, num_layers=2, num_heads=4, hidden_dim=64,
             mlp_dim=128, num_classes=10, gelu_approximate=(), ln_2_eps=(),
             patch_order="hw", stop_gradient=()):
    """``torch_vit``'s nnx port, torchvision's names (``encoder/layers`` a list where torch
    numbers ``encoder_layer_0``, ``encoder_layer_1``), NHWC inputs. The keyword arguments
    after ``num_classes`` are a porter's slips, for tests: GELU's tanh approximation in the
    listed layers, LayerNorm epsilon 1e-5 for torch's 1e-6 in the listed layers' ``ln_2``,
    patches flattened in (w, h) order for "wh", a ``stop_gradient`` left on the listed
    layers' attention output (from a frozen-backbone recipe: the forward is unchanged)."""
    import jax
    import jax.numpy as jnp
    from flax import nnx

    def norm():
        return nnx.LayerNorm(hidden_dim, epsilon=1e-6, use_fast_variance=False, rngs=rngs)

    class EncoderBlock(nnx.Module):
        def __init__(self, i):
            self.ln_1 = norm()
            self.self_attention = nnx.MultiHeadAttention(num_heads, hidden_dim, decode=False,
                                                         rngs=rngs)
            self.ln_2 = norm()
            if i in ln_2_eps:
                self.ln_2.epsilon = 1e-5
            self.mlp = nnx.List([nnx.Linear(hidden_dim, mlp_dim, rngs=rngs),
                                 nnx.Linear(mlp_dim, hidden_dim, rngs=rngs)])
            self.approximate = i in gelu_approximate
            self.frozen = i in stop_gradient

        def __call__(self, x):
            a = self.self_attention(self.ln_1(x))
            x = x + (jax.lax.stop_gradient(a) if self.frozen else a)
            y = jax.nn.gelu(self.mlp[0](self.ln_2(x)), approximate=self.approximate)
            return x + self.mlp[1](y)

    class Encoder(nnx.Module):
        def __init__(self):
            seq = (image_size // patch_size) ** 2 + 1
            self.pos_embedding = nnx.Param(jnp.zeros((1, seq, hidden_dim)))
            self.layers = nnx.List([EncoderBlock(i) for i in range(num_layers)])
            self.ln = norm()

        def __call__(self, x):
            x = x + self.pos_embedding[...]
            for block in self.layers:
                x = block(x)
            return self.ln(x)

    class ViT(nnx.Module):
        def __init__(self):
            self.conv_proj = nnx.Conv(3, hidden_dim, (patch_size, patch_size),
                                      strides=patch_size, padding="VALID", rngs=rngs)
            self.class_token = nnx.Param(jnp.zeros((1, 1, hidden_dim)))
            self.encoder = Encoder()
            self.heads = nnx.Dict(head=nnx.Linear(hidden_dim, num_classes, rngs=rngs))

        def __call__(self, x):  # (N, H, W, 3)
            x = self.conv_proj(x)  # (N, h, w, D)
            if patch_order == "wh":
                x = x.transpose(0, 2, 1, 3)
            n = x.shape[0]
            x = x.reshape(n, -1, hidden_dim)  # torch's (h, w) order
            cls = jnp.broadcast_to(self.class_token[...], (n, 1, hidden_dim))
            x = self.encoder(jnp.concatenate([cls, x], axis=1))
            return self.heads["head"](x[:, 0])

    return ViT()


def vit(seed: int = 0):
    """torchvision's ViT and its port: inputs (4, 3, 32, 32), the head redrawn N(0, 0.02^2) in
    torch (torchvision zeroes it, so the output would be 0 in both and test nothing), init
    against torchvision's own constructor with ``torchvision_vit_recipe``."""
    import torch
    from flax import nnx

    import winit_jax.torch_like as tl

    torch.manual_seed(seed)
    net = torch_vit()
    with torch.no_grad():
        net.heads.head.weight.normal_(std=0.02)
    x = np.random.default_rng(seed).standard_normal((4, 3, 32, 32)).astype(np.float32)
    return (net, nnx.eval_shape(lambda: flax_vit(nnx.Rngs(seed))), x,
            dict(flax_inputs=nhwc, init_seeds=2, fresh_torch=torch_vit,
                 overrides=tl.torchvision_vit_recipe()))


# --- torchvision's MobileNetV2 ------------------------------------------------------------------

def flax_mobilenet_v2(rngs, num_classes: int = 10, *, relu_after=(), same_padding=(),
                      param_dtype=None):
    """``torchvision.models.mobilenet_v2``'s nnx port with torchvision's names
    (``features/3/conv/0/0`` ...), NHWC; width 1, its 17 inverted residual blocks. The
    keyword arguments are a porter's slips, for tests: plain ReLU for ReLU6 after the
    expansion conv of the listed blocks; ``padding="SAME"`` in the listed blocks' depthwise
    convs (torch pads explicitly, 1 on each side)."""
    import jax
    import jax.numpy as jnp
    from flax import nnx

    kw = dict(param_dtype=param_dtype or jnp.float32, rngs=rngs)

    def bn(c):  # torch's BatchNorm2d: momentum 0.1 (Flax's 0.9), eps 1e-5, two-pass variance
        return nnx.BatchNorm(c, momentum=0.9, epsilon=1e-5, use_fast_variance=False, **kw)

    def cna(cin, cout, k=3, stride=1, groups=1, padding=None):  # Conv2dNormActivation
        pad = padding or (((k - 1) // 2,) * 2,) * 2
        return nnx.List([nnx.Conv(cin, cout, (k, k), strides=stride, padding=pad,
                                  feature_group_count=groups, use_bias=False, **kw), bn(cout)])

    def run_cna(layers, x, act=None):
        return (act or jax.nn.relu6)(layers[1](layers[0](x)))

    class InvertedResidual(nnx.Module):
        def __init__(self, i, cin, cout, stride, t):
            hidden = cin * t
            self.residual = stride == 1 and cin == cout
            self.expand = t != 1
            self.act = jax.nn.relu if i in relu_after else jax.nn.relu6
            layers = [cna(cin, hidden, k=1)] if t != 1 else []
            layers += [cna(hidden, hidden, stride=stride, groups=hidden,
                           padding="SAME" if i in same_padding else None),
                       nnx.Conv(hidden, cout, (1, 1), use_bias=False, **kw), bn(cout)]
            self.conv = nnx.List(layers)

        def __call__(self, x):
            y, rest = x, list(self.conv)
            if self.expand:
                y = run_cna(rest.pop(0), y, self.act)
            y = run_cna(rest[0], y)
            y = rest[2](rest[1](y))
            return x + y if self.residual else y

    class MobileNetV2(nnx.Module):
        def __init__(self):
            features, cin, i = [cna(3, 32, stride=2)], 32, 1
            for t, c, n, s in ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2),
                               (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1)):
                for j in range(n):
                    features.append(InvertedResidual(i, cin, c, s if j == 0 else 1, t))
                    cin, i = c, i + 1
            features.append(cna(cin, 1280, k=1))
            self.features = nnx.List(features)
            self.classifier = nnx.List([nnx.Dropout(0.0, rngs=rngs),
                                        nnx.Linear(1280, num_classes, **kw)])

        def __call__(self, x):
            x = run_cna(self.features[0], x)
            for block in list(self.features)[1:-1]:
                x = block(x)
            x = run_cna(self.features[-1], x)
            return self.classifier[1](self.classifier[0](x.mean(axis=(1, 2))))

    return MobileNetV2()


def mobilenet_v2(seed: int = 0, *, batch: int = 16, **slips):
    """torchvision's MobileNetV2 (10 classes, dropout 0 so that training steps compare) and
    its port on (``batch``, 3, 32, 32) inputs: init against torchvision's constructor with
    ``mobilenet_v2_recipe``, train mode (BatchNorm batch statistics). Below 16 images the
    last blocks' BatchNorms (1x1 maps: ``batch`` values per channel) make training chaotic:
    at 4, torch's own float32 and float64 losses part by 4 % in the second step."""
    import torch
    from flax import nnx
    from torchvision.models import mobilenet_v2 as build

    import winit_jax.torch_like as tl

    def fresh():
        return build(num_classes=10, dropout=0.0)

    torch.manual_seed(seed)
    x = np.random.default_rng(seed).standard_normal((batch, 3, 32, 32)).astype(np.float32)
    return (fresh(), nnx.eval_shape(lambda: flax_mobilenet_v2(nnx.Rngs(seed), **slips)), x,
            dict(flax_inputs=nhwc, init_seeds=1, fresh_torch=fresh, train=True,
                 overrides=tl.mobilenet_v2_recipe()))


def checkpoint_like_batchnorms(net, seed: int = 0):
    """Gives every ``BatchNorm2d`` of ``net`` (in place; returned) affine parameters as a
    trained checkpoint has them: gamma ~ U(0.5, 4), beta ~ N(0, 0.5^2), from a fixed torch
    generator. At init (gamma 1, beta 0, running statistics 0 and 1) an eval-mode BatchNorm
    is about the identity and no MobileNetV2 activation reaches ReLU6's cap of 6 (measured:
    block 2's expansion at most 4.6 even with inputs x30), so no comparison of outputs can
    tell ReLU from ReLU6 there; with these, block 2's expansion reaches the cap."""
    import torch

    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.weight.uniform_(0.5, 4.0, generator=g)
                m.bias.normal_(0.0, 0.5, generator=g)
    return net


# --- a 4-block transformer: torch's ModuleList against one nnx.vmap-built, nnx.scan-run stack --

def torch_encoder(blocks: int = 4, d: int = 32, heads: int = 4):
    """``blocks`` ``nn.TransformerEncoderLayer`` in an ``nn.ModuleList``, run in turn."""
    from torch import nn

    class Encoder(nn.Module):
        def __init__(self):
            super().__init__()
            self.layers = nn.ModuleList([
                nn.TransformerEncoderLayer(d, heads, dim_feedforward=2 * d, dropout=0.0,
                                           batch_first=True) for _ in range(blocks)])

        def forward(self, x):
            for layer in self.layers:
                x = layer(x)
            return x

    return Encoder()


def flax_scanned_encoder(rngs, blocks: int = 4, d: int = 32, heads: int = 4):
    """``torch_encoder``'s port as a Flax user writes a deep transformer: one block built
    with ``nnx.vmap`` (a leading axis of ``blocks`` on every parameter), run with
    ``nnx.scan``."""
    from flax import nnx

    from winit_jax.models import TransformerEncoderLayer

    class Encoder(nnx.Module):
        def __init__(self):
            @nnx.split_rngs(splits=blocks)
            @nnx.vmap(in_axes=(0,), out_axes=0)
            def make(rngs):
                return TransformerEncoderLayer(d, heads, dim_feedforward=2 * d, rngs=rngs)
            self.layers = make(rngs)

        def __call__(self, x):
            @nnx.scan(in_axes=(0, nnx.Carry), out_axes=nnx.Carry)
            def step(layer, x):
                return layer(x)
            return step(self.layers, x)

    return Encoder()


def scanned_transformer(seed: int = 0):
    """The 4-block pair on (2, 10, 32) inputs, init over 2 seeds."""
    import torch
    from flax import nnx

    torch.manual_seed(seed)
    x = np.random.default_rng(seed).standard_normal((2, 10, 32)).astype(np.float32)
    # built concretely: a scanned stack's block views write into the stacked arrays
    return torch_encoder(), flax_scanned_encoder(nnx.Rngs(seed)), x, dict(init_seeds=2)


# --- a recurrent language model: Embedding -> stacked / bidirectional LSTM or GRU -> Linear ---

LM_SIZES = dict(vocab=50, embed=16, hidden=32)


def torch_lm(cell: str = "LSTM", *, num_layers: int = 1, bidirectional: bool = False):
    """``nn.Embedding -> nn.LSTM/nn.GRU(num_layers, bidirectional, batch_first) -> nn.Linear``:
    next-token logits (B, T, vocab) from token ids (B, T)."""
    from torch import nn

    class LM(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = nn.Embedding(LM_SIZES["vocab"], LM_SIZES["embed"])
            self.rnn = getattr(nn, cell)(LM_SIZES["embed"], LM_SIZES["hidden"], num_layers=num_layers,
                                         bidirectional=bidirectional, batch_first=True)
            self.head = nn.Linear(LM_SIZES["hidden"] * (2 if bidirectional else 1), LM_SIZES["vocab"])

        def forward(self, tokens):
            return self.head(self.rnn(self.embed(tokens))[0])

    return LM()


def flax_lm(rngs, cell: str = "LSTM", *, num_layers: int = 1, bidirectional: bool = False,
            exact: bool = True, time_major: bool = False, cell_class=None):
    """``torch_lm``'s nnx port: a list of ``nnx.RNN`` (or of ``nnx.Bidirectional``) over
    torch-exact cells (``exact``) or Flax's own; ``time_major`` and ``cell_class`` are a
    porter's slips, for tests."""
    from flax import nnx

    from winit_jax.kinds import cells

    make = cell_class or (getattr(cells, f"Torch{cell}Cell") if exact else
                          {"LSTM": nnx.OptimizedLSTMCell, "GRU": nnx.GRUCell}[cell])
    h = LM_SIZES["hidden"]

    def rnn(n_in, **kw):
        return nnx.RNN(make(n_in, h, rngs=rngs), time_major=time_major, **kw)

    def layer(n_in):
        if bidirectional:
            return nnx.Bidirectional(rnn(n_in), rnn(n_in, reverse=True, keep_order=True),
                                     time_major=time_major, rngs=rngs)
        return rnn(n_in)

    class LM(nnx.Module):
        def __init__(self):
            width = h * (2 if bidirectional else 1)
            self.embed = nnx.Embed(LM_SIZES["vocab"], LM_SIZES["embed"], rngs=rngs)
            self.rnn = nnx.List([layer(LM_SIZES["embed"] if k == 0 else width)
                                 for k in range(num_layers)])
            self.head = nnx.Linear(width, LM_SIZES["vocab"], rngs=rngs)

        def __call__(self, tokens):
            x = self.embed(tokens)
            for r in self.rnn:
                x = r(x)
            return self.head(x)

    return LM()


def language_model(cell: str = "LSTM", *, num_layers: int = 1, bidirectional: bool = False,
                   seed: int = 0, **port):
    """The LM pair and its data: 4 sequences of 12 token ids, targets the next tokens
    (cross-entropy over (B, T, vocab)), SGD lr 0.1 momentum 0.9."""
    import torch
    from flax import nnx

    from winit_jax import parity

    torch.manual_seed(seed)
    net = torch_lm(cell, num_layers=num_layers, bidirectional=bidirectional)
    tokens = np.random.default_rng(seed).integers(0, LM_SIZES["vocab"], (4, 13))
    return (net, nnx.eval_shape(lambda: flax_lm(nnx.Rngs(seed), cell, num_layers=num_layers,
                                                bidirectional=bidirectional, **port)),
            tokens[:, :-1],
            dict(targets=tokens[:, 1:], loss=parity.cross_entropy, learning_rate=0.1,
                 momentum=0.9, init_seeds=2))


def load_factory(spec: str, what: str):
    """``"package.module:factory"`` -> the callable; ValueError naming ``what`` otherwise."""
    module, _, attr = spec.partition(":")
    if not module or not attr:
        raise ValueError(f"{what}: expected MODULE:FACTORY, got {spec!r}")
    try:
        obj = getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as e:
        raise ValueError(f"{what}: cannot load {spec!r} ({e})") from None
    if not callable(obj):
        raise ValueError(f"{what}: {spec!r} is not callable")
    return obj
