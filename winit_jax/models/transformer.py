"""``torch.nn.TransformerEncoderLayer`` (post-norm, ReLU, batch_first) in ``flax.nnx``."""

from __future__ import annotations

from flax import nnx


class TransformerEncoderLayer(nnx.Module):
    """``nn.TransformerEncoderLayer(d_model, nhead, dim_feedforward, dropout=0.0,
    batch_first=True)``: x = norm1(x + self_attn(x)); x = norm2(x + linear2(relu(linear1(x)))).
    LayerNorm eps 1e-5 as torch (Flax's default is 1e-6); no dropout (a parity check runs
    without it). Inputs (batch, sequence, d_model).

    Examples:
      >>> import jax.numpy as jnp
      >>> from flax import nnx
      >>> layer = TransformerEncoderLayer(64, 4, rngs=nnx.Rngs(0))
      >>> layer(jnp.ones((2, 5, 64))).shape
      (2, 5, 64)
    """

    def __init__(self, d_model: int, nhead: int, dim_feedforward: int = 2048, *,
                 rngs: nnx.Rngs, param_dtype=None):
        import jax.numpy as jnp
        param_dtype = param_dtype or jnp.float32
        self.self_attn = nnx.MultiHeadAttention(
            num_heads=nhead, in_features=d_model, qkv_features=d_model, out_features=d_model,
            decode=False, param_dtype=param_dtype, rngs=rngs)
        self.linear1 = nnx.Linear(d_model, dim_feedforward, param_dtype=param_dtype, rngs=rngs)
        self.linear2 = nnx.Linear(dim_feedforward, d_model, param_dtype=param_dtype, rngs=rngs)
        # torch's variance is the two-pass form (Flax's default one-pass: see resnet.BN)
        self.norm1 = nnx.LayerNorm(d_model, epsilon=1e-5, use_fast_variance=False,
                                   param_dtype=param_dtype, rngs=rngs)
        self.norm2 = nnx.LayerNorm(d_model, epsilon=1e-5, use_fast_variance=False,
                                   param_dtype=param_dtype, rngs=rngs)

    def __call__(self, x):
        x = self.norm1(x + self.self_attn(x))
        return self.norm2(x + self.linear2(nnx.relu(self.linear1(x))))
