"""The one registry of layer kinds (see ``_base.Kind``), with the built-in kinds by family:
``linear`` (HF's Conv1D, Linear, LinearGeneral, Einsum, Conv, ConvTranspose, Embedding),
``norm``, ``attention``, ``activation`` (PReLU), ``recurrent`` (Flax's cells), ``cells``
(torch's RNN cells in nnx, with their kinds), ``parameters`` (bare parameters of any
module); ``stochastic`` (the layers that draw random numbers in train mode). A porter adds
a kind with ``winit_jax.parity.layer_kind`` (then ``kinds=``, ``registered`` or ``register``)."""

from winit_jax.kinds import _base
from winit_jax.kinds import activation as activation  # noqa: F401  (registers)
from winit_jax.kinds import attention as attention  # noqa: F401
from winit_jax.kinds import cells as cells  # noqa: F401
from winit_jax.kinds import linear as linear  # noqa: F401
from winit_jax.kinds import norm as norm  # noqa: F401
from winit_jax.kinds import parameters as parameters  # noqa: F401
from winit_jax.kinds import recurrent as recurrent  # noqa: F401
from winit_jax.kinds._base import Kind as Kind
from winit_jax.kinds._base import ParityError as ParityError
from winit_jax.kinds._base import at_path as at_path
from winit_jax.kinds._base import contiguous as contiguous
from winit_jax.kinds._base import flax_kinds as flax_kinds
from winit_jax.kinds._base import flax_variables as flax_variables
from winit_jax.kinds._base import init_rule as init_rule
from winit_jax.kinds._base import is_flax_layer as is_flax_layer
from winit_jax.kinds._base import is_param as is_param
from winit_jax.kinds._base import kind_for as kind_for
from winit_jax.kinds._base import kinds as kinds
from winit_jax.kinds._base import linear_types as linear_types
from winit_jax.kinds._base import np_copy as np_copy
from winit_jax.kinds._base import register as register
from winit_jax.kinds._base import registered as registered
from winit_jax.kinds._base import torch_kinds as torch_kinds
from winit_jax.kinds._base import torch_tensor_names as torch_tensor_names
from winit_jax.kinds._base import unregister as unregister

_base._BUILDING[0] = False  # from here on, register() is a porter's

__all__ = ["Kind", "ParityError", "at_path", "contiguous", "flax_kinds", "flax_variables", "init_rule", "is_flax_layer", "is_param", "kind_for", "kinds", "linear_types", "np_copy", "register", "registered", "torch_kinds", "torch_tensor_names", "unregister"]
