"""LSUV, layer-sequential unit-variance initialisation (Mishkin & Matas 2016, Algorithm 1).

Start from orthogonal weights; then, for each linear layer in the order the model calls
them, on one batch of real inputs: while |Var(y) - 1| > tol and fewer than ``max_iter``
rescalings, ``W <- W / sqrt(Var(y))``. ``Var`` is over all entries of the layer's output,
as in the paper's code. With ``center_bias``, the bias is first moved so that each unit's
output has mean 0 on the batch, and again after every rescaling.

``lsuv_layer`` is pure (jit, vmap and scan it); ``lsuv`` runs on every ``nnx.Linear`` and
``nnx.Conv`` of any ``nnx`` model (found with ``winit_jax.forward``) in one jitted call
and checks convergence. The torch twin is ``reference_torch.lsuv``.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
from flax import nnx

from winit_jax.forward import layer_io, watched_layers

TOL = 0.1      # the paper's Tol_var
MAX_ITER = 10  # the paper's T_max


class LayerResult(NamedTuple):
    """One layer's outcome: rescalings done, and the output variance after them."""

    iterations: jax.Array
    variance: jax.Array


class LSUVError(RuntimeError):
    """LSUV could not bring a layer's output variance to 1."""


def _centre(y, b, center_bias):
    """Moves each unit's mean on the batch (the last axis) into the bias."""
    if not center_bias or b is None:
        return b, y
    mean = jnp.mean(y.reshape(-1, y.shape[-1]), axis=0)
    return b - mean, y - mean


def _rescale(apply, w, b, *, tol, max_iter, center_bias):
    """The paper's loop on a layer whose output is ``apply(w, b)``."""
    b, y = _centre(apply(w, b), b, center_bias)
    v = jnp.var(y)

    def measure(w, b):
        b, y = _centre(apply(w, b), b, center_bias)
        return b, jnp.var(y)

    def cond(state):
        _, _, v, it = state
        return (jnp.abs(v - 1) > tol) & (it < max_iter) & (v > 0) & jnp.isfinite(v)

    def body(state):
        w, b, v, it = state
        w = w / jnp.sqrt(v).astype(w.dtype)
        b, v = measure(w, b)
        return w, b, v, it + 1

    w, b, v, it = jax.lax.while_loop(cond, body, (w, b, v, jnp.int32(0)))
    return w, b, LayerResult(it, v)


def lsuv_layer(h, w, b, *, tol: float = TOL, max_iter: int = MAX_ITER, center_bias: bool = False):
    """Rescales one dense layer's kernel ``w`` (in, out) on its input batch ``h`` (N, in).

    Returns:
      ``(w, b, LayerResult)``; the layer converged when |variance - 1| <= tol. A zero or
      non-finite variance stops the loop at once (nothing to rescale).
    """
    return _rescale(lambda w, b: h @ w + b, w, b, tol=tol, max_iter=max_iter,
                    center_bias=center_bias)


def _layer_apply(layer, h):
    """``(w, b) -> layer(h)`` with the kernel and bias replaced, as a pure function."""
    graphdef, state = nnx.split(layer)
    pure = nnx.to_pure_dict(state)

    def apply(w, b):  # a fresh module from plain arrays: nothing mutated across traces
        values = {**pure, "kernel": w, **({} if b is None else {"bias": b})}
        return nnx.merge(graphdef, values)(h)
    return apply


def apply_lsuv(model, x, *, tol: float = TOL, max_iter: int = MAX_ITER,
               center_bias: bool = False) -> list[LayerResult]:
    """LSUV on every Linear/Conv layer of ``model`` in call order, in place and traceable
    (no convergence check). ``x`` is what ``model`` is called with (a float batch is cast
    to the first layer's parameter dtype)."""
    layers = watched_layers(model)
    if not layers:
        raise ValueError(f"LSUV: {type(model).__name__} has no Linear or Conv layer")
    if jnp.issubdtype(x.dtype, jnp.floating):
        x = x.astype(layers[0][1].kernel[...].dtype)
    results, done = [], set()

    def calibrate(path, layer, h):  # before each layer's first call, on its actual input
        if id(layer) in done:
            return
        done.add(id(layer))
        bias = getattr(layer, "bias", None)
        b = None if bias is None else bias[...]
        w, b, res = _rescale(_layer_apply(layer, h), layer.kernel[...], b, tol=tol,
                             max_iter=max_iter, center_bias=center_bias)
        layer.kernel.set_value(w)
        if b is not None:
            layer.bias.set_value(b)
        results.append(res)

    layer_io(model, x, on_call=calibrate)  # one forward pass: layer l sees layers < l rescaled
    return results


@functools.partial(jax.jit, static_argnames=("graphdef", "max_iter", "center_bias"))
def _lsuv_jit(graphdef, state, x, tol, *, max_iter, center_bias):
    model = nnx.merge(graphdef, state)
    results = apply_lsuv(model, x, tol=tol, max_iter=max_iter, center_bias=center_bias)
    return nnx.state(model), results


def check_converged(results, tol: float, max_iter: int) -> None:
    """Raises ``LSUVError`` naming the first layer whose variance is not within ``tol`` of 1
    (layers are numbered from 1 in call order)."""
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
    """Applies LSUV to every Linear and Conv layer of an ``nnx`` model on the batch ``x``, in
    the order the model calls them (one jitted call).

    Args:
      model: any ``nnx.Module`` called as ``model(x)``, already initialised (orthogonally,
        in the paper).
      x: a batch of real inputs (N >= 2 rows).
      tol: accepted |Var(y) - 1|.
      max_iter: rescalings allowed per layer.
      center_bias: also centre each unit's output on the batch through its bias.

    Returns:
      One ``LayerResult`` per layer; ``model``'s kernels (and biases) are updated.

    Raises:
      LSUVError: when a layer does not reach the tolerance; ``model`` is then left as it was.
      ValueError: for a batch the model cannot take, a tol <= 0, a max_iter < 1, or a model
        with no Linear or Conv layer.

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
    sizes = getattr(model, "sizes", None)
    if x.ndim < 1 or x.shape[0] < 2 or (sizes is not None and x.shape[1:] != (sizes[0],)):
        want = f"(N >= 2, {sizes[0]})" if sizes is not None else "(N >= 2, ...)"
        raise ValueError(f"x must be a batch of shape {want}, got {x.shape}")
    if not watched_layers(model):
        raise ValueError(f"LSUV: {type(model).__name__} has no Linear or Conv layer")
    graphdef, state = nnx.split(model)
    state, results = _lsuv_jit(graphdef, state, x, tol, max_iter=max_iter,
                               center_bias=center_bias)
    check_converged(results, tol, max_iter)
    nnx.update(model, state)
    return results
