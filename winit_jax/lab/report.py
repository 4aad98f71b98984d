"""What ``winit-jax compare`` writes: parity verdicts, results.json, report.md, PNG plots."""

from __future__ import annotations

import math
import platform

import numpy as np

from winit_jax.lab.files import write_atomic, write_json
from winit_jax.lab.table import Table, fmt

FORWARD_TOL = 1e-5  # max |logit diff| / max |logit|, HF transformers' PT<->Flax tolerance
ACC_TOL = 0.01      # |mean test accuracy JAX - torch|, independent seeds: the floor
# ... widened to this many standard errors of the difference of the two means, so that a
# scheme whose accuracy swings from seed to seed (torch's default init, mid-plateau after
# 10 epochs: 26 % to 61 % over 3 seeds) is not called different on noise.
ACC_SE = 3.0


def exact_forward_gap(scheme: str, x: np.ndarray, seed: int = 0) -> float:
    """A torch model with ``scheme``, its weights moved to Flax: max relative logit gap."""
    import jax.numpy as jnp
    import torch

    from reference_torch.init import init_model
    from reference_torch.models import make_model
    from winit_jax.parity import from_torch

    torch.manual_seed(seed)
    model = init_model(make_model(), scheme, torch.from_numpy(x[:100]))
    with torch.no_grad():
        ref = model(torch.from_numpy(x)).numpy().astype(np.float64)
    ours = np.asarray(from_torch(model)(jnp.asarray(x)), np.float64)
    return float(np.abs(ours - ref).max() / max(np.abs(ref).max(), np.finfo(np.float64).tiny))


def parity_verdicts(rows: list, x: np.ndarray) -> dict[str, dict]:
    """Per scheme run in both frameworks: the exact and the statistical check."""
    by = {(r.scheme, r.framework): r for r in rows}
    out = {}
    for scheme in dict.fromkeys(r.scheme for r in rows):
        if (scheme, "jax") not in by or (scheme, "torch") not in by:
            continue
        gap = exact_forward_gap(scheme, x)
        j, t = by[scheme, "jax"], by[scheme, "torch"]
        acc_gap = abs(j.test_acc_mean - t.test_acc_mean)
        se = math.sqrt(j.test_acc_std ** 2 / j.seeds + t.test_acc_std ** 2 / t.seeds)
        acc_tol = max(ACC_TOL, ACC_SE * se)
        diverged = j.diverged_at is not None or t.diverged_at is not None
        ok = gap <= FORWARD_TOL and (acc_gap < acc_tol or diverged)
        out[scheme] = {"forward_rel_gap": gap, "forward_tol": FORWARD_TOL,
                       "test_acc_gap": acc_gap, "test_acc_tol": acc_tol,
                       "verdict": "agree" if ok else "DIFFER"}
    return out


def versions() -> dict:
    import flax
    import jax
    import optax
    v = {"python": platform.python_version(), "jax": jax.__version__, "flax": flax.__version__,
         "optax": optax.__version__, "numpy": np.__version__,
         "device": str(jax.devices()[0]), "platform": platform.platform()}
    try:
        import torch
        v["torch"] = torch.__version__
    except ImportError:
        v["torch"] = None
    return v




def write_results(out, config, dataset, results, rows, verdicts, notices, variance) -> None:
    write_json(out, "results.json", {
        "config": config, "dataset": {"name": dataset.name, "description": dataset.description,
                                      "n_train": len(dataset.x_train), "n_test": len(dataset.x_test)},
        "versions": versions(), "notices": notices, "summary": rows, "parity": verdicts,
        "variance": variance, "runs": results})


def compare_table(rows, verdicts, dataset) -> Table:
    """``compare``'s per (scheme, framework) table; the status column carries the verdict."""
    t = Table(f"winit-jax compare: {dataset.name}, {len(dataset.x_train)} train / "
              f"{len(dataset.x_test)} test",
              ("scheme", "fw", "seeds", "Var[x]", "Var[out]", "loss", "train", "test", "s",
               "status"), left=("scheme", "fw", "status"),
              note="Means over seeds: Var[x] of the inputs, Var[out] at init, final loss (the "
                   "last epoch's mean), train and test accuracy, wall seconds per run.")
    for r in rows:
        verdict = verdicts.get(r.scheme, {}).get("verdict", "")
        status = r.status()
        t.add(r.scheme, r.framework, r.seeds, fmt(r.input_var_mean, ".4f"),
              fmt(r.output_var_mean, ".3g"), fmt(r.final_loss_mean, ".4f"),
              fmt(r.train_acc_mean, ".2%"), fmt(r.test_acc_mean, ".2%"), fmt(r.wall_s_mean, ".1f"),
              status if status != "ok" or not verdict else verdict)
    return t


def verdict_table(verdicts) -> Table:
    t = Table("JAX vs PyTorch", ("scheme", "forward gap (weights copied)",
                                 "test-acc gap (own seeds)", "verdict"), left=("scheme", "verdict"))
    for s, v in verdicts.items():
        t.add(s, f"{v['forward_rel_gap']:.1e} (tol {v['forward_tol']:g})",
              f"{v['test_acc_gap']:.2%} (tol {v['test_acc_tol']:.1%})", v["verdict"])
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
