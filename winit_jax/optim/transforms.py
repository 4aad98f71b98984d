"""torch's optimisers as ordinary optax transformations: ``sgd``, ``adam``, ``adamw``,
``rmsprop``, ``adagrad``, each torch's update rule exactly (``rules.py``, written from
``torch/optim``'s single-tensor code in its order of operations), with torch's defaults.

Each takes its hyperparameters as numbers or optax schedules (``count -> value``), keyword
only after the learning rate, emits updates (``optax.apply_updates`` adds them), keeps its
state in a ``NamedTuple`` (``optax.tree_utils.tree_get(state, "exp_avg")`` finds it) and
works under ``optax.inject_hyperparams``. ``replay`` turns a recorded sequence (a torch
scheduler's rates) into an optax schedule.

Examples:
  >>> import jax.numpy as jnp, optax
  >>> tx = adamw(1e-3, weight_decay=0.1)
  >>> params = {"w": jnp.ones(3)}
  >>> state = tx.init(params)
  >>> updates, state = tx.update({"w": jnp.ones(3)}, state, params)
  >>> [round(float(u), 6) for u in updates["w"]]   # -lr * wd * w - lr * m / (sqrt(v) + eps)
  [-0.0011, -0.0011, -0.0011]
  >>> int(optax.tree_utils.tree_get(state, "count"))
  1
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from winit_jax.optim.rules import RULES, Rule

ScalarOrSchedule = float | jax.Array | Callable[[jax.Array], jax.Array]


class SGDState(NamedTuple):
    """``torch.optim.SGD``'s state: the step count and the momentum buffer."""

    count: jax.Array
    momentum_buffer: optax.Updates


class AdamState(NamedTuple):
    """``torch.optim.Adam``/``AdamW``'s state (``max_exp_avg_sq`` None without amsgrad)."""

    count: jax.Array
    exp_avg: optax.Updates
    exp_avg_sq: optax.Updates
    max_exp_avg_sq: optax.Updates | None


class RMSpropState(NamedTuple):
    """``torch.optim.RMSprop``'s state (``grad_avg`` None unless centered)."""

    count: jax.Array
    square_avg: optax.Updates
    momentum_buffer: optax.Updates
    grad_avg: optax.Updates | None


class AdagradState(NamedTuple):
    """``torch.optim.Adagrad``'s state: the step count and the sum of squared gradients."""

    count: jax.Array
    sum: optax.Updates


STATES = {"SGD": SGDState, "Adam": AdamState, "AdamW": AdamState, "RMSprop": RMSpropState,
          "Adagrad": AdagradState}

# Hyperparameters: what ``hyper(path, param, count)`` returns for one tensor: its values at
# this step (each broadcastable to the tensor: one per element where a tensor's elements
# come from several torch param groups), and a mask of the elements no group holds (left
# as they are), or None; None altogether for a tensor the optimiser does not hold.
Hyper = Callable[[str, jax.Array, jax.Array], "tuple[dict, Any] | None"]


def leaf_path(keypath) -> str:
    """A pytree key path as an nnx path ("layers/0/kernel"; an nnx Variable's ``value``
    dropped)."""
    parts = []
    for k in keypath:
        name = getattr(k, "key", getattr(k, "name", getattr(k, "idx", None)))
        if isinstance(k, jax.tree_util.GetAttrKey) and name == "value":
            continue
        parts.append(str(name))
    return "/".join(parts)


