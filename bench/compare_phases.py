"""Where the default ``winit-jax compare`` spends its time, and its runtime against another
checkout (issue #18: the verdict may add at most 25 % to the default run).

Each round runs ``python -m winit_jax compare --out TMP --quiet`` (plus any arguments after
``--``) in a fresh process, once with this checkout's code and once with a baseline
revision's (a ``git worktree`` at ``--baseline``), alternating, so that the machine's noise
hits both alike. Each process times its phases (the JAX training, the torch runs, the paired
torch runs, the verdict, the depth sweep, plots) by wrapping those functions; phases a
revision does not have are left out. Prints each round, the medians and their ratio.

    python bench/compare_phases.py [--baseline 6d73405] [--rounds 3] [-- compare args]

Both use the same environment (this interpreter) and ``$WINIT_DATA_DIR`` (default: this
checkout's data directory, so that both read the same digits).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PHASES = [  # (module, function, phase)
    ("winit_jax.lab.data", "load_sample", "data"),
    ("winit_jax.lab.many", "train_many", "jax training"),
    ("winit_jax.lab.experiment", "_torch_run", "torch runs (all)"),
    ("winit_jax.lab.experiment", "paired_torch_run", "of which paired"),
    ("winit_jax.lab.verdict", "verdicts", "verdict"),
    ("winit_jax.lab.depth", "run", "depth sweep"),
    ("winit_jax.lab.variance", "run", "depth sweep"),  # older checkouts' name
    ("winit_jax.lab.plots", "plot_losses", "plots"),
    ("winit_jax.lab.plots", "plot_accuracy", "plots"),
    ("winit_jax.lab.plots", "plot_variance", "plots"),
]


def child(argv) -> None:
    """Runs the CLI with timers around PHASES; prints one JSON line of seconds."""
    import importlib

    spent = {}

    def timer(fn, phase):
        def timed(*a, **k):
            t = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                spent[phase] = spent.get(phase, 0.0) + time.perf_counter() - t
        return timed

    start = time.perf_counter()
    for module, name, phase in PHASES:
        try:
            m = importlib.import_module(module)
        except ImportError:
            continue
        if hasattr(m, name):
            setattr(m, name, timer(getattr(m, name), phase))
    from winit_jax.lab.cli import main
    rc = main(argv)
    spent["total (in process)"] = time.perf_counter() - start
    print("PHASES " + json.dumps(spent))
    sys.exit(rc)


def run_once(code: Path, args, data_dir) -> dict:
    with tempfile.TemporaryDirectory() as out:
        env = {**os.environ, "PYTHONPATH": str(code), "WINIT_DATA_DIR": str(data_dir)}
        t = time.perf_counter()
        proc = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--child", "--",
                               "compare", "--out", out, "--quiet", *args],
                              cwd=code, env=env, capture_output=True, text=True)
        wall = time.perf_counter() - t
    if proc.returncode:
        raise SystemExit(f"compare failed in {code}:\n{proc.stderr[-2000:]}")
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("PHASES ")][-1]
    return {"wall": wall, **json.loads(line[len("PHASES "):])}


def main():
    if "--child" in sys.argv:
        child(sys.argv[sys.argv.index("--") + 1:])
    argv = sys.argv[1:]
    extra = argv[argv.index("--") + 1:] if "--" in argv else []
    argv = argv[:argv.index("--")] if "--" in argv else argv
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--baseline", default="6d73405",
                   help="revision to compare against (default: the last commit before #18)")
    p.add_argument("--rounds", type=int, default=3)
    args = p.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    from winit_jax.lab.experiment import default_data_dir
    os.chdir(ROOT)
    data_dir = Path(os.environ.get("WINIT_DATA_DIR") or default_data_dir()).resolve()
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp) / "baseline"
        subprocess.run(["git", "worktree", "add", "--detach", str(base), args.baseline],
                       cwd=ROOT, check=True, capture_output=True)
        try:
            rows = {"baseline": [], "current": []}
            for r in range(args.rounds):
                for name, code in (("baseline", base), ("current", ROOT)):
                    rows[name].append(run_once(code, extra, data_dir))
                    phases = ", ".join(f"{k} {v:.1f}" for k, v in rows[name][-1].items()
                                       if k != "wall")
                    print(f"round {r + 1} {name:8s} wall {rows[name][-1]['wall']:6.1f} s  "
                          f"({phases})", flush=True)
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(base)], cwd=ROOT,
                           capture_output=True)

    walls = {k: [x["wall"] for x in v] for k, v in rows.items()}
    for k, v in walls.items():
        print(f"{k:8s} ({args.baseline if k == 'baseline' else 'this checkout'}): "
              f"{', '.join(f'{x:.1f}' for x in v)} s; median {statistics.median(v):.1f} s")
    ratios = [c / b for b, c in zip(walls["baseline"], walls["current"])]
    print(f"current / baseline: median {statistics.median(walls['current']) / statistics.median(walls['baseline']):.3f}"
          f" (per round: {', '.join(f'{x:.3f}' for x in ratios)})")


if __name__ == "__main__":
    main()
