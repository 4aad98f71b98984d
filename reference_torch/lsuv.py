"""The twin of ``winit_jax.lsuv``: LSUV on any torch model's ``nn.Linear`` layers, via hooks.

For each layer in order, a forward pre-hook reads the layer's input on the batch (and
stops the forward pass there); the rescaling loop then reruns only that layer. The
rule, the variance (over all entries, population) and the bias centring are those of
the JAX version.
"""

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from winit_jax.lsuv import MAX_ITER, TOL, LSUVError


class _Stop(Exception):
    pass


def _check(layer, it, v, tol, max_iter):
    """The paper's acceptance test, |Var(y) - 1| <= tol, with the library's error type."""
    if abs(v - 1) <= tol:
        return
    why = ("its output is constant on the batch" if v == 0 else
           "its output is not finite" if not math.isfinite(v) else
           f"after {it} of {max_iter} rescalings")
    raise LSUVError(f"LSUV did not converge: layer {layer} has output variance {v:.6g} "
                    f"(tol {tol}): {why}")


def _layer_input(model, layer, x):
    seen = {}

    def hook(module, inputs):
        seen["h"] = inputs[0]
        raise _Stop

    handle = layer.register_forward_pre_hook(hook)
    try:
        model(x)
    except _Stop:
        pass
    finally:
        handle.remove()
    return seen["h"]


@torch.no_grad()
def lsuv(model: nn.Module, x, *, tol=TOL, max_iter=MAX_ITER, center_bias=False):
    """LSUV on every ``nn.Linear`` of ``model``, in order; returns [(iterations, variance)]
    per layer; raises ``LSUVError`` as the JAX version, leaving ``model`` as it was."""
    x = torch.as_tensor(x)
    backup = {k: v.clone() for k, v in model.state_dict().items()}
    results = []
    try:
        for layer in [m for m in model.modules() if isinstance(m, nn.Linear)]:
            h = _layer_input(model, layer, x)

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
    except Exception:
        model.load_state_dict(backup)
        raise
    return results
