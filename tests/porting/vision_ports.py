"""torchvision's ResNet-18, EfficientNet-B0, MobileNetV2, ConvNeXt and VisionTransformer
ported the way a Flax user writes them: NHWC, Flax's own names and nesting (a ``ConvBN``
holding ``conv`` and ``bn`` where torchvision numbers ``0, 1``; ``stages/i/j``; the official
ConvNeXt repo's ``dwconv, norm, pwconv1, pwconv2``; ``cls_token`` and ``pos_embed``), each
with a realistic slip; no torch here."""

import jax
import jax.numpy as jnp
from flax import nnx


def _pad(k):
    return (((k - 1) // 2,) * 2,) * 2


class ConvBN(nnx.Module):
    """Conv (no bias), BatchNorm (torch's eps and momentum), an activation."""

    def __init__(self, cin, cout, rngs, k=3, stride=1, groups=1, act=None, padding=None):
        self.conv = nnx.Conv(cin, cout, (k, k), strides=stride, padding=padding or _pad(k),
                             feature_group_count=groups, use_bias=False, rngs=rngs)
        self.bn = nnx.BatchNorm(cout, momentum=0.9, epsilon=1e-5, use_fast_variance=False,
                                rngs=rngs)
        self.act = act

    def __call__(self, x):
        y = self.bn(self.conv(x))
        return self.act(y) if self.act is not None else y


# --- ResNet-18 --------------------------------------------------------------------------------

class BasicBlock(nnx.Module):
    def __init__(self, cin, cout, stride, rngs, slip=None):
        self.first = ConvBN(cin, cout, rngs, stride=stride, act=jax.nn.relu)
        self.second = ConvBN(cout, cout, rngs)
        self.shortcut = (ConvBN(cin, cout, rngs, k=1, stride=stride, padding="VALID")
                         if stride != 1 or cin != cout else None)
        self.slip = slip

    def __call__(self, x):
        y = self.second(self.first(x))
        s = self.shortcut(x) if self.shortcut is not None else x
        return jax.nn.relu(y + s) if self.slip != "relu before add" else jax.nn.relu(y) + s


class ResNet18(nnx.Module):
    def __init__(self, rngs, num_classes=10, slip=None):
        self.stem = ConvBN(3, 64, rngs, k=7, stride=2, act=jax.nn.relu)
        stages, cin = [], 64
        for i, cout in enumerate((64, 128, 256, 512)):
            stride = 1 if i == 0 else 2
            stages.append(nnx.List([BasicBlock(cin, cout, stride, rngs,
                                               slip if i == 2 else None),
                                    BasicBlock(cout, cout, 1, rngs)]))
            cin = cout
        self.stages = nnx.List(stages)
        self.head = nnx.Linear(512, num_classes, rngs=rngs)

    def __call__(self, x):
        x = self.stem(x)
        x = nnx.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))
        for stage in self.stages:
            for block in stage:
                x = block(x)
        return self.head(x.mean(axis=(1, 2)))


# --- EfficientNet-B0 --------------------------------------------------------------------------

class SqueezeExcite(nnx.Module):
    def __init__(self, channels, squeeze, rngs):
        self.reduce = nnx.Conv(channels, squeeze, (1, 1), rngs=rngs)
        self.expand = nnx.Conv(squeeze, channels, (1, 1), rngs=rngs)

    def __call__(self, x):
        s = x.mean(axis=(1, 2), keepdims=True)
        return x * jax.nn.sigmoid(self.expand(jax.nn.silu(self.reduce(s))))


