"""``winit-jax``: notebook A's initialisation comparison in JAX and PyTorch, one command."""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import sys
import time
from pathlib import Path

EXIT_USAGE = 2


class _Parser(argparse.ArgumentParser):
    """argparse that reports errors as one line and exit status 2."""

    def error(self, message):
        sys.stderr.write(f"winit-jax: error: {message}\n")
        sys.exit(EXIT_USAGE)


def _positive(kind):
    def parse(text):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a positive {kind.__name__}, got {text!r}")
        if not (value > 0 and math.isfinite(value)):
            raise argparse.ArgumentTypeError(f"expected a positive {kind.__name__}, got {text!r}")
        return value
    return parse


def _momentum(text):
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1), got {text!r}")
    return value


def _csv(allowed, what):
    def parse(text):
        items = [s.strip() for s in text.split(",") if s.strip()]
        bad = [s for s in items if s not in allowed]
        if bad or not items:
            raise argparse.ArgumentTypeError(
                f"unknown {what} {', '.join(map(repr, bad)) or repr(text)} "
                f"(allowed: {', '.join(allowed)})")
        return list(dict.fromkeys(items))
    return parse


def build_parser() -> argparse.ArgumentParser:
    from winit_jax.experiment import DATASETS, FRAMEWORKS
    from winit_jax.registry import SCHEMES

    parser = _Parser(prog="winit-jax", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    p = sub.add_parser("compare", help="train every scheme in JAX and torch; write a report")
    p.add_argument("--schemes", type=_csv(list(SCHEMES), "scheme"), default=list(SCHEMES),
                   help=f"comma-separated (default: all: {','.join(SCHEMES)})")
    p.add_argument("--frameworks", type=_csv(FRAMEWORKS, "framework"), default=list(FRAMEWORKS))
    p.add_argument("--seeds", type=_positive(int), default=1)
    p.add_argument("--seed", type=int, default=0, help="first seed")
    p.add_argument("--epochs", type=_positive(int), default=10)
    p.add_argument("--lr", type=_positive(float), default=0.01)
    p.add_argument("--momentum", type=_momentum, default=0.6)
    p.add_argument("--batch-size", type=_positive(int), default=100)
    p.add_argument("--dataset", choices=DATASETS, default="auto")
    p.add_argument("--data-dir", type=Path, default=None,
                   help="holds MNIST/raw/ (default: $WINIT_DATA_DIR, ../shared/data, ./data)")
    p.add_argument("--limit", type=_positive(int), default=None,
                   help="train on this many rows only (quick runs)")
    p.add_argument("--out", type=Path, default=None, help="default: runs/<timestamp>")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_compare)
    return parser


def _check_dirs(parser, args):
    from winit_jax.experiment import default_data_dir
    args.data_dir = args.data_dir or default_data_dir()
    d = args.data_dir
    if d.exists() and (not d.is_dir() or not os.access(d, os.R_OK | os.X_OK)):
        parser.error(f"argument --data-dir: {d} is not a readable directory")
    args.out = args.out or Path("runs") / time.strftime("%Y%m%d-%H%M%S")
    try:
        args.out.mkdir(parents=True, exist_ok=True)
        probe = args.out / ".write-test"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        parser.error(f"argument --out: cannot write to {args.out} ({e.strerror or e})")


def cmd_compare(args, parser) -> int:
    from rich.console import Console

    from winit_jax import report
    from winit_jax.data import DataError
    from winit_jax.experiment import compare, load_dataset, summarise, torch_available
    from winit_jax.train import TrainConfig

    _check_dirs(parser, args)
    err = Console(stderr=True, quiet=args.quiet)
    notices = []

    def notice(msg):
        notices.append(msg)
        err.print(f"[yellow]note:[/] {msg}", highlight=False)

    if "torch" in args.frameworks and not torch_available():
        args.frameworks.remove("torch")
        notice("PyTorch reference not installed (pip install 'winit-jax[torch]'): JAX only")
        if not args.frameworks:
            parser.error("argument --frameworks: torch is not installed (allowed here: jax)")
    try:
        dataset = load_dataset(args.dataset, args.data_dir, notice=notice)
    except DataError as e:
        parser.error(f"argument --dataset {args.dataset}: {e}")
    if args.limit:
        dataset = dataset.head(min(args.limit, len(dataset.x_train)), len(dataset.x_test))
    config = TrainConfig(learning_rate=args.lr, momentum=args.momentum, batch_size=args.batch_size,
                         epochs=args.epochs, seed=args.seed)
    total = len(args.schemes) * len(args.frameworks) * args.seeds
    results = _run_with_progress(
        lambda cb: compare(args.schemes, args.frameworks, args.seeds, config, dataset, cb),
        total, quiet=args.quiet or not sys.stderr.isatty())
    rows = summarise(results)
    verdicts = report.parity_verdicts(rows, dataset.x_test[:1000]) if len(args.frameworks) == 2 else {}
    plots = [report.plot_losses(args.out, results), report.plot_accuracy(args.out, rows)]
    config_dict = {**dataclasses.asdict(config), "schemes": args.schemes,
                   "frameworks": args.frameworks, "seeds": args.seeds, "dataset": args.dataset,
                   "data_dir": str(args.data_dir)}
    report.write_results(args.out, config_dict, dataset, results, rows, verdicts, notices)
    report.write_markdown(args.out, dataset, rows, verdicts, notices, plots)
    if not args.quiet:
        _print_table(rows, verdicts, dataset, args.out)
    return 0


def _run_with_progress(run, total, quiet):
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), disable=quiet, transient=True) as progress:
        task = progress.add_task("training", total=total)

        def on_result(r):
            progress.update(task, advance=1, description=f"{r.scheme} {r.framework} seed {r.seed}")
        return run(on_result)


def _print_table(rows, verdicts, dataset, out):
    from rich.console import Console
    from rich.table import Table

    from winit_jax.report import fmt, status

    console = Console(width=min(100, Console().width))
    table = Table(title=f"winit-jax compare: {dataset.name}, "
                        f"{len(dataset.x_train)} train / {len(dataset.x_test)} test")
    for col in ("scheme", "fw", "Var[out]", "loss", "train", "test", "s", "parity / status"):
        table.add_column(col, justify="left" if col in ("scheme", "fw", "parity / status") else "right")
    for r in rows:
        v = verdicts.get(r["scheme"], {}).get("verdict", "")
        st = status(r)
        table.add_row(r["scheme"], r["framework"], fmt(r["output_var_mean"], ".2g"),
                      fmt(r["final_loss_mean"], ".3f"), fmt(r["train_acc_mean"], ".1%"),
                      fmt(r["test_acc_mean"], ".1%"), fmt(r["wall_s_mean"], ".1f"),
                      st if st != "ok" else (v or "ok"))
    console.print(table)
    console.print(f"wrote {out}/results.json, report.md and plots")


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    return args.func(args, parser)


if __name__ == "__main__":
    sys.exit(main())
