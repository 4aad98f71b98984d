"""What ``winit-jax compare`` writes: tables, results.json, report.md (the verdict itself is
``winit_jax.lab.verdict``)."""

from __future__ import annotations

import importlib.metadata
import platform

import numpy as np

from winit_jax.lab.files import write_atomic, write_json
from winit_jax.lab.table import Table, fmt
from winit_jax.lab.verdict import INIT_ALPHA, WELCH_ALPHA


def versions() -> dict:
    import flax
    import jax
    import optax
    v = {"python": platform.python_version(), "jax": jax.__version__, "flax": flax.__version__,
         "optax": optax.__version__, "numpy": np.__version__,
         "device": str(jax.devices()[0]), "platform": platform.platform()}
    try:  # the installed distribution's version: importing torch costs 2.6 s
        v["torch"] = importlib.metadata.version("torch")
    except importlib.metadata.PackageNotFoundError:
        v["torch"] = None
    return v




def write_results(out, config, dataset, results, rows, verdicts, notices, variance) -> None:
    write_json(out, "results.json", {
        "config": config, "dataset": {"name": dataset.name, "description": dataset.description,
                                      "n_train": len(dataset.x_train), "n_test": len(dataset.x_test)},
        "versions": versions(), "notices": notices, "summary": rows,
        "parity": {k: v.to_json() for k, v in verdicts.items()},
        "variance": variance, "runs": results})


FW_LABEL = {"torch_paired": "paired"}  # short in the tables; results.json keeps the name


def write_variance(out, config, dataset, rows: int, notices, result, images) -> None:
    """``winit-jax variance``'s results.json and report.md (the depth sweep, notebook B, the
    product formula, the gain sweep) in ``out``; ``images`` the two plots' file names."""
    write_json(out, "results.json", {
        "config": config, "dataset": {"name": dataset.name, "description": dataset.description,
                                      "notebook_a_rows": rows, "notebook_b": dataset.b_description},
        "versions": versions(), "notices": notices, "variance": result})
    lines = ["# winit-jax variance", ""] + [f"> {n}" for n in notices] + variance_markdown(
        result, images[:1], f"{rows} digits of {dataset.description}, pixels / 256; notebook B: "
                            f"{dataset.b_description}") + [""] + gain_markdown(
        result["gain_sweep"], images[1:])
    write_atomic(out, "report.md", ("\n".join(lines) + "\n").encode())


def compare_table(rows, verdicts, dataset) -> Table:
    """``compare``'s per (scheme, framework) table; the status column carries the verdict."""
    t = Table(f"winit-jax compare: {dataset.name}, {len(dataset.x_train)} train / "
              f"{len(dataset.x_test)} test",
              ("scheme", "fw", "seeds", "Var[x]", "Var[out]", "loss", "train", "test", "s",
               "status"), left=("scheme", "fw", "status"),
              note="Means over seeds: Var[x] of the inputs, Var[out] at init, final loss (the "
                   "last epoch's mean), train and test accuracy, wall seconds per run. "
                   "paired: torch from the JAX run's initial weights, on its batches in its "
                   "order. status: the JAX-vs-PyTorch verdict (its parts below), or the step "
                   "a run diverged at.")
    for r in rows:
        v = verdicts.get(r.scheme)
        status = r.status()
        t.add(r.scheme, FW_LABEL.get(r.framework, r.framework), r.seeds,
              fmt(r.input_var_mean, ".4f"), fmt(r.output_var_mean, ".3g"),
              fmt(r.final_loss_mean, ".4f"), fmt(r.train_acc_mean, ".2%"),
              fmt(r.test_acc_mean, ".2%"), fmt(r.wall_s_mean, ".1f"),
              v.verdict if v is not None and status == "ok" else
              status.replace("diverged at step ", "diverged@"))
    return t


