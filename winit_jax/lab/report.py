"""What ``winit-jax compare`` writes: parity verdicts, results.json, report.md, PNG plots."""

from __future__ import annotations

import dataclasses
import math
import platform

import numpy as np

from winit_jax.lab.files import write_atomic, write_json
from winit_jax.lab.depth import first_fault, worst_ratio

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


def parity_verdicts(rows: list[dict], x: np.ndarray) -> dict[str, dict]:
    """Per scheme run in both frameworks: the exact and the statistical check."""
    by = {(r["scheme"], r["framework"]): r for r in rows}
    out = {}
    for scheme in dict.fromkeys(r["scheme"] for r in rows):
        if (scheme, "jax") not in by or (scheme, "torch") not in by:
            continue
        gap = exact_forward_gap(scheme, x)
        j, t = by[scheme, "jax"], by[scheme, "torch"]
        acc_gap = abs(j["test_acc_mean"] - t["test_acc_mean"])
        se = math.sqrt(j["test_acc_std"] ** 2 / j["seeds"] + t["test_acc_std"] ** 2 / t["seeds"])
        acc_tol = max(ACC_TOL, ACC_SE * se)
        diverged = j["diverged_at"] is not None or t["diverged_at"] is not None
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
        "variance": variance,
        "runs": [dataclasses.asdict(r) for r in results]})


def fmt(v, spec):
    return "n/a" if v is None or (isinstance(v, float) and not math.isfinite(v)) else format(v, spec)


def status(row) -> str:
    return "ok" if row["diverged_at"] is None else f"diverged at step {row['diverged_at']}"


def write_markdown(out, dataset, rows, verdicts, notices, plots, extra=()) -> None:
    lines = ["# winit-jax compare", "", f"Data: {dataset.description}.", ""]
    lines += [f"> {n}" for n in notices] + ([""] if notices else [])
    lines += ["| scheme | framework | seeds | Var[x] | Var[out] at init | final loss | train acc | "
              "test acc | wall s | status |", "|" + " --- |" * 10]
    for r in rows:
        lines.append(
            f"| {r['scheme']} | {r['framework']} | {r['seeds']} | {fmt(r['input_var_mean'], '.4f')} | "
            f"{fmt(r['output_var_mean'], '.3g')} | {fmt(r['final_loss_mean'], '.4f')} | "
            f"{fmt(r['train_acc_mean'], '.2%')} | {fmt(r['test_acc_mean'], '.2%')} | "
            f"{fmt(r['wall_s_mean'], '.1f')} | {status(r)} |")
    if verdicts:
        lines += ["", "## JAX vs PyTorch", "",
                  "| scheme | forward gap (weights copied) | test-acc gap (own seeds) | verdict |",
                  "| --- | --- | --- | --- |"]
        for s, v in verdicts.items():
            lines.append(f"| {s} | {v['forward_rel_gap']:.1e} (tol {v['forward_tol']:g}) | "
                         f"{v['test_acc_gap']:.2%} (tol {v['test_acc_tol']:.1%}) | {v['verdict']} |")
    lines += [""] + [f"![{p}]({p})" for p in plots] + ["", *extra]
    write_atomic(out, "report.md", ("\n".join(lines) + "\n").encode())


