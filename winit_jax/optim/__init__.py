"""torch's optimisers and gradient clipping as optax transformations, exactly: ``sgd``,
``adam``, ``adamw``, ``rmsprop``, ``adagrad`` (torch's update rules and defaults; numbers or
schedules; NamedTuple states), ``replay`` (a recorded sequence as an optax schedule),
``clip_grad_norm`` and ``clip_grad_value``. Translating a whole torch optimiser (its param
groups, its scheduler) for a port is ``winit_jax.parity.translate_optimizer``, which
composes these."""

from winit_jax.optim.clipping import clip_grad_norm as clip_grad_norm
from winit_jax.optim.clipping import clip_grad_value as clip_grad_value
from winit_jax.optim.transforms import AdagradState as AdagradState
from winit_jax.optim.transforms import AdamState as AdamState
from winit_jax.optim.transforms import RMSpropState as RMSpropState
from winit_jax.optim.transforms import SGDState as SGDState
from winit_jax.optim.transforms import adagrad as adagrad
from winit_jax.optim.transforms import adam as adam
from winit_jax.optim.transforms import adamw as adamw
from winit_jax.optim.transforms import replay as replay
from winit_jax.optim.transforms import rmsprop as rmsprop
from winit_jax.optim.transforms import sgd as sgd

__all__ = ["AdagradState", "AdamState", "RMSpropState", "SGDState", "adagrad", "adam",
           "adamw", "clip_grad_norm", "clip_grad_value", "replay", "rmsprop", "sgd"]
