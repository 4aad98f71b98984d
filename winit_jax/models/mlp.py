"""The notebooks' MLPs as a ``flax.nnx`` module."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
from flax import nnx

NOTEBOOK_A_SIZES = (784, 512, 256, 128, 64, 10)
NOTEBOOK_B_SIZES = (784, 50, 1)


class MLP(nnx.Module):
    """Linear layers with ``activation`` between them; logits out, no final activation.

    Args:
      sizes: layer widths, input first, e.g. ``(784, 512, 256, 128, 64, 10)``.
      kernel_init: ``init(key, shape, dtype)`` for each (in, out) kernel.
      bias_init: biases; zero, as in the notebooks. Or, as ``fan_in_bias_init``, a
        function of the layer's fan_in returning the bias init (torch's default bias).
      activation: applied after every layer but the last.
      param_dtype: float32, or float64 with ``jax_enable_x64``.
      rngs: ``nnx.Rngs`` for the kernels.

    Examples:
      >>> import winit_jax as wj
      >>> from flax import nnx
      >>> mlp = wj.MLP((784, 50, 1), kernel_init=wj.lecun_normal(), rngs=nnx.Rngs(0))
      >>> mlp.sizes
      (784, 50, 1)
    """

    def __init__(self, sizes: Sequence[int], *, kernel_init: Callable,
                 bias_init: Callable = nnx.initializers.zeros_init(),
                 fan_in_bias_init: Callable[[int], Callable] | None = None,
                 activation: Callable = jax.nn.relu, param_dtype=jnp.float32, rngs: nnx.Rngs):
        sizes = tuple(int(s) for s in sizes)
        if len(sizes) < 2 or min(sizes) < 1:
            raise ValueError(f"sizes needs >= 2 positive widths, got {sizes}")
        self.sizes = sizes
        self.activation = activation
        self.layers = nnx.List([
            nnx.Linear(n_in, n_out, kernel_init=kernel_init,
                       bias_init=bias_init if fan_in_bias_init is None else fan_in_bias_init(n_in),
                       param_dtype=param_dtype, dtype=param_dtype, rngs=rngs)
            for n_in, n_out in zip(sizes[:-1], sizes[1:])])

    def __call__(self, x: jax.Array) -> jax.Array:
        for layer in self.layers[:-1]:
            x = self.activation(layer(x))
        return self.layers[-1](x)
