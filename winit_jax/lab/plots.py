"""The PNG plots of ``winit-jax``: loss curves, accuracy, variance through depth."""

from __future__ import annotations

import io
import math

import numpy as np

from winit_jax.lab.files import write_atomic


def _subplots(*args, figsize, **kwargs):
    """A ``Figure`` with its axes, drawn by Agg: matplotlib's object API, so neither
    pyplot's global state nor the process-wide backend is touched."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize)
    return fig, fig.subplots(*args, **kwargs)


_LOSS_STYLE = {"jax": {"lw": 1.2, "color": "C0"}, "torch": {"color": "C1", "alpha": 0.8},
               "torch_paired": {"ls": ":", "lw": 1.0, "color": "k"}}


def plot_losses(out, results) -> str:
    """Per scheme, the first seed's batch loss per framework (legend beside the data)."""

    schemes = list(dict.fromkeys(r.scheme for r in results))
    first_seed = min(r.seed for r in results)  # one curve per framework: the first seed's
    fig, axes = _subplots(len(schemes), 1, figsize=(8, 2.6 * len(schemes)), squeeze=False)
    for ax, scheme in zip(axes[:, 0], schemes):
        for r in results:
            if r.scheme == scheme and r.seed == first_seed:
                losses = np.asarray(r.losses, np.float64)
                # the paired run follows JAX's closely: dotted on top, so both show
                style = _LOSS_STYLE.get(r.framework, {})
                ax.plot(np.where(np.isfinite(losses), losses, np.nan), label=r.framework,
                        **{"lw": 0.7, **style})
        finite = [v for r in results if r.scheme == scheme for v in r.losses
                  if v is not None and math.isfinite(v) and v > 0]
        if finite and max(finite) > 100 * max(min(finite), 1e-12):
            ax.set_yscale("log")  # a diverging run spans many decades
        diverged = sorted({r.diverged_at for r in results if r.scheme == scheme} - {None})
        ax.set_title(scheme + (f" (diverged at step {diverged[0]})" if diverged else ""))
        ax.set_ylabel("batch loss")
        ax.axhline(math.log(10), color="grey", ls=":", lw=0.8, label="ln 10 (chance)")
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)
    axes[-1, 0].set_xlabel("batch")
    fig.tight_layout()
    return _save(fig, out, "loss_curves.png")


def plot_accuracy(out, rows) -> str:

    schemes = list(dict.fromkeys(r.scheme for r in rows))
    frameworks = list(dict.fromkeys(r.framework for r in rows))
    fig, ax = _subplots(figsize=(8, 3.5))
    width = 0.8 / len(frameworks)
    for i, fw in enumerate(frameworks):
        acc = [next((r.test_acc_mean for r in rows if r.scheme == s and r.framework == fw),
                    np.nan) for s in schemes]
        ax.bar(np.arange(len(schemes)) + i * width, acc, width, label=fw)
    ax.set_xticks(np.arange(len(schemes)) + width * (len(frameworks) - 1) / 2, schemes)
    ax.set_ylabel("test accuracy")
    ax.set_ylim(0, 1)
    ax.axhline(0.1, color="grey", ls=":", lw=0.8)
    ax.legend()
    fig.tight_layout()
    return _save(fig, out, "accuracy.png")


def _save(fig, out, name) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    write_atomic(out, name, buf.getvalue())
    return name