def rule_transformation(rule: Rule, flags: dict, hyper: Hyper) -> optax.GradientTransformation:
    """torch's ``rule`` as an optax transformation: ``hyper`` gives each tensor's
    hyperparameters at each step; the update is ``new_param - param`` from torch's rule."""
    state_class = STATES[rule.name]
    slots = [f for f in state_class._fields if f != "count"]

    def flat(tree):
        leaves, treedef = jax.tree_util.tree_flatten_with_path(tree)
        return [leaf_path(kp) for kp, _ in leaves], [x for _, x in leaves], treedef

    def init(params):
        paths, leaves, treedef = flat(params)
        count = jnp.zeros((), int)  # int64 under x64: schedules of it give float64 rates
        per_leaf = []
        for path, p in zip(paths, leaves):
            h = hyper(path, p, count)
            per_leaf.append(None if h is None else rule.init(p, _cast(h[0], p), flags))
        held = [s for s in per_leaf if s is not None]
        present = set(held[0]) if held else set()
        trees = {slot: (jax.tree_util.tree_unflatten(treedef, [
            s[slot] if s is not None else jnp.zeros_like(p) for s, p in zip(per_leaf, leaves)])
            if slot in present else None) for slot in slots}
        return state_class(count=count, **trees)

    def update(updates, state, params=None):
        if params is None:
            raise ValueError(f"{rule.name} (torch's rule): update needs params (the step reads "
                             "them); nnx.Optimizer and optax.apply_updates' callers pass them")
        paths, grads, treedef = flat(updates)
        p_leaves = jax.tree_util.tree_leaves(params)
        count = state.count
        present = [slot for slot in slots if getattr(state, slot) is not None]
        old = {slot: jax.tree_util.tree_leaves(getattr(state, slot)) for slot in present}
        out, new = [], {slot: [] for slot in present}
        for i, (path, g, p) in enumerate(zip(paths, grads, p_leaves)):
            s = {slot: old[slot][i] for slot in present}
            h = hyper(path, p, count)
            if h is None:  # a tensor the optimiser does not hold: torch leaves it as it is
                out.append(jnp.zeros_like(p))
                for slot in present:
                    new[slot].append(s[slot])
                continue
            values, frozen = h
            new_p, s_new = rule.step(g.astype(p.dtype), p, s, _cast(values, p), count, flags)
            if frozen is not None:  # elements no param group holds
                new_p = jnp.where(frozen, p, new_p)
                s_new = {k: jnp.where(frozen, s[k], v) for k, v in s_new.items()}
            out.append(new_p - p)
            for slot in present:
                new[slot].append(s_new[slot])
        trees = {slot: (jax.tree_util.tree_unflatten(treedef, new[slot]) if slot in present
                        else None) for slot in slots}
        return (jax.tree_util.tree_unflatten(treedef, out),
                state_class(count=count + 1, **trees))

    return optax.GradientTransformation(init, update)


def _cast(values: dict, like) -> dict:
    return {k: jnp.asarray(v, like.dtype) for k, v in values.items()}


def _scheduled(values: dict[str, ScalarOrSchedule]) -> Hyper:
    """The same hyperparameters for every tensor: numbers, or schedules of the count."""
    def hyper(path, like, count):
        return {k: v(count) if callable(v) else v for k, v in values.items()}, None
    return hyper


def _rule(name: str, flags: dict, **numbers) -> optax.GradientTransformation:
    rule = RULES[name]
    return rule_transformation(rule, flags, _scheduled({k: numbers[k] for k in rule.numbers}))


def sgd(learning_rate: ScalarOrSchedule, *, momentum: ScalarOrSchedule = 0.0,
        dampening: ScalarOrSchedule = 0.0, weight_decay: ScalarOrSchedule = 0.0,
        nesterov: bool = False, maximize: bool = False) -> optax.GradientTransformation:
    """``torch.optim.SGD``'s step: weight decay added to the gradient, the momentum buffer
    starting as the first gradient (undamped), nesterov and maximize as torch's.

    Args:
      learning_rate: a number or an optax schedule (as every number below).
      momentum: torch's, default 0.
      dampening: as ``momentum`` (above).
      weight_decay: as ``momentum`` (above).
      nesterov: torch's flags.
      maximize: as ``nesterov`` (above).

    Returns:
      An ``optax.GradientTransformation`` whose state is an ``SGDState``.

    Examples:
      >>> tx = sgd(0.1, momentum=0.9)
    """
    return _rule("SGD", dict(nesterov=nesterov, maximize=maximize), lr=learning_rate,
                 momentum=momentum, dampening=dampening, weight_decay=weight_decay)


