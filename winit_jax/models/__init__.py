"""Model definitions in ``flax.nnx``: the notebooks' MLP, and torch models ported layer for
layer (torchvision's ResNet-18, torch's Transformer encoder layer) for ``torch_like`` and
``parity``."""

from winit_jax.models.mlp import MLP as MLP
from winit_jax.models.mlp import NOTEBOOK_A_SIZES as NOTEBOOK_A_SIZES
from winit_jax.models.mlp import NOTEBOOK_B_SIZES as NOTEBOOK_B_SIZES

from winit_jax.models.resnet import ResNet18 as ResNet18
from winit_jax.models.transformer import TransformerEncoderLayer as TransformerEncoderLayer

__all__ = ["MLP", "NOTEBOOK_A_SIZES", "NOTEBOOK_B_SIZES", "ResNet18", "TransformerEncoderLayer"]
