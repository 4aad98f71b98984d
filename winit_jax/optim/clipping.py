"""torch's gradient clipping as optax transformations (``torch.nn.utils.clip_grad_*``).

``optax.clip_by_global_norm`` scales by ``max_norm / norm`` when the norm exceeds
``max_norm``; torch always scales by ``min(1, max_norm / (norm + 1e-6))``, so the two
differ (slightly) whenever a step is clipped. These follow torch.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

TORCH_CLIP_EPS = 1e-6  # torch/nn/utils/clip_grad.py: clip_coef = max_norm / (total_norm + 1e-6)


def clip_grad_norm(max_norm: float, *, norm_type: float = 2.0) -> optax.GradientTransformation:
    """``torch.nn.utils.clip_grad_norm_(parameters, max_norm, norm_type)`` over every leaf.

    Args:
      max_norm: the largest norm the gradients keep.
      norm_type: the p of the p-norm over all gradients together (``float("inf")``: the
        largest magnitude). torch takes each tensor's norm, then the norm of those.

    Returns:
      An ``optax.GradientTransformation`` (stateless).

    Examples:
        tx = optax.chain(clip_grad_norm(1.0), optax.sgd(0.1))
    """
    max_norm, norm_type = float(max_norm), float(norm_type)
    if not max_norm >= 0 or not norm_type > 0:
        raise ValueError(f"clip_grad_norm: max_norm {max_norm} and norm_type {norm_type} "
                         "must be >= 0 and > 0")

    def norm(x):
        x = jnp.abs(jnp.ravel(x))
        if norm_type == float("inf"):
            return jnp.max(x)
        if norm_type == 2.0:
            return jnp.sqrt(jnp.sum(x * x))
        return jnp.sum(x ** norm_type) ** (1 / norm_type)

    def update(updates, state, params=None):
        leaves = jax.tree_util.tree_leaves(updates)
        if not leaves:
            return updates, state
        total = norm(jnp.stack([norm(g) for g in leaves]))
        scale = jnp.minimum(max_norm / (total + TORCH_CLIP_EPS), 1.0)
        return jax.tree_util.tree_map(lambda g: g * scale.astype(g.dtype), updates), state

    return optax.GradientTransformation(lambda params: optax.EmptyState(), update)


def clip_grad_value(clip_value: float) -> optax.GradientTransformation:
    """``torch.nn.utils.clip_grad_value_(parameters, clip_value)``: each element into
    ``[-clip_value, clip_value]``.

    Examples:
        tx = optax.chain(clip_grad_value(0.5), optax.sgd(0.1))
    """
    clip_value = float(clip_value)
    if not clip_value >= 0:
        raise ValueError(f"clip_grad_value: clip_value {clip_value} must be >= 0")
    return optax.clip(clip_value)
