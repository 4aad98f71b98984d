"""Model definitions in ``flax.nnx``: the notebooks' MLP (more families join here)."""

from winit_jax.models.mlp import MLP as MLP
from winit_jax.models.mlp import NOTEBOOK_A_SIZES as NOTEBOOK_A_SIZES
from winit_jax.models.mlp import NOTEBOOK_B_SIZES as NOTEBOOK_B_SIZES

__all__ = ["MLP", "NOTEBOOK_A_SIZES", "NOTEBOOK_B_SIZES"]
