"""LSUV, layer-sequential unit-variance initialisation (Mishkin & Matas 2016, Algorithm 1).

Start from orthogonal weights; then, for each linear layer in order, on one batch of
real inputs: while |Var(y) - 1| > tol and fewer than ``max_iter`` rescalings,
``W <- W / sqrt(Var(y))``. ``Var`` is over all entries of the layer's output, as in the
paper's code. With ``center_bias``, the bias is first moved so that each unit's output
has mean 0 on the batch, and again after every rescaling.

``lsuv_layer`` is pure (jit, vmap and scan it); ``lsuv`` runs it on each layer of an
``MLP`` in one jitted call and checks convergence. The torch twin is ``reference_torch.lsuv``.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
from flax import nnx

TOL = 0.1      # the paper's Tol_var
MAX_ITER = 10  # the paper's T_max


class LayerResult(NamedTuple):
    """One layer's outcome: rescalings done, and the output variance after them."""

    iterations: jax.Array
    variance: jax.Array


class LSUVError(RuntimeError):
    """LSUV could not bring a layer's output variance to 1."""


def _measure(h, w, b, center_bias):
    y = h @ w + b
    if center_bias:
        mean = jnp.mean(y, axis=0)
        b, y = b - mean, y - mean
    return b, jnp.var(y)


def lsuv_layer(h, w, b, *, tol: float = TOL, max_iter: int = MAX_ITER, center_bias: bool = False):
    """Rescales one layer's kernel ``w`` (in, out) on its input batch ``h`` (N, in).

    Returns:
      ``(w, b, LayerResult)``; the layer converged when |variance - 1| <= tol. A zero or
      non-finite variance stops the loop at once (nothing to rescale).
    """
    b, v = _measure(h, w, b, center_bias)

    def cond(state):
        _, _, v, it = state
        return (jnp.abs(v - 1) > tol) & (it < max_iter) & (v > 0) & jnp.isfinite(v)

    def body(state):
        w, b, v, it = state
        w = w / jnp.sqrt(v).astype(w.dtype)
        b, v = _measure(h, w, b, center_bias)
        return w, b, v, it + 1

    w, b, v, it = jax.lax.while_loop(cond, body, (w, b, v, jnp.int32(0)))
    return w, b, LayerResult(it, v)


def apply_lsuv(model, x, *, tol: float = TOL, max_iter: int = MAX_ITER,
               center_bias: bool = False) -> list[LayerResult]:
    """LSUV on every layer of an ``MLP``, in place and traceable (no convergence check)."""
    h = x.astype(model.layers[0].kernel[...].dtype)
    results = []
    for i, layer in enumerate(model.layers):
        w, b, res = lsuv_layer(h, layer.kernel[...], layer.bias[...], tol=tol,
                               max_iter=max_iter, center_bias=center_bias)
        layer.kernel.set_value(w)
        layer.bias.set_value(b)
        results.append(res)
        y = h @ w + b
        h = model.activation(y) if i < len(model.layers) - 1 else y
    return results


@functools.partial(jax.jit, static_argnames=("graphdef", "max_iter", "center_bias"))
def _lsuv_jit(graphdef, state, x, tol, *, max_iter, center_bias):
    model = nnx.merge(graphdef, state)
    results = apply_lsuv(model, x, tol=tol, max_iter=max_iter, center_bias=center_bias)
    return nnx.state(model), results


def check_converged(results, tol: float, max_iter: int) -> None:
    """Raises ``LSUVError`` naming the first layer whose variance is not within ``tol`` of 1."""
    for i, (it, v) in enumerate(results):
        v = float(v)
        if not abs(v - 1) <= tol:
            why = ("its output is constant on the batch" if v == 0 else
                   "its output is not finite" if v != v or v == float("inf") else
                   f"after {int(it)} of {max_iter} rescalings")
            raise LSUVError(f"LSUV did not converge: layer {i + 1} has output variance "
                            f"{v:.6g} (tol {tol}): {why}")


def lsuv(model, x, *, tol: float = TOL, max_iter: int = MAX_ITER,
         center_bias: bool = False) -> list[LayerResult]:
    """Applies LSUV to every layer of a ``winit_jax.MLP`` on the batch ``x`` (one jitted call).

    Args:
      model: an ``MLP``, already initialised (orthogonally, in the paper).
      x: a batch of real inputs, shape (N, sizes[0]).
      tol: accepted |Var(y) - 1|.
      max_iter: rescalings allowed per layer.
      center_bias: also centre each unit's output on the batch through its bias.

    Returns:
      One ``LayerResult`` per layer; ``model``'s kernels (and biases) are updated.

    Raises:
      LSUVError: when a layer does not reach the tolerance; ``model`` is then left as it was.
      ValueError: for a batch of the wrong shape, a tol <= 0 or a max_iter < 1.

    Examples:
      >>> import jax, winit_jax as wj
      >>> from flax import nnx
      >>> mlp = wj.MLP((784, 50, 10), kernel_init=wj.orthogonal(), rngs=nnx.Rngs(0))
      >>> x = jax.random.uniform(jax.random.key(1), (100, 784))
      >>> [round(float(r.variance), 3) for r in lsuv(mlp, x, tol=1e-3)]
      [1.0, 1.0]
    """
    if not (isinstance(tol, (int, float)) and 0 < tol < float("inf")):
        raise ValueError(f"tol must be a finite positive number, got {tol!r}")
    if isinstance(max_iter, bool) or not isinstance(max_iter, int) or max_iter < 1:
        raise ValueError(f"max_iter must be an integer >= 1, got {max_iter!r}")
    x = jnp.asarray(x)
    if x.ndim != 2 or x.shape[1] != model.sizes[0] or x.shape[0] < 2:
        raise ValueError(f"x must be a batch of shape (N >= 2, {model.sizes[0]}), got {x.shape}")
    graphdef, state = nnx.split(model)
    state, results = _lsuv_jit(graphdef, state, x, tol, max_iter=max_iter,
                               center_bias=center_bias)
    check_converged(results, tol, max_iter)
    nnx.update(model, state)
    return results
