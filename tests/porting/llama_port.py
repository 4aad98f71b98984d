"""HF ``LlamaForCausalLM`` ported the way a Flax user coming from Meta's reference code writes
it: Meta's names (``tok_embeddings``, ``layers/i/attention/wq``, ``feed_forward/w1, w2, w3``,
``attention_norm``, ``ffn_norm``, ``output``), ``nnx.RMSNorm``, grouped-query attention,
rotate-half RoPE (HF's layout), with its realistic slips; no torch here."""

import jax
import jax.numpy as jnp
from flax import nnx

CONFIG = dict(vocab_size=64, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
              num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=32,
              rms_norm_eps=1e-6, tie_word_embeddings=False, attention_bias=False,
              bos_token_id=0, eos_token_id=0, pad_token_id=0)
THETA = 10000.0  # HF's default rope_theta


def rope(x, slip):
    """x (batch, heads, time, head_dim) rotated by its position, HF's rotate-half layout (the
    two halves of a head are the pairs); Meta's original pairs neighbours (``interleaved``)."""
    t, hd = x.shape[2], x.shape[3]
    inv = 1.0 / THETA ** (jnp.arange(0, hd, 2, dtype=jnp.float32) / hd)
    freqs = jnp.arange(t, dtype=jnp.float32)[:, None] * inv[None]
    if slip == "interleaved rope":
        cos, sin = jnp.cos(freqs).astype(x.dtype), jnp.sin(freqs).astype(x.dtype)
        a, b = x[..., 0::2], x[..., 1::2]
        return jnp.stack([a * cos - b * sin, a * sin + b * cos], axis=-1).reshape(x.shape)
    emb = jnp.concatenate([freqs, freqs], axis=-1)
    cos, sin = jnp.cos(emb).astype(x.dtype), jnp.sin(emb).astype(x.dtype)
    half = hd // 2
    rotated = jnp.concatenate([-x[..., half:], x[..., :half]], axis=-1)
    return x * cos + rotated * sin


class Attention(nnx.Module):
    def __init__(self, rngs, slip):
        d, h, kv = (CONFIG["hidden_size"], CONFIG["num_attention_heads"],
                    CONFIG["num_key_value_heads"])
        hd = d // h
        self.wq = nnx.Linear(d, h * hd, use_bias=False, rngs=rngs)
        self.wk = nnx.Linear(d, kv * hd, use_bias=False, rngs=rngs)
        self.wv = nnx.Linear(d, kv * hd, use_bias=False, rngs=rngs)
        self.wo = nnx.Linear(h * hd, d, use_bias=False, rngs=rngs)
        self.h, self.kv, self.hd, self.slip = h, kv, hd, slip

    def __call__(self, x):
        b, t, _ = x.shape

        def heads(z, n):
            return z.reshape(b, t, n, self.hd).transpose(0, 2, 1, 3)
        q = rope(heads(self.wq(x), self.h), self.slip)
        k = rope(heads(self.wk(x), self.kv), self.slip)
        v = heads(self.wv(x), self.kv)
        rep = self.h // self.kv
        if self.slip == "kv heads tiled":  # jnp.tile: head h uses kv head h % kv
            k, v = jnp.tile(k, (1, rep, 1, 1)), jnp.tile(v, (1, rep, 1, 1))
        else:  # HF's repeat_kv: head h uses kv head h // rep
            k, v = jnp.repeat(k, rep, axis=1), jnp.repeat(v, rep, axis=1)
        scores = q @ k.transpose(0, 1, 3, 2) / jnp.sqrt(jnp.asarray(self.hd, x.dtype))
        causal = jnp.tril(jnp.ones((t, t), bool))
        scores = jnp.where(causal, scores, jnp.finfo(scores.dtype).min)
        out = jax.nn.softmax(scores, axis=-1) @ v
        return self.wo(out.transpose(0, 2, 1, 3).reshape(b, t, self.h * self.hd))


class FeedForward(nnx.Module):
    def __init__(self, rngs, slip):
        d, f = CONFIG["hidden_size"], CONFIG["intermediate_size"]
        self.w1 = nnx.Linear(d, f, use_bias=False, rngs=rngs)  # gate
        self.w2 = nnx.Linear(f, d, use_bias=False, rngs=rngs)  # down
        self.w3 = nnx.Linear(d, f, use_bias=False, rngs=rngs)  # up
        self.slip = slip

    def __call__(self, x):
        gate, up = (self.w3, self.w1) if self.slip == "gate and up swapped" else (self.w1, self.w3)
        return self.w2(jax.nn.silu(gate(x)) * up(x))


class Block(nnx.Module):
    def __init__(self, rngs, slip):
        d = CONFIG["hidden_size"]
        eps = 1e-5 if slip == "rms eps 1e-5" else CONFIG["rms_norm_eps"]
        self.attention_norm = nnx.RMSNorm(d, epsilon=eps, rngs=rngs)
        self.attention = Attention(rngs, slip)
        self.ffn_norm = nnx.RMSNorm(d, epsilon=eps, rngs=rngs)
        self.feed_forward = FeedForward(rngs, slip)

    def __call__(self, x):
        x = x + self.attention(self.attention_norm(x))
        return x + self.feed_forward(self.ffn_norm(x))


class Llama(nnx.Module):
    def __init__(self, rngs, slip=None):
        d = CONFIG["hidden_size"]
        self.tok_embeddings = nnx.Embed(CONFIG["vocab_size"], d, rngs=rngs)
        self.layers = nnx.List([Block(rngs, slip) for _ in range(CONFIG["num_hidden_layers"])])
        self.norm = nnx.RMSNorm(d, epsilon=CONFIG["rms_norm_eps"], rngs=rngs)
        self.output = nnx.Linear(d, CONFIG["vocab_size"], use_bias=False, rngs=rngs)

    def __call__(self, input_ids, use_cache=False):
        x = self.tok_embeddings(input_ids)
        for layer in self.layers:
            x = layer(x)
        return self.output(self.norm(x))