def verdict_table(verdicts) -> Table:
    """The verdict's three parts per scheme, each figure with its threshold (in the header,
    the same for every scheme of a run)."""
    any_v = next(iter(verdicts.values()))
    welch = next((v.independent.threshold for v in verdicts.values()
                  if v.independent.threshold is not None), None)
    t = Table(f"JAX vs PyTorch: init p >= {any_v.init.threshold:.1g}, paired <= 1"
              + (f", Welch p >= {welch:.1g}" if welch else ""),
              ("scheme", "init p", "paired", "Welch p (acc, loss)", "verdict"),
              left=("scheme", "Welch p (acc, loss)", "verdict"),
              note="init p: KS of each framework's own draws per tensor, pooled over seeds "
                   f"(the smallest p; threshold {INIT_ALPHA:g} / tests in the run); paired: "
                   "the paired run's per-step loss gap over its tolerance (the worst step); "
                   "Welch p: the independent runs' test accuracy and final loss (threshold "
                   f"{WELCH_ALPHA:g} / tests in the run). The verdict agrees when every part "
                   "that ran passes.")
    for s, v in verdicts.items():
        p = v.paired
        apart = [(a, b) for a, b in p.diverged if a != b] if p is not None else []
        paired = ("n/a" if p is None or p.ok is None and not apart else
                  f"diverged {apart[0][0]} vs {apart[0][1]}" if apart else f"{p.worst_ratio:.2g}")
        ind = v.independent
        welch_cell = ind.note if ind.ok is None else ", ".join(
            fmt(x, ".2g") for x in (ind.acc_p, ind.loss_p))
        t.add(s, f"{v.init.min_p:.2g}", paired, welch_cell, v.verdict)
    return t


def sweep_table(summary, devices: int, processes: int) -> Table:
    t = Table(f"winit-jax sweep: {devices} device(s), {processes} process(es)",
              ("scheme", "lr", "seeds", "loss", "train", "test", "status"),
              left=("scheme", "status"))
    for r in summary:
        t.add(r.scheme, f"{r.learning_rate:g}", r.seeds, fmt(r.final_loss_mean, ".3f"),
              fmt(r.train_acc_mean, ".1%"),
              f"{fmt(r.test_acc_mean, '.1%')} ± {fmt(r.test_acc_std, '.1%')}", r.status())
    return t


def write_markdown(out, dataset, rows, verdicts, notices, plots, extra=()) -> None:
    lines = ["# winit-jax compare", "", f"Data: {dataset.description}.", ""]
    lines += [f"> {n}" for n in notices] + ([""] if notices else [])
    lines += compare_table(rows, verdicts, dataset).markdown(level=0)
    if verdicts:
        lines += [""] + verdict_table(verdicts).markdown()
    lines += [""] + [f"![{p}]({p})" for p in plots] + ["", *extra]
    write_atomic(out, "report.md", ("\n".join(lines) + "\n").encode())


def depth_table(sweep) -> Table:
    t = Table("Variance through depth", ("scheme", "fw", "seeds", "layer 1", "layer 10", "last",
                                         "worst 1-step", "float32"),
              left=("scheme", "fw", "float32"),
              note="log10 E[y^2] of each layer's pre-activation over the batch and the units, "
                   "median over seeds (in brackets: the closed form chained from the data alone); "
                   "worst 1-step: measured / n Var[w] E[x^2] from the layer's own input, the layer "
                   "farthest from 1.")
    for s in sweep:
        med, th = s.log10_var_median, s.theory_log10_var
        cells = [f"{fmt(med[i], '.1f')} ({th[i]:.1f})" if i < s.layers else ""
                 for i in (0, 9, s.layers - 1)]
        t.add(s.scheme, s.framework, s.seeds, *cells, fmt(s.worst_ratio(), ".3f"),
              s.first_fault() or "ok")
    return t


