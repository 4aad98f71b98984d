"""What ``parity.infer_recipe`` finds and what it costs: per model, how many torch tensors
fall into each family, how many torch builds it took, and the seconds (torch's builds, the
fits and KS tests, the plan), in one process, on this machine's CPU. The models and ports
are the tests' (``tests/porting/test_inferred_init.py``).

    python bench/init_inference.py
"""

from __future__ import annotations

import collections
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from flax import nnx  # noqa: E402

from tests.porting.test_inferred_init import MODELS  # noqa: E402
from winit_jax.parity.inference import infer_recipe  # noqa: E402

FAMILIES = ("constant", "normal", "uniform", "truncated normal", "default")


def main() -> None:
    print("| model | tensors | " + " | ".join(FAMILIES) + " | zero rows | builds | s |")
    print("| --- | ---: | " + " | ".join("---:" for _ in FAMILIES) + " | ---: | --- | ---: |")
    for name, build in MODELS.items():
        net, port, x, kw = build()
        pair_kw = {k: v for k, v in kw.items() if k in ("kwargs", "flax_inputs")}
        t = time.perf_counter()
        recipe = infer_recipe(net, nnx.eval_shape(port), inputs=x,
                              fresh_torch=kw.get("fresh_torch"), **pair_kw)
        seconds = time.perf_counter() - t
        count = collections.Counter(law.family for law in recipe.laws.values())
        rows = sum(1 for law in recipe.laws.values() if law.zero_rows)
        print(f"| {name} ({sum(p.numel() for p in net.parameters()):,} parameters) | "
              f"{len(recipe.laws)} | " + " | ".join(str(count[f]) for f in FAMILIES)
              + f" | {rows} | {recipe.source.split(', ', 1)[1]} | {seconds:.1f} |")


if __name__ == "__main__":
    main()
