"""The update rules of torch's optimisers, one pure function each, written from
``torch/optim/*.py``'s single-tensor paths (the ones torch runs on CPU) in the same order
of operations, so that float64 trajectories agree to rounding.

Each rule is ``rule(g, p, state, h, t, flags) -> (new_p, state)`` on one tensor: ``g`` its
gradient, ``p`` the parameter, ``state`` a dict of arrays (``init(p, h)`` makes it), ``h``
the hyperparameters of this step (arrays broadcastable to ``p``: each element reads its own
param group's), ``t`` the number of steps already taken (0 on the first), ``flags`` the
static options (booleans every group shares).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import jax.numpy as jnp


@dataclasses.dataclass(frozen=True)
class Rule:
    """One torch optimiser: its numeric hyperparameters (read from each param group at
    every step, so a scheduler may change any of them), its boolean options (one value
    for every group), its state and its step."""

    name: str
    numbers: tuple[str, ...]
    flags: tuple[str, ...]
    init: Callable
    step: Callable


def _lerp(start, end, weight):
    """torch.lerp's two branches (ATen's ``lerp`` kernel), for the same rounding."""
    return jnp.where(weight < 0.5, start + weight * (end - start),
                     end - (end - start) * (1 - weight))


def _zeros(*names, **optional):
    """A state of zeros named ``names``, plus ``optional``'s ``{flag: name}`` where the
    flag is on (AdamW's amsgrad, RMSprop's centered)."""
    def init(p, h, flags):
        more = tuple(n for flag, n in optional.items() if flags[flag])
        return {n: jnp.zeros_like(p) for n in names + more}
    return init


def _sgd_step(g, p, s, h, t, flags):
    if flags["maximize"]:
        g = -g
    g = g + h["weight_decay"] * p              # torch: grad.add(param, alpha=weight_decay)
    # the momentum buffer starts as a copy of the first gradient (no dampening then)
    buf = jnp.where(t == 0, g, h["momentum"] * s["momentum_buffer"]
                    + (1 - h["dampening"]) * g)
    moved = g + h["momentum"] * buf if flags["nesterov"] else buf
    g = jnp.where(h["momentum"] != 0, moved, g)
    return p - h["lr"] * g, {"momentum_buffer": buf}


def _adam_step(g, p, s, h, t, flags):
    if flags["maximize"]:
        g = -g
    lr, wd = h["lr"], h["weight_decay"]
    if flags["decoupled_weight_decay"]:
        p = p * (1 - lr * wd)                  # AdamW: param.mul_(1 - lr * weight_decay)
    else:
        g = g + wd * p                         # Adam: L2 added to the gradient
    beta1, beta2 = h["beta1"], h["beta2"]
    m = _lerp(s["exp_avg"], g, 1 - beta1)
    v = beta2 * s["exp_avg_sq"] + (1 - beta2) * g * g
    step = (t + 1).astype(p.dtype)
    step_size = lr / (1 - beta1 ** step)
    bias2_sqrt = (1 - beta2 ** step) ** 0.5
    state = {"exp_avg": m, "exp_avg_sq": v}
    if flags["amsgrad"]:
        v = state["max_exp_avg_sq"] = jnp.maximum(s["max_exp_avg_sq"], v)
    denom = jnp.sqrt(v) / bias2_sqrt + h["eps"]
    return p - step_size * (m / denom), state


def _rmsprop_step(g, p, s, h, t, flags):
    if flags["maximize"]:
        g = -g
    g = g + h["weight_decay"] * p
    alpha = h["alpha"]
    sq = alpha * s["square_avg"] + (1 - alpha) * g * g
    state = {"square_avg": sq}
    if flags["centered"]:
        ga = state["grad_avg"] = _lerp(s["grad_avg"], g, 1 - alpha)
        avg = jnp.sqrt(sq - ga * ga) + h["eps"]
    else:
        avg = jnp.sqrt(sq) + h["eps"]
    buf = state["momentum_buffer"] = h["momentum"] * s["momentum_buffer"] + g / avg
    return jnp.where(h["momentum"] > 0, p - h["lr"] * buf, p - h["lr"] * (g / avg)), state


def _adagrad_step(g, p, s, h, t, flags):
    if flags["maximize"]:
        g = -g
    g = g + h["weight_decay"] * p
    clr = h["lr"] / (1 + t.astype(p.dtype) * h["lr_decay"])   # (step - 1) with step = t + 1
    total = s["sum"] + g * g
    return p - clr * (g / (jnp.sqrt(total) + h["eps"])), {"sum": total}


def _adagrad_init(p, h, flags):
    return {"sum": jnp.zeros_like(p) + h["initial_accumulator_value"]}


# torch class name -> rule. ``Adam`` with ``decoupled_weight_decay=True`` is AdamW.
RULES = {
    "SGD": Rule("SGD", ("lr", "momentum", "dampening", "weight_decay"),
                ("nesterov", "maximize"), _zeros("momentum_buffer"), _sgd_step),
    "Adam": Rule("Adam", ("lr", "beta1", "beta2", "eps", "weight_decay"),
                 ("amsgrad", "maximize", "decoupled_weight_decay"),
                 _zeros("exp_avg", "exp_avg_sq", amsgrad="max_exp_avg_sq"), _adam_step),
    "RMSprop": Rule("RMSprop", ("lr", "alpha", "eps", "weight_decay", "momentum"),
                    ("centered", "maximize"),
                    _zeros("square_avg", "momentum_buffer", centered="grad_avg"), _rmsprop_step),
    "Adagrad": Rule("Adagrad", ("lr", "lr_decay", "weight_decay", "eps",
                                "initial_accumulator_value"),
                    ("maximize",), _adagrad_init, _adagrad_step),
}
RULES["AdamW"] = dataclasses.replace(RULES["Adam"], name="AdamW")
