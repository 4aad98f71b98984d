"""The one table of initialisation schemes, read by JAX, torch, the CLI and tests.

Each row names the JAX initialiser, the PyTorch reference function (by name in
``reference_torch.init``, resolved lazily so that a JAX user never imports
torch), and the theoretical weight and bias variances as functions of the fans,
written from the papers' and notebooks' formulas rather than from the implementation.
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
      source: where it comes from: notebook "A" or "B", or the paper.
      distribution: "normal" (untruncated), "uniform" or "orthogonal" (of the weights).
      var_w: theoretical Var[w] as a function of (fan_in, fan_out).
      jax_init: zero-argument factory of the kernel's ``init(key, shape, dtype)``.
      torch_name: function name in ``reference_torch.init``.
      torch_args: positional arguments of that function.
      var_b: theoretical Var[b] as a function of fan_in (0: zero biases).
      jax_bias_init: ``fan_in -> init`` for the bias; None for zeros.
      lsuv: data-dependent: after ``jax_init``, LSUV rescales each layer on a batch
        (``winit_jax.lsuv``); the theory is then its target, Var(y^l) = 1.
    """

    name: str
    label: str
    source: str
    distribution: str
    var_w: Callable[[int, int], float]
    jax_init: Callable[[], Callable]
    torch_name: str
    torch_args: tuple = ()
    var_b: Callable[[int], float] = lambda fan_in: 0.0
    jax_bias_init: Callable[[int], Callable] | None = None
    lsuv: bool = False

    def bound(self, fan_in: int, fan_out: int) -> float:
        """Support bound b of a uniform scheme, U(-b, b): b = sqrt(3 Var[w])."""
        if self.distribution != "uniform":
            raise ValueError(f"scheme {self.name!r} is not uniform")
        return math.sqrt(3.0 * self.var_w(fan_in, fan_out))

    def mlp_kwargs(self) -> dict:
        """``MLP(sizes, **scheme.mlp_kwargs(), rngs=...)``: its kernel and bias inits."""
        return {"kernel_init": self.jax_init(), "fan_in_bias_init": self.jax_bias_init}

    def torch_init(self):
        """The reference's function for ``model.apply`` (imports torch)."""
        module = importlib.import_module("reference_torch.init")
        return getattr(module, self.torch_name)(*self.torch_args)


UNIFORM_SIGMA = 0.01  # notebook A: init_layer_uniform(0.01)
RELU_GAIN_SQ = 2.0  # 1 / E[relu(z)^2], z ~ N(0, 1) (He et al. 2015)

SCHEMES: dict[str, Scheme] = {s.name: s for s in (
    Scheme("uniform", f"U(-{UNIFORM_SIGMA}, {UNIFORM_SIGMA})", "A", "uniform",
           var_w=lambda n, m: UNIFORM_SIGMA ** 2 / 3,
           jax_init=lambda: initializers.symmetric_uniform(UNIFORM_SIGMA),
           torch_name="init_layer_uniform", torch_args=(UNIFORM_SIGMA,)),
    Scheme("he_normal", "N(0, sqrt(2/fan_in))", "A", "normal",
           var_w=lambda n, m: 2.0 / n, jax_init=initializers.he_normal,
           torch_name="init_layer_norm_gauss"),
    Scheme("he_uniform", "U(+-sqrt(6/fan_in))", "A", "uniform",
           var_w=lambda n, m: 2.0 / n, jax_init=initializers.he_uniform,
           torch_name="init_layer_norm_uniform"),
    Scheme("lecun_normal", "N(0, 1/sqrt(fan_in))", "B", "normal",
           var_w=lambda n, m: 1.0 / n, jax_init=initializers.lecun_normal,
           torch_name="init_layer_simplified_kaiming"),
    Scheme("standard_normal", "N(0, 1)", "B", "normal",
           var_w=lambda n, m: 1.0, jax_init=initializers.standard_normal,
           torch_name="init_layer_standard_normal"),
    Scheme("glorot_normal", "N(0, sqrt(2/(fan_in+fan_out)))", "Glorot & Bengio 2010", "normal",
           var_w=lambda n, m: 2.0 / (n + m), jax_init=initializers.glorot_normal,
           torch_name="init_layer_xavier", torch_args=("normal",)),
    Scheme("glorot_uniform", "U(+-sqrt(6/(fan_in+fan_out)))", "Glorot & Bengio 2010", "uniform",
           var_w=lambda n, m: 2.0 / (n + m), jax_init=initializers.glorot_uniform,
           torch_name="init_layer_xavier", torch_args=("uniform",)),
    # Each entry of a semi-orthogonal matrix has variance 1 / max(rows, columns).
    Scheme("orthogonal", "orthogonal, gain sqrt(2)", "Saxe et al. 2014", "orthogonal",
           var_w=lambda n, m: RELU_GAIN_SQ / max(n, m),
           jax_init=lambda: initializers.orthogonal(math.sqrt(RELU_GAIN_SQ)),
           torch_name="init_layer_orthogonal", torch_args=(math.sqrt(RELU_GAIN_SQ),)),
    Scheme("torch_default", "U(+-1/sqrt(fan_in)), bias too", "torch nn.Linear", "uniform",
           var_w=lambda n, m: 1.0 / (3 * n), jax_init=initializers.torch_linear_kernel,
           torch_name="init_layer_torch_default",
           var_b=lambda n: 1.0 / (3 * n), jax_bias_init=initializers.torch_linear_bias),
    # var_w is the orthogonal start's; after LSUV each layer's Var(y) is 1 on its batch.
    Scheme("lsuv", "orthogonal, then LSUV: Var(y)=1", "Mishkin & Matas 2016", "orthogonal",
           var_w=lambda n, m: 1.0 / max(n, m), jax_init=lambda: initializers.orthogonal(1.0),
           torch_name="init_layer_orthogonal", torch_args=(1.0,), lsuv=True),
)}

NOTEBOOK_A = ("uniform", "he_normal", "he_uniform")


def get_scheme(name: str) -> Scheme:
    """Returns the registered scheme, or raises ValueError listing the known names."""
    try:
        return SCHEMES[name]
    except (KeyError, TypeError):
        raise ValueError(
            f"unknown scheme {name!r}; known schemes: {', '.join(SCHEMES)}") from None