def variance_markdown(result: dict, plots: list[str], description: str) -> list[str]:
    """Sections of report.md for ``variance.run``'s result (both commands use it)."""
    lines = ["## Variance through depth", "", f"Inputs: {description}. "
             "`Var[y]` is E[y^2] of each layer's pre-activation over the batch and the units; "
             "one step = n Var[w] E[x^2] from the layer's own measured input; chain = the closed "
             "form from the data alone.", "",
             "| scheme | fw | seeds | log10 Var[y] at layers 1 / 10 / last (median; chain) | "
             "measured / one step, worst layer | float32 |", "| --- | --- | --- | --- | --- | --- |"]
    for s in result["sweep"]:
        med, th = s["log10_var_median"], s["theory_log10_var"]
        at = " / ".join(f"{fmt(med[i], '.1f')} ({th[i]:.1f})" for i in (0, 9, s["layers"] - 1)
                        if i < s["layers"])
        lines.append(f"| {s['scheme']} | {s['framework']} | {s['seeds']} | {at} | "
                     f"{fmt(worst_ratio(s), '.3f')} | {first_fault(s) or 'ok'} |")
    if result["product"]:
        lines += ["", "### Notebook A's net, end to end", "",
                  "E[(y^5)^2] at init against E[(y^1)^2] prod_{l=2..5} n_l Var[w^l] / 2, means over "
                  "seeds (± one standard error). Var[out] is the notebook's variance (mean "
                  "removed), lower by the squared mean of 10 output units.", "",
                  "| scheme | fw | seeds | E[(y^1)^2] | predicted | measured | ratio | Var[out] |",
                  "| --- | --- | --- | --- | --- | --- | --- | --- |"]
        for p in result["product"]:
            lines.append(f"| {p['scheme']} | {p['framework']} | {p['seeds']} | "
                         f"{p['first_layer']:.4g} | {p['predicted']:.4g} | {p['output_sq']:.4g} "
                         f"± {p['output_sq_se']:.2g} | {p['ratio']:.3f} | {p['output_var']:.4g} |")
    if result["notebook_b"]:
        lines += ["", "### Notebook B's layer (784-50), standardised digits", "",
                  "Mean over seeds (seed-to-seed spread) | exact for Gaussian t "
                  "(sqrt(784 Var[w] E[x^2]); ReLU: 0.399 and 0.584 times that) | bias | "
                  "the notebook's single-seed print.", "",
                  "| scheme | fw | seeds | std of t | ReLU mean | ReLU std |",
                  "| --- | --- | --- | --- | --- | --- |"]
        for b in result["notebook_b"]:
            cells = [f"{b[k]['mean']:.4g} ({b[k]['spread']:.2g}) / {b[k]['exact']:.4g} / "
                     f"{b[k]['bias']:+.1%}" + (f" / nb {b[k]['notebook']}" if b[k]["notebook"]
                                               else "") for k in ("std", "relu_mean", "relu_std")]
            lines.append(f"| {b['scheme']} | {b['framework']} | {b['seeds']} | {' | '.join(cells)} |")
    return lines + [""] + [f"![{p}]({p})" for p in plots]


def gain_markdown(rows: list[dict], plots: list[str]) -> list[str]:
    """report.md's section for ``gain_sweep.run``."""
    from winit_jax.lab.gain_depth import exact_and_he, noise_horizon, worst_factor

    try:
        from reference_torch.gain import calculate_gain
    except ImportError:  # torch not installed: the column says so
        def calculate_gain(name):
            return "n/a"

    if not rows:
        return []
    r0 = rows[0]
    lines = ["## Exact gains through depth", "",
             f"Width {r0['width']}, {len(r0['mean_var'])} layers, N(0, 1) inputs, "
             f"{r0['seeds']} seeds; Var[w] = g^2 / n with the exact g^2 = 1 / E[f(z)^2] "
             "or He's 2. Worst factor: max over layers of the mean Var[y^l] or its inverse. "
             "Map slope > 1: the exact gain's fixed point is unstable, and finite-width noise "
             "grows after about the noise horizon's layers.", "",
             "| activation | fw | exact g^2 | torch gain^2 | map slope | horizon | "
             "exact: worst factor | exact: last layer | He: last layer (infinite width) |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r, he in exact_and_he(rows):
        act, fw = r["activation"], r["framework"]
        tg = calculate_gain(act)
        torch_g2 = "none" if tg is None else tg if isinstance(tg, str) else f"{tg * tg:.4f}"
        lines.append(
            f"| {act} | {fw} | {r['gain_sq']:.4f} | {torch_g2} | {r['map_slope']:.3f} | "
            f"{min(noise_horizon(r['map_slope'], r['width']), len(r['mean_var']))} | "
            f"{worst_factor(r):.3g} | {r['mean_var'][-1]:.3g} | "
            + (f"{he['mean_var'][-1]:.3g} ({he['theory'][-1]:.3g})" if he else "") + " |")
    return lines + [""] + [f"![{p}]({p})" for p in plots]
