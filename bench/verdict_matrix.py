"""The verdict of ``winit-jax compare`` over the matrix of issue #18, on the whole embedded
sample (5,000 digits; tests/lab/test_verdict.py runs it on 1,000 of them): every default
scheme, 3 seeds and their first seed alone, 2 and 10 epochs, two first seeds. Prints each
verdict's parts; every verdict should read "agree".

    python bench/verdict_matrix.py [--rows 5000] [--first-seeds 0,1000] [--epochs 2,10]
"""

from __future__ import annotations

import argparse
import time

from winit_jax.lab import verdict as V
from winit_jax.lab.experiment import compare, default_data_dir, load_dataset
from winit_jax.lab.train import TrainConfig
from winit_jax.schemes import SCHEMES


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=5000)
    ap.add_argument("--first-seeds", default="0,1000")
    ap.add_argument("--epochs", default="2,10")
    ap.add_argument("--seeds", type=int, default=3)
    args = ap.parse_args()
    ds = load_dataset("sample", default_data_dir(), notice=lambda m: None)
    if args.rows < len(ds.x_train):
        ds = ds.head(args.rows, len(ds.x_test))
    print("| first seed | epochs | seeds | scheme | init p (threshold) | paired gap/tol | "
          "Welch p acc, loss (threshold) | verdict |")
    print("| ---: | ---: | ---: | --- | --- | ---: | --- | --- |")
    disagreements = 0
    for first in map(int, args.first_seeds.split(",")):
        for epochs in map(int, args.epochs.split(",")):
            start = time.perf_counter()
            config = TrainConfig(epochs=epochs, seed=first)
            results = compare(list(SCHEMES), ["jax", "torch"], args.seeds, config, ds)
            for n in (1, args.seeds):
                for s, v in V.verdicts([r for r in results if r.seed < first + n], config,
                                       ds).items():
                    ind = v.independent
                    welch = ind.note if ind.ok is None else (
                        f"{ind.acc_p:.2g}, {ind.loss_p if ind.loss_p is None else f'{ind.loss_p:.2g}'}"
                        f" ({ind.threshold:.1g})")
                    print(f"| {first} | {epochs} | {n} | {s} | {v.init.min_p:.2g} "
                          f"({v.init.threshold:.1g}) | {v.paired.worst_ratio:.2g} | {welch} | "
                          f"{v.verdict} |")
                    disagreements += v.verdict != "agree"
            print(f"<!-- first seed {first}, {epochs} epochs: "
                  f"{time.perf_counter() - start:.0f} s -->")
    print(f"\n{disagreements} verdicts other than agree")


if __name__ == "__main__":
    main()