class MBConv(nnx.Module):
    def __init__(self, cin, cout, k, stride, expand, rngs, slip=None):
        hidden = cin * expand
        self.expand = (ConvBN(cin, hidden, rngs, k=1, act=jax.nn.silu) if expand != 1
                       else None)
        act = jax.nn.relu if slip == "relu for silu" else jax.nn.silu
        self.depthwise = ConvBN(hidden, hidden, rngs, k=k, stride=stride, groups=hidden,
                                act=act)
        self.se = SqueezeExcite(hidden, max(1, cin // 4), rngs)
        self.project = ConvBN(hidden, cout, rngs, k=1)
        self.residual = stride == 1 and cin == cout

    def __call__(self, x):
        y = self.expand(x) if self.expand is not None else x
        y = self.project(self.se(self.depthwise(y)))
        return x + y if self.residual else y


B0 = ((1, 3, 1, 32, 16, 1), (6, 3, 2, 16, 24, 2), (6, 5, 2, 24, 40, 2), (6, 3, 2, 40, 80, 3),
      (6, 5, 1, 80, 112, 3), (6, 5, 2, 112, 192, 4), (6, 3, 1, 192, 320, 1))


class EfficientNetB0(nnx.Module):
    def __init__(self, rngs, num_classes=10, slip=None):
        self.stem = ConvBN(3, 32, rngs, stride=2, act=jax.nn.silu)
        blocks = []
        for i, (e, k, s, cin, cout, n) in enumerate(B0):
            for j in range(n):
                blocks.append(MBConv(cin if j == 0 else cout, cout, k, s if j == 0 else 1, e,
                                     rngs, slip if (i, j) == (3, 1) else None))
        self.blocks = nnx.List(blocks)
        self.top = ConvBN(320, 1280, rngs, k=1, act=jax.nn.silu)
        self.head = nnx.Linear(1280, num_classes, rngs=rngs)

    def __call__(self, x):
        x = self.stem(x)
        for block in self.blocks:
            x = block(x)
        return self.head(self.top(x).mean(axis=(1, 2)))


# --- MobileNetV2, keeping torchvision's top-level names ----------------------------------------

class InvertedResidual(nnx.Module):
    def __init__(self, cin, cout, stride, t, rngs, slip=None):
        hidden = cin * t
        self.expand = ConvBN(cin, hidden, rngs, k=1, act=jax.nn.relu6) if t != 1 else None
        self.depthwise = ConvBN(hidden, hidden, rngs, stride=stride, groups=hidden,
                                act=jax.nn.relu6,
                                padding="SAME" if slip == "same padding" else None)
        self.project = ConvBN(hidden, cout, rngs, k=1)
        self.residual = stride == 1 and cin == cout

    def __call__(self, x):
        y = self.expand(x) if self.expand is not None else x
        y = self.project(self.depthwise(y))
        return x + y if self.residual else y


class MobileNetV2(nnx.Module):
    """``features`` a list and ``classifier`` as torchvision's, Flax's names inside."""

    def __init__(self, rngs, num_classes=10, slip=None):
        features, cin = [ConvBN(3, 32, rngs, stride=2, act=jax.nn.relu6)], 32
        for t, c, n, s in ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2),
                           (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1)):
            for j in range(n):
                features.append(InvertedResidual(cin, c, s if j == 0 else 1, t, rngs,
                                                 slip if len(features) == 2 else None))
                cin = c
        features.append(ConvBN(cin, 1280, rngs, k=1, act=jax.nn.relu6))
        self.features = nnx.List(features)
        self.classifier = nnx.Linear(1280, num_classes, rngs=rngs)

    def __call__(self, x):
        for f in self.features:
            x = f(x)
        return self.classifier(x.mean(axis=(1, 2)))


# --- ConvNeXt, the official repo's names -------------------------------------------------------

class CNBlock(nnx.Module):
    """dwconv, norm, pwconv1, pwconv2 and the LayerScale (``(dim,)`` where torchvision's
    ``layer_scale`` is ``(dim, 1, 1)``), named ``scale_name`` (the official repo: gamma)."""

    def __init__(self, dim, rngs, slip=None, scale_name="layer_scale"):
        self.dwconv = nnx.Conv(dim, dim, (7, 7), padding=((3, 3), (3, 3)),
                               feature_group_count=dim, rngs=rngs)
        self.norm = nnx.LayerNorm(dim, epsilon=1e-6, rngs=rngs)
        self.pwconv1 = nnx.Linear(dim, 4 * dim, rngs=rngs)
        self.pwconv2 = nnx.Linear(4 * dim, dim, rngs=rngs)
        setattr(self, scale_name, nnx.Param(jnp.full((dim,), 0.5)))
        self.scale_name, self.approximate = scale_name, slip == "tanh gelu"

    def __call__(self, x):
        y = jax.nn.gelu(self.pwconv1(self.norm(self.dwconv(x))), approximate=self.approximate)
        return x + getattr(self, self.scale_name)[...] * self.pwconv2(y)


