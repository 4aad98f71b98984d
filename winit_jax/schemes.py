"""The one table of initialisation schemes, read by the lab, the twin and the tests.

Each row names the JAX initialiser and the theoretical weight and bias variances as
functions of the fans, written from the papers' and notebooks' formulas rather than from
the implementation. A data-dependent scheme (LSUV) carries its calibration step; nobody
else asks which scheme it is. The PyTorch side of each row lives in the twin
(``reference_torch.init.SCHEME_INITS``, keyed by these names): the library knows no torch.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

from winit_jax import initializers, torch_draws


def _lsuv_model(model, batch, *, check: bool = True):
    from winit_jax import lsuv

    if check:
        lsuv.lsuv(model, batch)
    else:  # traceable (inside jit/vmap): no convergence check
        lsuv.apply_lsuv(model, batch)


def _lsuv_layer(h, w, b):
    from winit_jax.lsuv import lsuv_layer

    return lsuv_layer(h, w, b)[:2]


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
      var_b: theoretical Var[b] as a function of fan_in (0: zero biases).
      jax_bias_init: ``fan_in -> init`` for the bias; None for zeros.
      post_init: a data-dependent step after ``jax_init``: ``post_init(model, batch, *,
        check)`` rescales the model in place on a batch (``check``: raise if it fails;
        False inside jit). None: the scheme is data-independent.
      layer_post_init: the same step for one dense layer, ``(h, w, b) -> (w, b)`` with
        ``h`` the layer's input batch, for nets drawn layer by layer (a ``lax.scan``).
      target_var: the per-layer Var(y) the calibration leaves (then the theory); None:
        the fan formula predicts Var(y).
    """

    name: str
    label: str
    source: str
    distribution: str
    var_w: Callable[[int, int], float]
    jax_init: Callable[[], Callable]
    var_b: Callable[[int], float] = lambda fan_in: 0.0
    jax_bias_init: Callable[[int], Callable] | None = None
    post_init: Callable | None = None
    layer_post_init: Callable | None = None
    target_var: float | None = None

    def bound(self, fan_in: int, fan_out: int) -> float:
        """Support bound b of a uniform scheme, U(-b, b): b = sqrt(3 Var[w])."""
        if self.distribution != "uniform":
            raise ValueError(f"scheme {self.name!r} is not uniform")
        return math.sqrt(3.0 * self.var_w(fan_in, fan_out))

    def mlp_kwargs(self) -> dict:
        """``MLP(sizes, **scheme.mlp_kwargs(), rngs=...)``: its kernel and bias inits."""
        return {"kernel_init": self.jax_init(), "fan_in_bias_init": self.jax_bias_init}

    def calibrate(self, model, batch, *, check: bool = True) -> None:
        """Runs the scheme's data-dependent step on ``model`` (nothing for most schemes).

        Raises:
          ValueError: for a data-dependent scheme given no batch.
        """
        if self.post_init is None:
            return
        if batch is None:
            raise ValueError(f"scheme {self.name!r} is data-dependent: pass a batch")
        self.post_init(model, batch, check=check)

    def calibrate_layer(self, h, w, b):
        """``layer_post_init(h, w, b)``, or ``(w, b)`` unchanged."""
        return (w, b) if self.layer_post_init is None else self.layer_post_init(h, w, b)

    def var_y(self, fan_in: int, fan_out: int, e_x2: float) -> float:
        """Theoretical Var[y] = E[y^2] of a layer whose input has E[x^2] = ``e_x2``:
        ``fan_in Var[w] E[x^2] + Var[b]``, or the calibration's target."""
        if self.target_var is not None:
            return self.target_var
        return fan_in * self.var_w(fan_in, fan_out) * e_x2 + self.var_b(fan_in)


UNIFORM_SIGMA = 0.01  # notebook A: init_layer_uniform(0.01)
RELU_GAIN_SQ = 2.0  # 1 / E[relu(z)^2], z ~ N(0, 1) (He et al. 2015)

SCHEMES: dict[str, Scheme] = {s.name: s for s in (
    Scheme("uniform", f"U(-{UNIFORM_SIGMA}, {UNIFORM_SIGMA})", "A", "uniform",
           var_w=lambda n, m: UNIFORM_SIGMA ** 2 / 3,
           jax_init=lambda: initializers.symmetric_uniform(UNIFORM_SIGMA)),
    Scheme("he_normal", "N(0, sqrt(2/fan_in))", "A", "normal",
           var_w=lambda n, m: 2.0 / n, jax_init=initializers.he_normal),
    Scheme("he_uniform", "U(+-sqrt(6/fan_in))", "A", "uniform",
           var_w=lambda n, m: 2.0 / n, jax_init=initializers.he_uniform),
    Scheme("lecun_normal", "N(0, 1/sqrt(fan_in))", "B", "normal",
           var_w=lambda n, m: 1.0 / n, jax_init=initializers.lecun_normal),
    Scheme("standard_normal", "N(0, 1)", "B", "normal",
           var_w=lambda n, m: 1.0, jax_init=initializers.standard_normal),
    Scheme("glorot_normal", "N(0, sqrt(2/(fan_in+fan_out)))", "Glorot & Bengio 2010", "normal",
           var_w=lambda n, m: 2.0 / (n + m), jax_init=initializers.glorot_normal),
    Scheme("glorot_uniform", "U(+-sqrt(6/(fan_in+fan_out)))", "Glorot & Bengio 2010", "uniform",
           var_w=lambda n, m: 2.0 / (n + m), jax_init=initializers.glorot_uniform),
    # Each entry of a semi-orthogonal matrix has variance 1 / max(rows, columns).
    Scheme("orthogonal", "orthogonal, gain sqrt(2)", "Saxe et al. 2014", "orthogonal",
           var_w=lambda n, m: RELU_GAIN_SQ / max(n, m),
           jax_init=lambda: initializers.orthogonal(math.sqrt(RELU_GAIN_SQ))),
    Scheme("torch_default", "U(+-1/sqrt(fan_in)), bias too", "torch nn.Linear", "uniform",
           var_w=lambda n, m: 1.0 / (3 * n), jax_init=torch_draws.torch_linear_kernel,
           var_b=lambda n: 1.0 / (3 * n), jax_bias_init=torch_draws.torch_linear_bias),
    # var_w is the orthogonal start's; after LSUV each layer's Var(y) is 1 on its batch.
    Scheme("lsuv", "orthogonal, then LSUV: Var(y)=1", "Mishkin & Matas 2016", "orthogonal",
           var_w=lambda n, m: 1.0 / max(n, m), jax_init=lambda: initializers.orthogonal(1.0),
           post_init=_lsuv_model, layer_post_init=_lsuv_layer, target_var=1.0),
)}

def get_scheme(name: str) -> Scheme:
    """Returns the registered scheme, or raises ValueError listing the known names."""
    try:
        return SCHEMES[name]
    except (KeyError, TypeError):
        raise ValueError(
            f"unknown scheme {name!r}; known schemes: {', '.join(SCHEMES)}") from None
