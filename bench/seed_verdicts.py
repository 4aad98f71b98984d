"""Does ``check`` pass a correct port whatever the input seed? torchvision's MobileNetV2 and
its nnx port, float32, forward and gradients (eval mode) on 64x64 inputs, one row per seed:
the verdict with the tolerances ``check`` measures (torch's own float32-vs-float64 gap, kink
flips inconclusive) next to what the fixed tolerances of before (1e-5 forward, 1e-4
gradients) would have said, from the same run.

    .venv/bin/python bench/seed_verdicts.py [--seeds 8] [--batch 2]
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
from flax import nnx
from torchvision.models import mobilenet_v2

from winit_jax import parity as P
from winit_jax.lab import examples as E

FIXED = {"forward": 1e-5, "gradient": 1e-4}  # before issue #31


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=8)
    ap.add_argument("--batch", type=int, default=2)
    args = ap.parse_args(argv)
    torch.manual_seed(0)
    net = mobilenet_v2(num_classes=10, dropout=0.0)
    port = E.flax_mobilenet_v2(nnx.Rngs(0))
    print("| input seed | fixed tolerances | measured (now) | inconclusive | worst gap / tolerance |")
    print("| ---: | --- | --- | ---: | --- |")
    passed = {"fixed": 0, "measured": 0}
    for seed in range(args.seeds):
        x = np.random.default_rng(seed).standard_normal((args.batch, 3, 64, 64))
        report = P.check(net, port, x.astype(np.float32), flax_inputs=E.nhwc, init_seeds=0,
                         layers=False)
        fixed = all(c.figure <= FIXED[c.part] for c in report.checks if c.part in FIXED)
        passed["fixed"] += fixed
        passed["measured"] += report.ok
        w = max((c for c in report.checks if c.tested),
                key=lambda c: c.figure / c.tol)
        print(f"| {seed} | {'pass' if fixed else 'FAIL'} | {'pass' if report.ok else 'FAIL'} | "
              f"{sum(not c.tested for c in report.checks)} | {w.name}: {w.figure:.2g} / {w.tol:.2g} |")
    print(f"\npassed: fixed tolerances {passed['fixed']} of {args.seeds}, measured "
          f"{passed['measured']} of {args.seeds}")


if __name__ == "__main__":
    main()