class Downsample(nnx.Module):
    def __init__(self, cin, cout, rngs):
        self.norm = nnx.LayerNorm(cin, epsilon=1e-6, rngs=rngs)
        self.conv = nnx.Conv(cin, cout, (2, 2), strides=2, padding="VALID", rngs=rngs)

    def __call__(self, x):
        return self.conv(self.norm(x))


class ConvNeXt(nnx.Module):
    def __init__(self, rngs, dims=(16, 32), depths=(2, 2), num_classes=10, slip=None):
        self.stem = nnx.Conv(3, dims[0], (4, 4), strides=4, padding="VALID", rngs=rngs)
        self.stem_norm = nnx.LayerNorm(dims[0], epsilon=1e-6, rngs=rngs)
        self.stages = nnx.List([nnx.List([CNBlock(d, rngs, slip if (i, j) == (1, 1) else None)
                                          for j in range(n)])
                                for i, (d, n) in enumerate(zip(dims, depths))])
        self.downsamples = nnx.List([Downsample(a, b, rngs) for a, b in zip(dims, dims[1:])])
        self.norm = nnx.LayerNorm(dims[-1], epsilon=1e-6, rngs=rngs)
        self.head = nnx.Linear(dims[-1], num_classes, rngs=rngs)

    def __call__(self, x):
        x = self.stem_norm(self.stem(x))
        for i, stage in enumerate(self.stages):
            if i:
                x = self.downsamples[i - 1](x)
            for block in stage:
                x = block(x)
        return self.head(self.norm(x.mean(axis=(1, 2))))


# --- VisionTransformer, timm's / big_vision's names --------------------------------------------

VIT = dict(image_size=32, patch_size=8, num_layers=2, num_heads=4, hidden_dim=64, mlp_dim=128,
           num_classes=10)


class Mlp(nnx.Module):
    def __init__(self, d, hidden, rngs):
        self.fc1 = nnx.Linear(d, hidden, rngs=rngs)
        self.fc2 = nnx.Linear(hidden, d, rngs=rngs)

    def __call__(self, x):
        return self.fc2(jax.nn.gelu(self.fc1(x), approximate=False))


class EncoderBlock(nnx.Module):
    def __init__(self, d, heads, hidden, rngs):
        self.norm1 = nnx.LayerNorm(d, epsilon=1e-6, use_fast_variance=False, rngs=rngs)
        self.attn = nnx.MultiHeadAttention(heads, d, decode=False, rngs=rngs)
        self.norm2 = nnx.LayerNorm(d, epsilon=1e-6, use_fast_variance=False, rngs=rngs)
        self.mlp = Mlp(d, hidden, rngs)

    def __call__(self, x):
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class Encoder(nnx.Module):
    def __init__(self, seq, d, heads, hidden, layers, rngs):
        self.pos_embed = nnx.Param(jnp.zeros((1, seq, d)))
        self.blocks = nnx.List([EncoderBlock(d, heads, hidden, rngs) for _ in range(layers)])
        self.norm = nnx.LayerNorm(d, epsilon=1e-6, use_fast_variance=False, rngs=rngs)

    def __call__(self, x):
        x = x + self.pos_embed[...]
        for block in self.blocks:
            x = block(x)
        return self.norm(x)


