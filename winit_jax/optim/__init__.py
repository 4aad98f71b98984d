"""torch's gradient clipping as optax transformations (``clip_grad_norm``,
``clip_grad_value``). The translation of a whole torch optimiser for a port is
``winit_jax.parity.translate_optimizer``."""

from winit_jax.optim.clipping import clip_grad_norm as clip_grad_norm
from winit_jax.optim.clipping import clip_grad_value as clip_grad_value

__all__ = ["clip_grad_norm", "clip_grad_value"]
