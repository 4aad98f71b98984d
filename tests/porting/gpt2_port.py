"""A GPT-2 port written the way a Flax user writes it (HF's module names, the tied head
through ``nnx.Embed.attend``), with its realistic slips; no torch here, so that a plan can
load a checkpoint into it on a machine without torch."""

import math

import jax
import jax.numpy as jnp
from flax import nnx

CONFIG = dict(vocab_size=64, n_positions=16, n_embd=32, n_layer=2, n_head=4, resid_pdrop=0.0,
              embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=0, eos_token_id=0)


class Attention(nnx.Module):
    def __init__(self, d, heads, rngs, slip):
        self.c_attn = nnx.Linear(d, 3 * d, rngs=rngs)
        self.c_proj = nnx.Linear(d, d, rngs=rngs)
        self.heads, self.slip = heads, slip

    def __call__(self, x, mask):
        b, t, d = x.shape
        q, k, v = jnp.split(self.c_attn(x), 3, axis=-1)
        if self.slip == "swapped q/k":
            q, k = k, q

        def split(z):
            return z.reshape(b, t, self.heads, d // self.heads).transpose(0, 2, 1, 3)
        q, k, v = split(q), split(k), split(v)
        scores = q @ k.transpose(0, 1, 3, 2) / math.sqrt(d // self.heads)
        keep = jnp.tril(jnp.ones((t, t), bool))[None, None]
        if self.slip != "mask ignored":
            keep = keep & (mask[:, None, None, :] > 0)
        scores = jnp.where(keep, scores, jnp.finfo(scores.dtype).min)
        out = jax.nn.softmax(scores, axis=-1) @ v
        return self.c_proj(out.transpose(0, 2, 1, 3).reshape(b, t, d))


class MLP(nnx.Module):
    def __init__(self, d, rngs):
        self.c_fc = nnx.Linear(d, 4 * d, rngs=rngs)
        self.c_proj = nnx.Linear(4 * d, d, rngs=rngs)

    def __call__(self, x):
        return self.c_proj(jax.nn.gelu(self.c_fc(x), approximate=True))  # HF's gelu_new


class Block(nnx.Module):
    def __init__(self, d, heads, rngs, slip):
        self.ln_1 = nnx.LayerNorm(d, epsilon=1e-5, rngs=rngs)
        self.attn = Attention(d, heads, rngs, slip)
        self.ln_2 = nnx.LayerNorm(d, epsilon=1e-5, rngs=rngs)
        self.mlp = MLP(d, rngs)

    def __call__(self, x, mask):
        x = x + self.attn(self.ln_1(x), mask)
        return x + self.mlp(self.ln_2(x))


class Transformer(nnx.Module):
    def __init__(self, rngs, slip):
        d = CONFIG["n_embd"]
        self.wte = nnx.Embed(CONFIG["vocab_size"], d, rngs=rngs)
        self.wpe = nnx.Embed(CONFIG["n_positions"], d, rngs=rngs)
        self.h = nnx.List([Block(d, CONFIG["n_head"], rngs, slip)
                           for _ in range(CONFIG["n_layer"])])
        self.ln_f = nnx.LayerNorm(d, epsilon=1e-5, rngs=rngs)
        self.slip = slip

    def __call__(self, ids, mask):
        x = self.wte(ids) + self.wpe(jnp.arange(ids.shape[1]))[None]
        for block in self.h:
            x = block(x, mask)
        return x if self.slip == "ln_f forgotten" else self.ln_f(x)


class GPT2(nnx.Module):
    """The port: the logits through the tied embedding (no head of its own)."""

    def __init__(self, rngs, slip=None):
        self.transformer = Transformer(rngs, slip)

    def __call__(self, input_ids, attention_mask, use_cache=False):
        return self.transformer.wte.attend(self.transformer(input_ids, attention_mask))