class ViT(nnx.Module):
    """The class token on the model itself (torchvision's ``class_token``), the position
    embedding on the encoder (``pos_embedding``), under other names."""

    def __init__(self, rngs, slip=None, image_size=32, patch_size=8, num_layers=2, num_heads=4,
                 hidden_dim=64, mlp_dim=128, num_classes=10):
        seq = (image_size // patch_size) ** 2 + 1
        self.patch_embed = nnx.Conv(3, hidden_dim, (patch_size, patch_size),
                                    strides=patch_size, padding="VALID", rngs=rngs)
        self.cls_token = nnx.Param(jnp.zeros((1, 1, hidden_dim)))
        self.encoder = Encoder(seq, hidden_dim, num_heads, mlp_dim, num_layers, rngs)
        self.head = nnx.Linear(hidden_dim, num_classes, rngs=rngs)
        self.slip, self.d = slip, hidden_dim

    def __call__(self, x):  # (N, H, W, 3)
        x = self.patch_embed(x)
        n = x.shape[0]
        x = x.reshape(n, -1, self.d)
        cls = jnp.broadcast_to(self.cls_token[...], (n, 1, self.d))
        if self.slip == "cls token last":
            x = jnp.concatenate([x, cls], axis=1)
        else:
            x = jnp.concatenate([cls, x], axis=1)
        return self.head(self.encoder(x)[:, 0])


# --- timm's VisionTransformer (LayerScale), big_vision's names ----------------------------------

TIMM_VIT = dict(img_size=32, patch_size=8, embed_dim=64, depth=2, num_heads=4, mlp_ratio=2.0,
                num_classes=10, init_values=1e-5)


class Scale(nnx.Module):
    """timm's LayerScale: one vector, multiplied in."""

    def __init__(self, dim, value):
        self.scale = nnx.Param(jnp.full((dim,), value))

    def __call__(self, x):
        return x * self.scale[...]


class TimmBlock(nnx.Module):
    def __init__(self, d, heads, hidden, rngs):
        self.ln1 = nnx.LayerNorm(d, epsilon=1e-6, use_fast_variance=False, rngs=rngs)
        self.attn = nnx.Dict(qkv=nnx.Linear(d, 3 * d, rngs=rngs), out=nnx.Linear(d, d, rngs=rngs))
        self.scale1 = Scale(d, 1e-5)
        self.ln2 = nnx.LayerNorm(d, epsilon=1e-6, use_fast_variance=False, rngs=rngs)
        self.mlp = Mlp(d, hidden, rngs)
        self.scale2 = Scale(d, 1e-5)
        self.heads = heads

    def attention(self, x):
        b, n, d = x.shape
        qkv = self.attn["qkv"](x).reshape(b, n, 3, self.heads, d // self.heads)
        q, k, v = qkv.transpose(2, 0, 3, 1, 4)
        w = jax.nn.softmax(q @ k.transpose(0, 1, 3, 2) / jnp.sqrt(d // self.heads), axis=-1)
        return self.attn["out"]((w @ v).transpose(0, 2, 1, 3).reshape(b, n, d))

    def __call__(self, x):
        x = x + self.scale1(self.attention(self.ln1(x)))
        return x + self.scale2(self.mlp(self.ln2(x)))


class TimmViT(nnx.Module):
    """timm's ``cls_token`` and ``pos_embed`` on the model itself (their names kept: a module
    holding two parameters pairs them by name), the rest named as big_vision does."""

    def __init__(self, rngs, img_size=32, patch_size=8, embed_dim=64, depth=2, num_heads=4,
                 mlp_ratio=2.0, num_classes=10, init_values=1e-5):
        d, n = embed_dim, (img_size // patch_size) ** 2
        self.embedding = nnx.Conv(3, d, (patch_size, patch_size), strides=patch_size,
                                  padding="VALID", rngs=rngs)
        self.cls_token = nnx.Param(jnp.zeros((1, 1, d)))
        self.pos_embed = nnx.Param(jnp.zeros((1, n + 1, d)))
        self.encoder = nnx.List([TimmBlock(d, num_heads, int(d * mlp_ratio), rngs)
                                 for _ in range(depth)])
        self.encoder_norm = nnx.LayerNorm(d, epsilon=1e-6, use_fast_variance=False, rngs=rngs)
        self.head = nnx.Linear(d, num_classes, rngs=rngs)

    def __call__(self, x):  # (N, H, W, 3)
        x = self.embedding(x)
        b, d = x.shape[0], x.shape[-1]
        x = x.reshape(b, -1, d)
        x = jnp.concatenate([jnp.broadcast_to(self.cls_token[...], (b, 1, d)), x], axis=1)
        x = x + self.pos_embed[...]
        for block in self.encoder:
            x = block(x)
        return self.head(self.encoder_norm(x)[:, 0])
