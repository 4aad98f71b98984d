"""Which optax call equals which torch optimiser: the defaults that differ (read from the
installed packages' signatures, not recalled) and the measured gap after 10 float64 steps
of each, default against default and with the optax arguments that make them agree.

    .venv/bin/python bench/optax_vs_torch.py

Prints the table of docs/guides/training.md (markdown). The problem: 256 parameters, gradient
p - c + 0.3 sin(3 p) (non-linear, so an update rule that differs shows), the same for both.
"""

from __future__ import annotations

import inspect

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
import torch  # noqa: E402

from winit_jax.optim import clip_grad_norm  # noqa: E402

STEPS, LR = 10, 1e-2
RS = np.random.RandomState(0)
P0, C = RS.randn(256), RS.randn(256)


def grad(p):
    return p - C + 0.3 * np.sin(3 * p)


def torch_run(make, clip=None):
    p = torch.nn.Parameter(torch.from_numpy(P0.copy()))
    opt = make([p])
    for _ in range(STEPS):
        p.grad = torch.from_numpy(grad(p.detach().numpy()) * 40)  # x40: clipping bites
        if clip is not None:
            torch.nn.utils.clip_grad_norm_([p], clip)
        opt.step()
    return p.detach().numpy()


def optax_run(tx):
    p = jnp.asarray(P0)
    state = tx.init(p)
    for _ in range(STEPS):
        u, state = tx.update(jnp.asarray(grad(np.asarray(p)) * 40), state, p)
        p = optax.apply_updates(p, u)
    return np.asarray(p)


def gap(a, b):
    return float(np.abs(a - b).max() / np.abs(b).max())


def defaults(fn, names):
    sig = inspect.signature(fn)
    return ", ".join(f"{n}={sig.parameters[n].default}" for n in names if n in sig.parameters)


O = torch.optim
ROWS = [
    # (torch, torch factory, torch defaults shown, optax default call, its defaults shown,
    #  optax call that agrees, clip)
    ("SGD(lr, momentum=0.9)", lambda ps: O.SGD(ps, lr=LR, momentum=0.9),
     (O.SGD, ["dampening", "nesterov", "weight_decay"]),
     ("optax.sgd(lr, momentum=0.9)", optax.sgd(LR, momentum=0.9), (optax.sgd, ["nesterov"])),
     None, None),
    ("Adam(lr)", lambda ps: O.Adam(ps, lr=LR), (O.Adam, ["betas", "eps", "weight_decay"]),
     ("optax.adam(lr)", optax.adam(LR), (optax.adam, ["b1", "b2", "eps", "eps_root"])),
     None, None),
    ("Adam(lr, weight_decay=0.1)", lambda ps: O.Adam(ps, lr=LR, weight_decay=0.1),
     (O.Adam, []), ("optax.adamw(lr, weight_decay=0.1)", optax.adamw(LR, weight_decay=0.1),
                    (optax.adamw, [])),
     ("optax.chain(optax.add_decayed_weights(0.1), optax.adam(lr))",
      optax.chain(optax.add_decayed_weights(0.1), optax.adam(LR))), None),
    ("AdamW(lr)", lambda ps: O.AdamW(ps, lr=LR), (O.AdamW, ["weight_decay"]),
     ("optax.adamw(lr)", optax.adamw(LR), (optax.adamw, ["weight_decay"])),
     ("optax.adamw(lr, weight_decay=1e-2)", optax.adamw(LR, weight_decay=1e-2)), None),
    ("RMSprop(lr)", lambda ps: O.RMSprop(ps, lr=LR), (O.RMSprop, ["alpha", "eps"]),
     ("optax.rmsprop(lr)", optax.rmsprop(LR), (optax.rmsprop, ["decay", "eps", "eps_in_sqrt"])),
     ("optax.rmsprop(lr, decay=0.99, eps_in_sqrt=False)",
      optax.rmsprop(LR, decay=0.99, eps_in_sqrt=False)), None),
    ("Adagrad(lr)", lambda ps: O.Adagrad(ps, lr=LR),
     (O.Adagrad, ["initial_accumulator_value", "eps"]),
     ("optax.adagrad(lr)", optax.adagrad(LR),
      (optax.adagrad, ["initial_accumulator_value", "eps"])),
     ("optax.adagrad(lr, initial_accumulator_value=0, eps=1e-10)",
      optax.adagrad(LR, initial_accumulator_value=0.0, eps=1e-10)), None),
    ("SGD(lr) + clip_grad_norm_(p, 1.0)", lambda ps: O.SGD(ps, lr=LR), (O.SGD, []),
     ("optax.chain(optax.clip_by_global_norm(1.0), optax.sgd(lr))",
      optax.chain(optax.clip_by_global_norm(1.0), optax.sgd(LR)), (optax.sgd, [])),
     ("optax.chain(winit_jax.optim.clip_grad_norm(1.0), optax.sgd(lr))",
      optax.chain(clip_grad_norm(1.0), optax.sgd(LR))), 1.0),
]


def main():
    print(f"| torch | torch defaults | optax's nearest | optax defaults | gap after {STEPS} "
          "steps | optax that agrees | its gap |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for name, make, (tcls, tnames), (oname, tx, (ofn, onames)), fix, clip in ROWS:
        ref = torch_run(make, clip)
        g_default = gap(optax_run(tx), ref)
        fix_name, fix_gap = ("same call", "") if fix is None else (
            f"`{fix[0]}`", f"{gap(optax_run(fix[1]), ref):.1e}")
        print(f"| `{name}` | {defaults(tcls, tnames)} | `{oname}` | {defaults(ofn, onames)} | "
              f"{g_default:.1e} | {fix_name} | {fix_gap} |")


if __name__ == "__main__":
    main()
