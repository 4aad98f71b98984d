"""``winit-jax``: notebook A's initialisation comparison in JAX and PyTorch, one command."""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from pathlib import Path

import numpy as np

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


def _common(p, schemes, *, frameworks=True):
    from winit_jax.lab.experiment import DATASETS, FRAMEWORKS

    p.add_argument("--schemes", type=_csv(list(schemes), "scheme"), default=list(schemes),
                   help=f"comma-separated (default: all: {','.join(schemes)})")
    if frameworks:
        p.add_argument("--frameworks", type=_csv(FRAMEWORKS, "framework"),
                       default=list(FRAMEWORKS))
    p.add_argument("--dataset", choices=DATASETS, default="auto")
    p.add_argument("--data-dir", type=Path, default=None,
                   help="holds MNIST/raw/ (default: $WINIT_DATA_DIR, ../shared/data, ./data)")
    p.add_argument("--out", type=Path, default=None, help="default: runs/<timestamp>")
    p.add_argument("--quiet", action="store_true")


def build_parser() -> argparse.ArgumentParser:
    from winit_jax.activations import ACTIVATIONS
    from winit_jax.schemes import SCHEMES

    parser = _Parser(prog="winit-jax", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    p = sub.add_parser("compare", help="train every scheme in JAX and torch; write a report")
    _common(p, SCHEMES)
    p.add_argument("--seeds", type=_positive(int), default=1)
    p.add_argument("--seed", type=int, default=0, help="first seed")
    p.add_argument("--epochs", type=_positive(int), default=10)
    p.add_argument("--lr", type=_positive(float), default=0.01)
    p.add_argument("--momentum", type=_momentum, default=0.6)
    p.add_argument("--batch-size", type=_positive(int), default=100)
    p.add_argument("--limit", type=_positive(int), default=None,
                   help="train on this many rows only (quick runs)")
    p.add_argument("--variance-seeds", type=_positive(int), default=8,
                   help="seeds of the depth sweep plotted in variance_depth.png")
    _resume_flag(p)
    p.set_defaults(func=cmd_compare)

    p = sub.add_parser("variance", help="variance through depth and notebook B's layer, "
                                        "measured against the closed forms")
    _common(p, SCHEMES)
    p.add_argument("--seeds", type=_positive(int), default=16, help="seeds of the depth sweep")
    p.add_argument("--width", type=_positive(int), default=256)
    p.add_argument("--depth", type=_positive(int), default=50)
    p.add_argument("--rows", type=_positive(int), default=500, help="digits per forward pass")
    p.add_argument("--product-seeds", type=_positive(int), default=64,
                   help="seeds for notebook A's end-to-end product formula")
    p.add_argument("--notebook-b-seeds", type=_positive(int), default=32)
    p.add_argument("--activations", type=_csv(list(ACTIVATIONS), "activation"),
                   default=list(ACTIVATIONS), help="exact-gain sweep (default: all)")
    p.add_argument("--gain-seeds", type=_positive(int), default=32)
    p.add_argument("--gain-width", type=_positive(int), default=512)
    p.add_argument("--gain-rows", type=_positive(int), default=32,
                   help="N(0, 1) input rows of the exact-gain sweep")
    p.set_defaults(func=cmd_variance)

    p = sub.add_parser("sweep", help="many JAX models in one program (schemes x seeds x learning "
                                     "rates), sharded over every device of every host")
    _common(p, SCHEMES, frameworks=False)  # JAX only: --frameworks is refused
    p.add_argument("--seeds", type=_positive(int), default=8)
    p.add_argument("--seed", type=int, default=0, help="first seed")
    p.add_argument("--lrs", type=_floats, default=[0.01], help="comma-separated learning rates")
    p.add_argument("--momentum", type=_momentum, default=0.6)
    p.add_argument("--epochs", type=_positive(int), default=10)
    p.add_argument("--batch-size", type=_positive(int), default=100)
    p.add_argument("--limit", type=_positive(int), default=None, help="train on this many rows only")
    p.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    p.add_argument("--save-params", action="store_true", help="also write params.npz")
    p.add_argument("--coordinator", default=os.environ.get("JAX_COORDINATOR_ADDRESS"),
                   help="HOST:PORT of process 0 for a multi-host run "
                        "(default: $JAX_COORDINATOR_ADDRESS)")
    p.add_argument("--num-processes", type=_positive(int),
                   default=os.environ.get("WINIT_NUM_PROCESSES"), help="$WINIT_NUM_PROCESSES")
    p.add_argument("--process-id", type=int, default=os.environ.get("WINIT_PROCESS_ID"),
                   help="$WINIT_PROCESS_ID")
    _resume_flag(p)
    p.set_defaults(func=cmd_sweep, frameworks=["jax"])

    from winit_jax.lab.examples import EXAMPLES
    examples = (*EXAMPLES, "mnist_cnn")  # the notebooks' digits: the lab's own example
    p = sub.add_parser("parity", help="check an nnx port against its torch original: init, "
                                      "forward, gradients, training steps")
    p.add_argument("--example", choices=examples, default=None,
                   help="a built-in pair (torchvision ResNet-18, Transformer encoder layer, LSTM, "
                        "a small CNN trained one epoch on real digits)")
    p.add_argument("--torch", default=None, metavar="MODULE:FACTORY",
                   help="factory() -> the torch module")
    p.add_argument("--flax", default=None, metavar="MODULE:FACTORY",
                   help="factory(rngs) -> the nnx port")
    p.add_argument("--input-shape", type=_shape, default=None, metavar="N,C,...",
                   help="the batch in torch's layout (standard normal, seed 0)")
    p.add_argument("--channels-last", action="store_true",
                   help="the port takes (and gives) channels last: NCHW <-> NHWC")
    p.add_argument("--steps", type=int, default=None,
                   help="SGD steps (0: none; default 3; mnist_cnn: one epoch of batches)")
    p.add_argument("--lr", type=_positive(float), default=None, help="default 0.01")
    p.add_argument("--momentum", type=_momentum, default=None,
                   help="default 0.9 (mnist_cnn: the notebook's 0.6)")
    p.add_argument("--train", action="store_true", help="train mode (BatchNorm batch statistics)")
    p.add_argument("--init-seeds", type=int, default=None, help="seeds of the init check (0: none)")
    p.add_argument("--json", type=Path, default=None, help="also write the report here")
    p.add_argument("--layers", action="store_true",
                   help="also print every paired layer's input and output gap, in call order")
    p.set_defaults(func=cmd_parity)
    return parser


def _shape(text):
    try:
        dims = tuple(int(t) for t in text.split(","))
    except ValueError:
        dims = ()
    if not dims or min(dims) < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers like 2,3,32,32, got {text!r}")
    return dims


def _blame(error, args) -> str:
    """The argument a ParityError is about: the inputs' shape, the layout flag, or the pair."""
    if str(error).startswith("inputs:"):
        return "argument --input-shape"
    if str(error).startswith("outputs:"):
        return "argument --channels-last"
    return "argument --example" if args.example else "arguments --torch/--flax"


def cmd_parity(args, parser) -> int:
    """Runs ``winit_jax.parity.check``; exit 0 when every check passes, 1 when one fails."""
    import json

    import numpy as np
    from flax import nnx

    from winit_jax import parity
    from winit_jax.lab import examples as E
    from winit_jax.lab.experiment import torch_available
    from winit_jax.parity import nchw, nhwc

    if not torch_available():
        parser.error("argument --torch: torch is not installed (pip install 'winit-jax[torch]')")
    if (args.example is None) == (args.torch is None and args.flax is None):
        parser.error("argument --example: give --example, or --torch and --flax")
    if args.example:
        if args.example == "mnist_cnn":
            from winit_jax.lab.cnn_example import mnist_cnn
            torch_module, model, x, kwargs = mnist_cnn()
        else:
            torch_module, model, x, kwargs = E.example(args.example)
    else:
        if args.torch is None or args.flax is None or args.input_shape is None:
            parser.error("argument --torch: needs --flax and --input-shape too")
        try:
            torch_factory = E.load_factory(args.torch, "argument --torch")
            flax_factory = E.load_factory(args.flax, "argument --flax")
        except ValueError as e:
            parser.error(str(e))
        torch_module, model = torch_factory(), flax_factory(nnx.Rngs(0))
        x = np.random.default_rng(0).standard_normal(args.input_shape).astype(np.float32)
        kwargs = dict(init_seeds=4, fresh_torch=torch_factory)
        if args.channels_last:
            kwargs.update(flax_inputs=nhwc, flax_outputs=nchw)
    if "batches" in kwargs and args.steps is not None:
        parser.error(f"argument --steps: the {args.example} example trains one step per batch "
                     "of its epoch")
    for key, flag, default in (("steps", args.steps, 3), ("learning_rate", args.lr, 0.01),
                               ("momentum", args.momentum, 0.9)):
        kwargs[key] = flag if flag is not None else kwargs.get(key, default)
    if "batches" in kwargs:
        del kwargs["steps"]
    kwargs["train"] = kwargs.get("train", False) or args.train
    if args.init_seeds is not None:
        kwargs["init_seeds"] = args.init_seeds
    try:
        report = parity.check(torch_module, model, x, **kwargs)
    except parity.ParityError as e:
        parser.error(f"{_blame(e, args)}: {e}")
    print(report.table())
    if args.layers:
        print(report.layer_table())
    if report.metrics:
        print("metric after training: " + ", ".join(f"{k} {v:.4g}"
                                                    for k, v in report.metrics.items()))
    if args.json is not None:
        from winit_jax.lab.files import write_atomic
        write_atomic(args.json.parent, args.json.name,
                     (json.dumps(report.to_json(), indent=2) + "\n").encode())
    if report.ok:
        print("parity: every check passed")
        return 0
    try:
        report.assert_ok()
    except AssertionError as e:
        print(f"parity: {e}")
    return 1


def _resume_flag(p):
    p.add_argument("--resume", type=Path, default=None, metavar="DIR",
                   help="continue the interrupted run whose --out was DIR, with its config")


def _fail(parser, error) -> None:
    """A ``RunError`` as the command's one-line usage error (exit 2)."""
    parser.error(f"argument {error.flag}: {error}")


def _options(args) -> dict:
    return {k: v for k, v in vars(args).items() if k != "func"}


def run_config(args) -> dict:
    """What a run computes from: recorded in ``checkpoints/config.json``."""
    from winit_jax.lab.runs import run_config as config
    return config(args.command, vars(args))


def _apply_resume(args, parser):
    """``--resume DIR``: the recorded config becomes this run's (``runs.resumed_options``)."""
    from winit_jax.lab.runs import RunError, resumed_options

    if args.resume is None:
        return
    defaults = vars(parser.parse_args([args.command]))
    try:
        new = resumed_options(args.command, _options(args), defaults, args.resume, args.out)
    except RunError as e:
        _fail(parser, e)
    for k, v in new.items():
        setattr(args, k, v)


def _checkpoint(args, parser):
    from winit_jax.lab.runs import RunError, claim
    try:
        return claim(args.out, run_config(args), resume=args.resume is not None)
    except RunError as e:
        _fail(parser, e)


def _floats(text):
    parse = _positive(float)
    values = [parse(t) for t in text.split(",") if t.strip()]
    if not values:
        raise argparse.ArgumentTypeError(f"expected positive numbers, got {text!r}")
    return list(dict.fromkeys(values))


def _check_dirs(parser, args):
    from winit_jax.lab.experiment import default_data_dir
    args.data_dir = args.data_dir or default_data_dir()
    d = args.data_dir
    if d.exists() and (not d.is_dir() or not os.access(d, os.R_OK | os.X_OK)):
        parser.error(f"argument --data-dir: {d} is not a readable directory")
    args.out = args.out or Path("runs") / time.strftime("%Y%m%d-%H%M%S")
    try:
        args.out.mkdir(parents=True, exist_ok=True)
        probe = args.out / f".write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        parser.error(f"argument --out: cannot write to {args.out} ({e.strerror or e})")


def _setup(args, parser):
    """Checks the directories and torch, loads the data; returns (dataset, notices)."""
    from rich.console import Console
    from rich.text import Text

    from winit_jax.lab.data import DataError
    from winit_jax.lab.experiment import load_dataset, torch_available

    _check_dirs(parser, args)
    err = Console(stderr=True, quiet=args.quiet)
    notices = []

    def notice(msg):
        notices.append(msg)
        err.print(Text.assemble(("note: ", "yellow"), msg))

    if "torch" in getattr(args, "frameworks", ()) and not torch_available():
        args.frameworks.remove("torch")
        notice("PyTorch reference not installed (pip install 'winit-jax[torch]'): JAX only")
        if not args.frameworks:
            parser.error("argument --frameworks: torch is not installed (allowed here: jax)")
    try:
        dataset = load_dataset(args.dataset, args.data_dir, notice=notice)
    except DataError as e:
        parser.error(f"argument --dataset {args.dataset}: {e}")
    return dataset, notices


def _variance(args, dataset, rows, **kw):
    """``depth.run`` on ``rows`` training digits drawn with seed 0, with a progress bar."""
    from winit_jax.lab import depth as V

    pick = np.random.default_rng(0).permutation(len(dataset.x_train))[:rows]
    return _run_with_progress(
        lambda cb: V.run(args.schemes, args.frameworks, dataset.x_train[pick], dataset.x_b,
                         on_step=cb, **kw),
        len(V.plan(args.schemes, args.frameworks, seeds=kw["seeds"],
                   product_seeds=kw["product_seeds"], notebook_b_seeds=kw["notebook_b_seeds"])),
        quiet=args.quiet or not sys.stderr.isatty(), describe=str)


def cmd_compare(args, parser) -> int:
    from winit_jax.lab import plots, report, verdict
    from winit_jax.lab.experiment import compare, run_kinds, summarise
    from winit_jax.lab.runs import finish
    from winit_jax.lab.train import TrainConfig

    _apply_resume(args, parser)
    dataset, notices = _setup(args, parser)
    ckpt = _checkpoint(args, parser)
    if args.limit:
        dataset = dataset.head(min(args.limit, len(dataset.x_train)), len(dataset.x_test))
    config = TrainConfig(learning_rate=args.lr, momentum=args.momentum, batch_size=args.batch_size,
                         epochs=args.epochs, seed=args.seed)
    total = len(args.schemes) * len(run_kinds(args.frameworks)) * args.seeds
    results = _run_with_progress(
        lambda cb: compare(args.schemes, args.frameworks, args.seeds, config, dataset, cb,
                           checkpoint=ckpt),
        total, quiet=args.quiet or not sys.stderr.isatty(),
        describe=lambda r: f"{r.scheme} {r.framework} seed {r.seed}")
    rows = summarise(results)
    verdicts = verdict.verdicts(results, config, dataset)
    n_rows = min(500, len(dataset.x_train))
    variance = _variance(args, dataset, n_rows, seeds=args.variance_seeds, product_seeds=0,
                         notebook_b_seeds=0)
    images = [plots.plot_losses(args.out, results), plots.plot_accuracy(args.out, rows),
              plots.plot_variance(args.out, variance["sweep"])]
    report.write_results(args.out, run_config(args), dataset, results, rows, verdicts, notices,
                         variance)
    report.write_markdown(args.out, dataset, rows, verdicts, notices, images[:2],
                          report.variance_markdown(variance, images[2:], f"{n_rows} digits of "
                                                   f"{dataset.description}, pixels / 256"))
    finish(ckpt)
    if not args.quiet:
        tables = [report.compare_table(rows, verdicts, dataset)]
        tables += [report.verdict_table(verdicts)] if verdicts else []
        _print(tables, f"wrote {args.out}/results.json, report.md and plots",
               columns=[("scheme", "fw", "Var[out]", "loss", "train", "test", "status"), None])
    return 0


def cmd_variance(args, parser) -> int:
    from winit_jax.lab import gain_depth, plots, report

    dataset, notices = _setup(args, parser)
    rows = min(args.rows, len(dataset.x_train))
    result = _variance(args, dataset, rows, seeds=args.seeds, width=args.width, depth=args.depth,
                       product_seeds=args.product_seeds, notebook_b_seeds=args.notebook_b_seeds)
    result["gain_sweep"] = _run_with_progress(
        lambda cb: gain_depth.run(args.activations, args.frameworks, seeds=args.gain_seeds,
                                  width=args.gain_width, depth=args.depth, rows=args.gain_rows,
                                  on_step=cb),
        len(args.frameworks), quiet=args.quiet or not sys.stderr.isatty(), describe=str)
    images = [plots.plot_variance(args.out, result["sweep"]),
              plots.plot_gain_sweep(args.out, result["gain_sweep"])]
    report.write_variance(args.out, run_config(args), dataset, rows, notices, result, images)
    if not args.quiet:
        tables = [report.depth_table(result["sweep"])]
        tables += [report.notebook_b_table(result["notebook_b"])] if result["notebook_b"] else []
        tables += [report.product_table(result["product"])] if result["product"] else []
        tables += [report.gain_table(result["gain_sweep"])] if result["gain_sweep"] else []
        _print(tables, f"wrote {args.out}/results.json, report.md, variance_depth.png and "
                       "gain_depth.png")
    return 0


def cmd_sweep(args, parser) -> int:
    import jax

    from winit_jax.lab.runs import RunError, init_distributed

    _apply_resume(args, parser)
    try:
        init_distributed(args.coordinator, args.num_processes, args.process_id)
    except RunError as e:
        _fail(parser, e)
    # float64 for this command's computation only, not a process-wide switch.
    with jax.enable_x64(args.dtype == "float64"):
        return _sweep(args, parser)


def _sweep(args, parser) -> int:
    import jax

    from winit_jax.lab import report
    from winit_jax.lab.many import fit_many
    from winit_jax.lab.runs import finish
    from winit_jax.lab.sweep import sweep_configs, sweep_summary, write_sweep

    dataset, notices = _setup(args, parser)
    ckpt = _checkpoint(args, parser)
    if args.limit:
        dataset = dataset.head(min(args.limit, len(dataset.x_train)), len(dataset.x_test))
    configs = sweep_configs(args.schemes, args.lrs, args.seeds, momentum=args.momentum,
                            batch_size=args.batch_size, epochs=args.epochs, seed=args.seed,
                            dtype=args.dtype)
    fitted = fit_many(configs, dataset.arrays(), checkpoint=ckpt)
    if jax.process_index() != 0:
        finish(ckpt)
        return 0  # process 0 writes for the whole cluster
    summary = sweep_summary(configs, fitted.results)
    write_sweep(args.out, run_config(args), configs, fitted, summary,
                dataset=dataset.description, notices=notices, devices=jax.device_count(),
                processes=jax.process_count(), versions=report.versions(),
                save_params=args.save_params)
    finish(ckpt)
    if not args.quiet:
        _print([report.sweep_table(summary, jax.device_count(), jax.process_count())],
               f"wrote {args.out}/results.json")
    return 0


def _run_with_progress(run, total, quiet, describe):
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
    )

    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), disable=quiet, transient=True) as progress:
        task = progress.add_task("training", total=total)

        def on_result(r):
            progress.update(task, advance=1, description=describe(r))
        return run(on_result)


def _print(tables, closing: str, columns=None) -> None:
    """The lab's tables in the terminal (at most 100 columns wide; the columns named per
    table in ``columns``, default all), then one closing line."""
    from rich.console import Console

    console = Console(width=min(100, Console().width))
    for i, table in enumerate(tables):
        console.print(table.rich(columns=None if columns is None else columns[i]))
    console.print(closing)


def main(argv=None) -> int:
    from winit_jax._cache import enable_persistent_cache

    parser = build_parser()
    args = parser.parse_args(argv)
    enable_persistent_cache()  # a second run loads its compiled programs (WINIT_JAX_CACHE=off)
    return args.func(args, parser)


if __name__ == "__main__":
    sys.exit(main())