def adam(learning_rate: ScalarOrSchedule = 1e-3, *, b1: ScalarOrSchedule = 0.9,
         b2: ScalarOrSchedule = 0.999, eps: ScalarOrSchedule = 1e-8,
         weight_decay: ScalarOrSchedule = 0.0, amsgrad: bool = False,
         maximize: bool = False) -> optax.GradientTransformation:
    """``torch.optim.Adam``'s step: L2 weight decay added to the gradient (optax's ``adam``
    has none), then optax's formula in torch's order of operations.

    Returns:
      An ``optax.GradientTransformation`` whose state is an ``AdamState``.
    """
    return _rule("Adam", dict(amsgrad=amsgrad, maximize=maximize,
                              decoupled_weight_decay=False), lr=learning_rate, beta1=b1,
                 beta2=b2, eps=eps, weight_decay=weight_decay)


def adamw(learning_rate: ScalarOrSchedule = 1e-3, *, b1: ScalarOrSchedule = 0.9,
          b2: ScalarOrSchedule = 0.999, eps: ScalarOrSchedule = 1e-8,
          weight_decay: ScalarOrSchedule = 1e-2, amsgrad: bool = False,
          maximize: bool = False) -> optax.GradientTransformation:
    """``torch.optim.AdamW``'s step: decoupled decay ``param * (1 - lr * weight_decay)``
    (torch's default 1e-2; optax's ``adamw`` defaults to 1e-4).

    Returns:
      An ``optax.GradientTransformation`` whose state is an ``AdamState``.
    """
    rule = RULES["AdamW"]
    return rule_transformation(rule, dict(amsgrad=amsgrad, maximize=maximize,
                                          decoupled_weight_decay=True),
                               _scheduled(dict(lr=learning_rate, beta1=b1, beta2=b2, eps=eps,
                                               weight_decay=weight_decay)))


def rmsprop(learning_rate: ScalarOrSchedule = 1e-2, *, alpha: ScalarOrSchedule = 0.99,
            eps: ScalarOrSchedule = 1e-8, weight_decay: ScalarOrSchedule = 0.0,
            momentum: ScalarOrSchedule = 0.0, centered: bool = False,
            maximize: bool = False) -> optax.GradientTransformation:
    """``torch.optim.RMSprop``'s step: eps added outside the square root (optax's
    ``rmsprop`` adds it inside unless ``eps_in_sqrt=False``).

    Returns:
      An ``optax.GradientTransformation`` whose state is an ``RMSpropState``.
    """
    return _rule("RMSprop", dict(centered=centered, maximize=maximize), lr=learning_rate,
                 alpha=alpha, eps=eps, weight_decay=weight_decay, momentum=momentum)


def adagrad(learning_rate: ScalarOrSchedule = 1e-2, *, lr_decay: ScalarOrSchedule = 0.0,
            weight_decay: ScalarOrSchedule = 0.0, eps: ScalarOrSchedule = 1e-10,
            initial_accumulator_value: ScalarOrSchedule = 0.0,
            maximize: bool = False) -> optax.GradientTransformation:
    """``torch.optim.Adagrad``'s step, ``lr / (1 + step * lr_decay)`` included.

    Returns:
      An ``optax.GradientTransformation`` whose state is an ``AdagradState``.
    """
    return _rule("Adagrad", dict(maximize=maximize), lr=learning_rate, lr_decay=lr_decay,
                 weight_decay=weight_decay, eps=eps,
                 initial_accumulator_value=initial_accumulator_value)


def replay(values, *, past_end: float = float("nan")) -> optax.Schedule:
    """An optax schedule that returns ``values[count]``: a sequence recorded from torch
    (``parity.translate_schedule`` records a scheduler's); ``past_end`` after it (NaN: a
    step past the record gives NaN parameters, never a guessed rate). Its values keep
    float64 under ``jax_enable_x64``.

    Examples:
      >>> schedule = replay([0.1, 0.05, 0.025])
      >>> [round(float(schedule(i)), 6) for i in range(4)]
      [0.1, 0.05, 0.025, nan]
    """
    table = np.asarray(values, np.float64).ravel()
    if table.size == 0:
        raise ValueError("replay: values is empty")

    def schedule(count):
        row = jnp.asarray(table)[jnp.minimum(count, table.size - 1)]
        return jnp.where(count < table.size, row, jnp.asarray(past_end, row.dtype))
    return schedule


__all__ = ["AdagradState", "AdamState", "RMSpropState", "SGDState", "adagrad", "adam",
           "adamw", "replay", "rmsprop", "sgd"]