def product_table(product) -> Table:
    t = Table("Notebook A's net, end to end",
              ("scheme", "fw", "seeds", "E[(y^1)^2]", "predicted", "measured", "ratio", "Var[out]"),
              left=("scheme", "fw"),
              note="E[(y^5)^2] at init against E[(y^1)^2] prod_{l=2..5} n_l Var[w^l] / 2, means "
                   "over seeds (± one standard error). Var[out] is the notebook's variance (mean "
                   "removed), lower by the squared mean of 10 output units.")
    for p in product:
        t.add(p.scheme, p.framework, p.seeds, f"{p.first_layer:.4g}", f"{p.predicted:.4g}",
              f"{p.output_sq:.4g} ± {p.output_sq_se:.2g}", f"{p.ratio:.3f}", f"{p.output_var:.4g}")
    return t


def notebook_b_table(rows) -> Table:
    t = Table("Notebook B's layer (784-50), standardised digits",
              ("scheme", "fw", "seeds", "std of t", "ReLU mean", "ReLU std"), left=("scheme", "fw"),
              note="Mean over seeds (seed-to-seed spread) / exact for Gaussian t "
                   "(sqrt(784 Var[w] E[x^2]); ReLU: 0.399 and 0.584 times that) / bias / the "
                   "notebook's single-seed print.")
    for b in rows:
        cells = [f"{m.mean:.4g} ({m.spread:.2g}) / {m.exact:.4g} / {m.bias:+.1%}"
                 + (f" / nb {m.notebook}" if m.notebook else "")
                 for m in (b.std, b.relu_mean, b.relu_std)]
        t.add(b.scheme, b.framework, b.seeds, *cells)
    return t


def variance_markdown(result: dict, plots: list[str], description: str) -> list[str]:
    """Sections of report.md for ``depth.run``'s result (both commands use it)."""
    lines = depth_table(result["sweep"]).markdown()
    lines[2:2] = [f"Inputs: {description}.", ""]
    if result["product"]:
        lines += [""] + product_table(result["product"]).markdown(level=3)
    if result["notebook_b"]:
        lines += [""] + notebook_b_table(result["notebook_b"]).markdown(level=3)
    return lines + [""] + [f"![{p}]({p})" for p in plots]


def gain_table(rows) -> Table:
    """The exact-gain depth study, one row per (activation, framework)."""
    from winit_jax.lab.gain_depth import exact_and_he, noise_horizon

    try:
        from reference_torch.gain import calculate_gain
    except ImportError:  # torch not installed: the column says so
        def calculate_gain(name):
            return "n/a"

    r0 = rows[0]
    t = Table("Exact gains through depth",
              ("activation", "fw", "exact g^2", "torch gain^2", "map slope", "horizon",
               "exact: worst", "exact: last", "He: last (theory)"), left=("activation", "fw"),
              note=f"Width {r0.width}, {len(r0.mean_var)} layers, N(0, 1) inputs, {r0.seeds} "
                   "seeds; Var[w] = g^2 / n with the exact g^2 = 1 / E[f(z)^2] or He's 2. Worst: "
                   "max over layers of the mean Var[y^l] or its inverse. Map slope > 1: the exact "
                   "gain's fixed point is unstable, and finite-width noise grows after about the "
                   "noise horizon's layers.")
    for r, he in exact_and_he(rows):
        tg = calculate_gain(r.activation)
        torch_g2 = "none" if tg is None else tg if isinstance(tg, str) else f"{tg * tg:.4f}"
        t.add(r.activation, r.framework, f"{r.gain_sq:.4f}", torch_g2, f"{r.map_slope:.3f}",
              min(noise_horizon(r.map_slope, r.width), len(r.mean_var)),
              f"{r.worst_factor():.3g}", f"{r.mean_var[-1]:.3g}",
              f"{he.mean_var[-1]:.3g} ({he.theory[-1]:.3g})" if he else "")
    return t


def gain_markdown(rows, plots: list[str]) -> list[str]:
    """report.md's section for ``gain_depth.run``."""
    if not rows:
        return []
    return gain_table(rows).markdown() + [""] + [f"![{p}]({p})" for p in plots]
