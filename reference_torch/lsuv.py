"""The twin of ``winit_jax.lsuv``: LSUV on any torch model's ``nn.Linear`` layers, via hooks.

One forward pass of the model on the batch: a forward pre-hook on every ``nn.Linear``
rescales that layer on its actual input before its first call, so layer l sees layers
< l already rescaled (the JAX version's order: the order the model calls its layers).
The rescaling loop reruns only that layer. The rule, the variance (over all entries,
population) and the bias centring are those of the JAX version.
"""

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from winit_jax.lsuv import MAX_ITER, TOL, LSUVError


def _check(layer, it, v, tol, max_iter):
    """The paper's acceptance test, |Var(y) - 1| <= tol, with the library's error type."""
    if abs(v - 1) <= tol:
        return
    why = ("its output is constant on the batch" if v == 0 else
           "its output is not finite" if not math.isfinite(v) else
           f"after {it} of {max_iter} rescalings")
    raise LSUVError(f"LSUV did not converge: layer {layer} has output variance {v:.6g} "
                    f"(tol {tol}): {why}")


@torch.no_grad()
def lsuv(model: nn.Module, x, *, tol=TOL, max_iter=MAX_ITER, center_bias=False):
    """LSUV on every ``nn.Linear`` of ``model``, in call order; returns [(iterations, variance)]
    per layer; raises ``LSUVError`` as the JAX version, leaving ``model`` as it was."""
    x = torch.as_tensor(x)
    backup = {k: v.clone() for k, v in model.state_dict().items()}
    results, done = [], set()

    def calibrate(layer, inputs):  # before the layer's first call, on its actual input
        if id(layer) in done:
            return
        done.add(id(layer))
        h = inputs[0]

        def measure():
            y = F.linear(h, layer.weight, layer.bias)
            if center_bias:
                mean = y.mean(dim=0)
                layer.bias -= mean
                y = y - mean
            return y.var(unbiased=False).item()

        v, it = measure(), 0
        while abs(v - 1) > tol and it < max_iter and 0 < v < float("inf"):
            layer.weight /= torch.sqrt(torch.tensor(v, dtype=layer.weight.dtype))
            v, it = measure(), it + 1
        results.append((it, v))
        _check(len(results), it, v, tol, max_iter)

    handles = [m.register_forward_pre_hook(calibrate) for m in model.modules()
               if isinstance(m, nn.Linear)]
    try:
        model(x)  # one pass: each layer calibrated in call order
    except Exception:
        model.load_state_dict(backup)
        raise
    finally:
        for handle in handles:
            handle.remove()
    return results
