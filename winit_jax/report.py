"""What ``winit-jax compare`` writes: parity verdicts, results.json, report.md, PNG plots."""

from __future__ import annotations

import dataclasses
import math
import platform

import numpy as np

from winit_jax.io import write_atomic, write_json

FORWARD_TOL = 1e-5  # max |logit diff| / max |logit|, HF transformers' PT<->Flax tolerance
ACC_TOL = 0.01      # |mean test accuracy JAX - torch|, independent seeds


def exact_forward_gap(scheme: str, x: np.ndarray, seed: int = 0) -> float:
    """A torch model with ``scheme``, its weights moved to Flax: max relative logit gap."""
    import jax.numpy as jnp
    import torch

    from reference_torch.train import make_model
    from winit_jax.parity import from_torch
    from winit_jax.registry import get_scheme

    torch.manual_seed(seed)
    model = make_model()
    model.apply(get_scheme(scheme).torch_init())
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
        diverged = j["diverged_at"] is not None or t["diverged_at"] is not None
        ok = gap <= FORWARD_TOL and (acc_gap < ACC_TOL or diverged)
        out[scheme] = {"forward_rel_gap": gap, "forward_tol": FORWARD_TOL,
                       "test_acc_gap": acc_gap, "test_acc_tol": ACC_TOL,
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


def write_results(out, config, dataset, results, rows, verdicts, notices) -> None:
    write_json(out, "results.json", {
        "config": config, "dataset": {"name": dataset.name, "description": dataset.description,
                                      "n_train": len(dataset.x_train), "n_test": len(dataset.x_test)},
        "versions": versions(), "notices": notices, "summary": rows, "parity": verdicts,
        "runs": [dataclasses.asdict(r) for r in results]})


def fmt(v, spec):
    return "n/a" if v is None or (isinstance(v, float) and not math.isfinite(v)) else format(v, spec)


def status(row) -> str:
    return "ok" if row["diverged_at"] is None else f"diverged at step {row['diverged_at']}"


def write_markdown(out, dataset, rows, verdicts, notices, plots) -> None:
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
                         f"{v['test_acc_gap']:.2%} (tol {v['test_acc_tol']:.0%}) | {v['verdict']} |")
    lines += [""] + [f"![{p}]({p})" for p in plots]
    write_atomic(out, "report.md", ("\n".join(lines) + "\n").encode())


def plot_losses(out, results) -> str:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    schemes = list(dict.fromkeys(r.scheme for r in results))
    first_seed = min(r.seed for r in results)  # one curve per framework: the first seed's
    fig, axes = plt.subplots(len(schemes), 1, figsize=(8, 2.6 * len(schemes)), squeeze=False)
    for ax, scheme in zip(axes[:, 0], schemes):
        for r in results:
            if r.scheme == scheme and r.seed == first_seed:
                losses = np.asarray(r.losses, np.float64)
                ax.plot(np.where(np.isfinite(losses), losses, np.nan), lw=0.7, label=r.framework)
        finite = [v for r in results if r.scheme == scheme for v in r.losses
                  if v is not None and math.isfinite(v) and v > 0]
        if finite and max(finite) > 100 * max(min(finite), 1e-12):
            ax.set_yscale("log")  # a diverging run spans many decades
        diverged = sorted({r.diverged_at for r in results if r.scheme == scheme} - {None})
        ax.set_title(scheme + (f" (diverged at step {diverged[0]})" if diverged else ""))
        ax.set_ylabel("batch loss")
        ax.axhline(math.log(10), color="grey", ls=":", lw=0.8)
        ax.legend(loc="upper right")
    axes[-1, 0].set_xlabel("batch")
    fig.tight_layout()
    return _save(fig, out, "loss_curves.png")


def plot_accuracy(out, rows) -> str:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    schemes = list(dict.fromkeys(r["scheme"] for r in rows))
    frameworks = list(dict.fromkeys(r["framework"] for r in rows))
    fig, ax = plt.subplots(figsize=(8, 3.5))
    width = 0.8 / len(frameworks)
    for i, fw in enumerate(frameworks):
        acc = [next((r["test_acc_mean"] for r in rows if r["scheme"] == s and r["framework"] == fw),
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
    import io

    import matplotlib.pyplot as plt
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    write_atomic(out, name, buf.getvalue())
    return name
