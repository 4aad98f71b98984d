"""winit_jax: weight initialisation for JAX/Flax, checked against PyTorch.

The library a training script imports. The initialisers, exact gains and the scheme
registry need only jax and numpy; the pieces built on ``flax.nnx`` (models, LSUV,
``torch_like``, weight transfer) load on first use (PEP 562), so
``import winit_jax`` imports neither flax nor optax. The notebooks' experiments live in
``winit_jax.lab``; the PyTorch twin in ``reference_torch``.

Examples:
  >>> import jax, winit_jax as wj
  >>> wj.he_normal()(jax.random.key(0), (784, 512)).shape
  (784, 512)
"""

from __future__ import annotations

from importlib import metadata as _metadata

from winit_jax._lazy import lazy as _lazy
from winit_jax.activations import ACTIVATIONS as ACTIVATIONS
from winit_jax.activations import gain as gain
from winit_jax.activations import second_moment as second_moment
from winit_jax.initializers import compute_fans as compute_fans
from winit_jax.initializers import gain_normal as gain_normal
from winit_jax.initializers import gain_uniform as gain_uniform
from winit_jax.initializers import glorot_normal as glorot_normal
from winit_jax.initializers import glorot_uniform as glorot_uniform
from winit_jax.initializers import he_normal as he_normal
from winit_jax.initializers import he_uniform as he_uniform
from winit_jax.initializers import lecun_normal as lecun_normal
from winit_jax.initializers import lecun_uniform as lecun_uniform
from winit_jax.initializers import orthogonal as orthogonal
from winit_jax.initializers import standard_normal as standard_normal
from winit_jax.initializers import symmetric_uniform as symmetric_uniform
from winit_jax.initializers import variance_scaling as variance_scaling
from winit_jax.schemes import SCHEMES as SCHEMES
from winit_jax.schemes import Scheme as Scheme
from winit_jax.schemes import get_scheme as get_scheme
from winit_jax.torch_draws import torch_linear_bias as torch_linear_bias
from winit_jax.torch_draws import torch_linear_kernel as torch_linear_kernel

try:
    __version__ = _metadata.version("winit-jax")
except _metadata.PackageNotFoundError:  # a source tree that was never installed
    __version__ = "0+unknown"

# name -> module, imported on first access (they import flax).
_LAZY = {
    "MLP": "winit_jax.models",
    "LSUVError": "winit_jax.lsuv",
    "from_torch": "winit_jax.parity",
    "to_torch": "winit_jax.parity",
}
# Submodules reachable as attributes without an import statement (``wj.lsuv.lsuv(...)``).
_SUBMODULES = ("lsuv", "models", "optim", "parity")

__all__ = sorted([
    "ACTIVATIONS", "SCHEMES", "Scheme", "compute_fans", "gain", "gain_normal", "gain_uniform",
    "get_scheme", "glorot_normal", "glorot_uniform", "he_normal", "he_uniform", "lecun_normal",
    "lecun_uniform",
    "orthogonal", "second_moment", "standard_normal", "symmetric_uniform", "torch_linear_bias",
    "torch_linear_kernel", "variance_scaling", *_LAZY, *_SUBMODULES])


__getattr__, __dir__ = _lazy("winit_jax", _LAZY, _SUBMODULES)
