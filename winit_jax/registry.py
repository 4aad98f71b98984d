"""The one table of initialisation schemes, read by JAX, torch, the CLI and tests.

Each row names the JAX initialiser, the PyTorch reference function (by name in
``reference_torch.init``, resolved lazily so that a JAX user never imports
torch), and the theoretical weight variance as a function of fan_in, written
from the notebooks' formulas rather than from the implementation.
"""

from __future__ import annotations

import dataclasses
import importlib
import math
from collections.abc import Callable

from winit_jax import initializers


@dataclasses.dataclass(frozen=True)
class Scheme:
    """One initialisation scheme.

    Attributes:
      name: registry key, as given to ``--schemes``.
      label: the formula a person reads, e.g. "N(0, sqrt(2/fan_in))".
      notebook: which notebook uses it ("A" or "B").
      distribution: "normal" or "uniform" (of the weights, untruncated).
      var_w: theoretical Var[w] as a function of fan_in.
      jax_init: zero-argument factory of the ``init(key, shape, dtype)``.
      torch_name: function name in ``reference_torch.init``.
      torch_args: positional arguments of that function.
    """

    name: str
    label: str
    notebook: str
    distribution: str
    var_w: Callable[[int], float]
    jax_init: Callable[[], Callable]
    torch_name: str
    torch_args: tuple = ()

    def bound(self, fan_in: int) -> float:
        """Support bound b of a uniform scheme, U(-b, b): b = sqrt(3 Var[w])."""
        if self.distribution != "uniform":
            raise ValueError(f"scheme {self.name!r} is not uniform")
        return math.sqrt(3.0 * self.var_w(fan_in))

    def torch_init(self):
        """The reference's function for ``model.apply`` (imports torch)."""
        module = importlib.import_module("reference_torch.init")
        return getattr(module, self.torch_name)(*self.torch_args)


UNIFORM_SIGMA = 0.01  # notebook A: init_layer_uniform(0.01)

SCHEMES: dict[str, Scheme] = {s.name: s for s in (
    Scheme("uniform", f"U(-{UNIFORM_SIGMA}, {UNIFORM_SIGMA})", "A", "uniform",
           var_w=lambda n: UNIFORM_SIGMA ** 2 / 3,
           jax_init=lambda: initializers.symmetric_uniform(UNIFORM_SIGMA),
           torch_name="init_layer_uniform", torch_args=(UNIFORM_SIGMA,)),
    Scheme("he_normal", "N(0, sqrt(2/fan_in))", "A", "normal",
           var_w=lambda n: 2.0 / n, jax_init=initializers.he_normal,
           torch_name="init_layer_norm_gauss"),
    Scheme("he_uniform", "U(+-sqrt(6/fan_in))", "A", "uniform",
           var_w=lambda n: 2.0 / n, jax_init=initializers.he_uniform,
           torch_name="init_layer_norm_uniform"),
    Scheme("lecun_normal", "N(0, 1/sqrt(fan_in))", "B", "normal",
           var_w=lambda n: 1.0 / n, jax_init=initializers.lecun_normal,
           torch_name="init_layer_simplified_kaiming"),
    Scheme("standard_normal", "N(0, 1)", "B", "normal",
           var_w=lambda n: 1.0, jax_init=initializers.standard_normal,
           torch_name="init_layer_standard_normal"),
)}

NOTEBOOK_A = ("uniform", "he_normal", "he_uniform")


def get_scheme(name: str) -> Scheme:
    """Returns the registered scheme, or raises ValueError listing the known names."""
    try:
        return SCHEMES[name]
    except (KeyError, TypeError):
        raise ValueError(
            f"unknown scheme {name!r}; known schemes: {', '.join(SCHEMES)}") from None
