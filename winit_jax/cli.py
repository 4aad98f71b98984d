"""The ``winit-jax`` command."""

from __future__ import annotations

import argparse
import sys


class _Parser(argparse.ArgumentParser):
    """argparse that reports errors as one line and exit status 2."""

    def error(self, message):
        sys.stderr.write(f"winit-jax: error: {message}\n")
        sys.exit(2)


def _init_table(args) -> int:
    import jax
    import numpy as np
    from rich.console import Console
    from rich.table import Table

    from winit_jax.registry import SCHEMES
    fan_in, fan_out = 784, 512
    table = Table(title=f"A {fan_in}x{fan_out} kernel per scheme: measured vs theory")
    for col in ("scheme", "formula", "framework", "mean", "std", "theory std", "max |w|"):
        table.add_column(col, justify="left" if col in ("scheme", "formula", "framework") else "right")
    for scheme in SCHEMES.values():
        draws = {"jax": np.asarray(scheme.jax_init()(jax.random.key(args.seed), (fan_in, fan_out)))}
        try:
            import torch
            torch.manual_seed(args.seed)
            layer = torch.nn.Linear(fan_in, fan_out)
            scheme.torch_init()(layer)
            draws["torch"] = layer.weight.detach().numpy()
        except ImportError:
            pass
        for fw, w in draws.items():
            table.add_row(scheme.name, scheme.label, fw, f"{w.mean():+.2e}", f"{w.std():.4g}",
                          f"{scheme.var_w(fan_in) ** 0.5:.4g}", f"{np.abs(w).max():.4g}")
    Console().print(table)
    return 0


def main(argv=None) -> int:
    parser = _Parser(prog="winit-jax", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    p = sub.add_parser("init-table", help="sample every scheme once, both frameworks")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_init_table)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
