"""winit_jax: the weight-initialisation notebooks in JAX/Flax, with a PyTorch twin."""

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
from winit_jax.initializers import orthogonal as orthogonal
from winit_jax.initializers import standard_normal as standard_normal
from winit_jax.initializers import symmetric_uniform as symmetric_uniform
from winit_jax.initializers import torch_linear_bias as torch_linear_bias
from winit_jax.initializers import torch_linear_kernel as torch_linear_kernel
from winit_jax.initializers import variance_scaling as variance_scaling
from winit_jax.registry import SCHEMES as SCHEMES
from winit_jax.registry import Scheme as Scheme
from winit_jax.registry import get_scheme as get_scheme

from winit_jax.models import MLP as MLP
from winit_jax.train import RunResult as RunResult
from winit_jax.train import TrainConfig as TrainConfig
from winit_jax.train import train_and_evaluate as train_and_evaluate

__version__ = "0.1.0"