def plot_variance(out, sweep: list[dict]) -> str:
    """Variance through depth, readable at a glance.

    Top: one small panel per scheme on one shared log axis: measured median E[y^2] per
    layer, JAX solid and torch dashed, the closed form dotted (He flat, U(+-0.01) dying,
    N(0, 1) exploding). Below, across the figure: measured over the closed form (median,
    JAX's 10-90% band over seeds, the finite-width lognormal approximation with
    Var[log E[y^2]] = 5 l / width), and measured over the one-step prediction
    n Var[w] E[x^2], which should hug 1. Legends sit beside the data, never on it.
    """
    schemes = list(dict.fromkeys(s.scheme for s in sweep))
    cols = min(5, len(schemes))
    rows = math.ceil(len(schemes) / cols)
    from matplotlib.figure import Figure

    fig = Figure(figsize=(12, 3.0 * rows + 6.5))
    grid = fig.add_gridspec(rows + 2, cols, height_ratios=[3] * rows + [3.2, 2])
    panels = {}
    for k, scheme in enumerate(schemes):
        share = next(iter(panels.values()), None)
        panels[scheme] = fig.add_subplot(grid[k // cols, k % cols], sharey=share, sharex=share)
    mid = fig.add_subplot(grid[rows, :])
    bottom = fig.add_subplot(grid[rows + 1, :], sharex=mid)
    colours = {scheme: f"C{k}" for k, scheme in enumerate(schemes)}
    for s in sweep:
        colour, ax = colours[s.scheme], panels[s.scheme]
        layers = np.arange(1, s.layers + 1)
        theory = np.array(s.theory_log10_var)
        med = _arr(s.log10_var_median)
        style = "-" if s.framework == "jax" else "--"
        ax.plot(layers, 10 ** med, style, color=colour if s.framework == "jax" else "k",
                lw=1.4 if s.framework == "jax" else 1.0, label=s.framework)
        if s.first_fault() and "\n" not in ax.get_title():
            ax.set_title(f"{s.scheme}\nfloat32 {s.first_fault()}", fontsize=8)
        elif not ax.get_title():
            ax.set_title(s.scheme, fontsize=9)
        mid.plot(layers, 10 ** (med - theory), style, color=colour, lw=1)
        bottom.plot(layers, _arr(s.ratio_mean), style, color=colour, lw=1)
        if s.framework == "jax":
            ax.plot(layers, 10 ** theory, ":", color="grey", lw=1.2, label="closed form")
            mid.fill_between(layers, 10 ** (_arr(s.log10_var_p10) - theory),
                             10 ** (_arr(s.log10_var_p90) - theory), color=colour, alpha=0.10,
                             lw=0)
    first = next(iter(panels.values()))
    first.set_yscale("log")
    for k, ax in enumerate(panels.values()):
        ax.axhline(1, color="grey", lw=0.5)
        if k % cols == 0:
            ax.set_ylabel("E[y^2] of layer l")
        ax.set_xlabel("layer l", fontsize=8)
    first.legend(fontsize=7, loc="upper left", frameon=False)
    width = sweep[0].width
    layers = np.arange(1, sweep[0].layers + 1)
    # log E[y^2] ~ N(log theory - v/2, v), v = 5 l / width: the median sits v/2 below the
    # mean (which the closed form gives), and 10-90% is +-1.28 sd around the median.
    v = 5 * layers / width
    for k in (0, 1.2816, -1.2816):
        mid.plot(layers, np.exp(-v / 2 + k * np.sqrt(v)), color="k", lw=0.8,
                 ls="-." if k else "-", label=None if k < 0 else
                 ("lognormal median exp(-v/2), v = 5 l / width" if k == 0 else "10-90%"))
    for scheme, colour in colours.items():
        mid.plot([], [], color=colour, label=scheme)
    mid.plot([], [], "-", color="grey", label="JAX (band: 10-90% of seeds)")
    mid.plot([], [], "--", color="grey", label="torch")
    mid.set_yscale("log")
    mid.set_ylabel("measured / closed form")
    mid.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    bottom.axhspan(0.9, 1.1, color="grey", alpha=0.15, lw=0)
    bottom.axhline(1, color="grey", lw=0.8)
    bottom.set_ylabel("measured /\nn Var[w] E[x^2]")
    bottom.set_xlabel("layer l")
    fig.suptitle(f"ReLU MLP, width {width}, median over {sweep[0].seeds} seeds; top: E[y^2] per "
                 "layer (JAX solid, torch dashed, closed form dotted)", fontsize=10)
    fig.tight_layout()
    return _save(fig, out, "variance_depth.png")


def _arr(values):
    return np.array([np.nan if v is None else v for v in values], np.float64)


def plot_gain_sweep(out, rows: list[dict]) -> str:
    """One panel per activation: mean Var[y^l] over seeds, exact gain (solid) and He's
    ReLU gain (dashed), JAX in C0 and torch in C1; the infinite-width map dotted."""
    acts = list(dict.fromkeys(r.activation for r in rows))
    cols = 3
    fig, axes = _subplots(math.ceil(len(acts) / cols), cols, squeeze=False, sharex=True,
                             figsize=(11, 2.7 * math.ceil(len(acts) / cols)))
    fw_colour = {"jax": "C0", "torch": "C1"}
    for ax, act in zip(axes.ravel(), acts):
        for r in (r for r in rows if r.activation == act):
            layers = np.arange(1, len(r.mean_var) + 1)
            ls = "-" if r.gain == "exact" else "--"
            ax.plot(layers, r.mean_var, ls, color=fw_colour.get(r.framework, "C2"), lw=1.1,
                    label=f"{r.gain} ({r.framework})")
            if r.framework == rows[0].framework:
                ax.plot(layers, r.theory, ":", color="k", lw=0.9)
        slope = next(r.map_slope for r in rows if r.activation == act)
        ax.set_yscale("log")
        ax.axhspan(0.5, 2, color="grey", alpha=0.12, lw=0)
        ax.set_title(f"{act} (map slope {slope:.3f})", fontsize=9)
    for ax in axes.ravel()[len(acts):]:
        ax.axis("off")
    axes[0, 0].legend(fontsize=7)
    r0 = rows[0]
    fig.suptitle(f"mean Var[y^l] over {r0.seeds} seeds, width {r0.width}, N(0,1) inputs; "
                 "solid: exact gain, dashed: He's 2/n, dotted: infinite width; band: factor 2",
                 fontsize=9)
    fig.tight_layout()
    return _save(fig, out, "gain_depth.png")
