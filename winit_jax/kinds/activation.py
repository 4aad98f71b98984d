"""Activations with parameters: torch ``nn.PReLU`` <-> ``nnx.PReLU``.

``nnx.PReLU`` holds one slope (a scalar): it pairs with ``nn.PReLU(num_parameters=1)``
(weight (1,)); a per-channel torch PReLU is refused. torch draws the slope 0.25 (``init``),
Flax 0.01 by default.
"""

from __future__ import annotations

from flax import nnx

from winit_jax.kinds._base import Kind, ParityError, np_copy, register, value
from winit_jax.torch_draws import constant


def _to_flax(t, f):
    w = np_copy(t.weight)
    if w.size != 1:
        raise ParityError(f"PReLU(num_parameters={w.size}): nnx.PReLU holds one slope")
    return {"negative_slope": w.reshape(())}


def _to_torch(f, t):
    return {"weight": value(f.negative_slope).reshape(1)}


PRELU = register(Kind("PReLU", ("torch.nn.PReLU",), (nnx.PReLU,), _to_flax, _to_torch,
                      init=lambda layer: {"negative_slope": constant(0.25)}))
