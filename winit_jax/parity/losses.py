"""Losses and metrics that take either framework's arrays, so one serves both sides of a
check: ``cross_entropy``, ``accuracy``, and the harness's default losses."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from winit_jax.kinds import np_copy


def cross_entropy(logits, labels, *, ignore_index: int = -100):
    """Mean softmax cross-entropy of integer ``labels``, in whichever framework ``logits``
    come from (``torch.nn.functional.cross_entropy`` or optax's), so one loss serves both.
    Logits (..., V) with labels (...): a sequence model's (B, T, V) and (B, T) too (torch's
    own function wants the classes on axis 1; the positions are flattened for it). Labels
    equal to ``ignore_index`` (torch's default -100: a masked LM's unmasked positions) count
    for nothing, the mean taken over the others, as torch does.

    Examples:
      >>> import jax.numpy as jnp
      >>> round(float(cross_entropy(jnp.zeros((2, 4)), jnp.array([0, 3]))), 4)  # log 4
      1.3863
      >>> round(float(cross_entropy(jnp.array([[0., 0.], [9., 0.]]), jnp.array([0, -100]))), 4)
      0.6931
    """
    if _is_torch(logits):
        import torch
        return torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]),
                                                 labels.reshape(-1), ignore_index=ignore_index)
    import jax.numpy as jnp
    import optax
    keep = labels != ignore_index
    per = optax.softmax_cross_entropy_with_integer_labels(logits, jnp.where(keep, labels, 0))
    return jnp.sum(jnp.where(keep, per, 0)) / jnp.sum(keep).astype(per.dtype)


def accuracy(logits, labels) -> float:
    """The fraction of ``labels`` that ``argmax(logits)`` gets right, in either framework."""
    def as_np(a):
        return np_copy(a) if hasattr(a, "detach") else np.asarray(a)
    return float(np.mean(np.argmax(as_np(logits), -1) == as_np(labels)))


def _is_torch(x) -> bool:
    return type(x).__module__.startswith("torch")


def target_loss(c_t):
    """The default loss with targets: cross-entropy for integer targets, else mean((y-c)^2)."""
    if c_t.is_floating_point():
        return lambda y, c: ((y - c) ** 2).mean()
    return cross_entropy


def regression_loss(y_t):
    """The default loss without targets: mean((y - c)^2) against a fixed N(0, 1) target c of
    the output's shape (seed 0), for the torch output ``y_t`` and the port's alike.

    Not the sum of squares of the output: after a final LayerNorm (a post-norm Transformer)
    sum(y^2) is nearly constant, its gradient is a cancellation of O(1) terms down to ~1e-5,
    and float32 rounding then differs by percents between the frameworks (measured: 2 %).
    A regression to a random target has no such degeneracy; the mean keeps SGD steps stable.
    """
    import torch

    target = np.random.default_rng(0).standard_normal(tuple(y_t.shape)).astype(
        str(y_t.dtype).removeprefix("torch."))

    def loss(y):
        c = torch.from_numpy(target) if _is_torch(y) else jnp.asarray(target)
        return ((y - c) ** 2).mean()
    return loss
