"""torch's optimisers, LR schedulers and gradient clipping, translated exactly to optax
for an nnx port of a torch model (``from_torch``), and torch's clipping on its own
(``clip_grad_norm``, ``clip_grad_value``). optax and torch are needed only here."""

from winit_jax.optim.clipping import clip_grad_norm as clip_grad_norm
from winit_jax.optim.clipping import clip_grad_value as clip_grad_value
from winit_jax.optim.translate import from_torch as from_torch

__all__ = ["clip_grad_norm", "clip_grad_value", "from_torch"]
