"""HF ``BertForMaskedLM`` ported the way a Flax user writes it: Flax's own names and nesting
(``embed/tokens``, ``layers/i/attn/query``, ``layers/i/mlp/fc1``, ``head/transform``), the
tied decoder through ``nnx.Embed.attend`` plus the head's own bias, with its realistic
slips; no torch here."""

import math

import jax
import jax.numpy as jnp
from flax import nnx

CONFIG = dict(vocab_size=64, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
              intermediate_size=128, max_position_embeddings=16, type_vocab_size=2,
              hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
EPS = 1e-12  # BERT's layer_norm_eps


class Embeddings(nnx.Module):
    def __init__(self, rngs):
        d = CONFIG["hidden_size"]
        self.tokens = nnx.Embed(CONFIG["vocab_size"], d, rngs=rngs)
        self.positions = nnx.Embed(CONFIG["max_position_embeddings"], d, rngs=rngs)
        self.types = nnx.Embed(CONFIG["type_vocab_size"], d, rngs=rngs)
        self.norm = nnx.LayerNorm(d, epsilon=EPS, rngs=rngs)

    def __call__(self, ids):
        x = self.tokens(ids) + self.types(jnp.zeros_like(ids))
        return self.norm(x + self.positions(jnp.arange(ids.shape[1]))[None])


class Attention(nnx.Module):
    def __init__(self, rngs, slip):
        d = CONFIG["hidden_size"]
        self.query = nnx.Linear(d, d, rngs=rngs)
        self.key = nnx.Linear(d, d, rngs=rngs)
        self.value = nnx.Linear(d, d, rngs=rngs)
        self.out = nnx.Linear(d, d, rngs=rngs)
        self.heads, self.slip = CONFIG["num_attention_heads"], slip

    def __call__(self, x, mask):
        b, t, d = x.shape

        def split(z):
            return z.reshape(b, t, self.heads, d // self.heads).transpose(0, 2, 1, 3)
        q, k, v = split(self.query(x)), split(self.key(x)), split(self.value(x))
        scale = d if self.slip == "scale by d" else d // self.heads
        scores = q @ k.transpose(0, 1, 3, 2) / math.sqrt(scale)
        scores = jnp.where(mask[:, None, None, :] > 0, scores, jnp.finfo(scores.dtype).min)
        out = jax.nn.softmax(scores, axis=-1) @ v
        return self.out(out.transpose(0, 2, 1, 3).reshape(b, t, d))


class MLP(nnx.Module):
    def __init__(self, rngs, slip):
        d, h = CONFIG["hidden_size"], CONFIG["intermediate_size"]
        self.fc1 = nnx.Linear(d, h, rngs=rngs)
        self.fc2 = nnx.Linear(h, d, rngs=rngs)
        self.slip = slip

    def __call__(self, x):
        return self.fc2(jax.nn.gelu(self.fc1(x), approximate=self.slip == "tanh gelu"))


class Layer(nnx.Module):
    """Post-norm, as BERT: x = norm(x + attn(x)); x = norm(x + mlp(x))."""

    def __init__(self, rngs, slip):
        d = CONFIG["hidden_size"]
        eps = 1e-5 if slip == "flax eps" else EPS
        self.attn = Attention(rngs, slip)
        self.attn_norm = nnx.LayerNorm(d, epsilon=eps, rngs=rngs)
        self.mlp = MLP(rngs, slip)
        self.mlp_norm = nnx.LayerNorm(d, epsilon=eps, rngs=rngs)

    def __call__(self, x, mask):
        x = self.attn_norm(x + self.attn(x, mask))
        return self.mlp_norm(x + self.mlp(x))


class Head(nnx.Module):
    def __init__(self, rngs):
        d = CONFIG["hidden_size"]
        self.transform = nnx.Linear(d, d, rngs=rngs)
        self.norm = nnx.LayerNorm(d, epsilon=EPS, rngs=rngs)
        self.bias = nnx.Param(jnp.zeros((CONFIG["vocab_size"],)))

    def __call__(self, x, embed):
        x = self.norm(jax.nn.gelu(self.transform(x), approximate=False))
        return embed.attend(x) + self.bias[...]


class BertMLM(nnx.Module):
    def __init__(self, rngs, slip=None):
        self.embed = Embeddings(rngs)
        self.layers = nnx.List([Layer(rngs, slip) for _ in range(CONFIG["num_hidden_layers"])])
        self.head = Head(rngs)

    def __call__(self, input_ids, attention_mask):
        x = self.embed(input_ids)
        for layer in self.layers:
            x = layer(x, attention_mask)
        return self.head(x, self.embed.tokens)


class UntiedHead(nnx.Module):
    """A realistic slip: the decoder a Linear of its own (weight and bias), where HF ties
    its weight to the word embeddings and its bias to the head's ``bias``."""

    def __init__(self, rngs):
        d = CONFIG["hidden_size"]
        self.transform = nnx.Linear(d, d, rngs=rngs)
        self.norm = nnx.LayerNorm(d, epsilon=EPS, rngs=rngs)
        self.decoder = nnx.Linear(d, CONFIG["vocab_size"], rngs=rngs)

    def __call__(self, x, embed):
        return self.decoder(self.norm(jax.nn.gelu(self.transform(x), approximate=False)))


class UntiedBertMLM(BertMLM):
    def __init__(self, rngs):
        super().__init__(rngs)
        self.head = UntiedHead(rngs)
