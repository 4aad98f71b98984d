"""How many training-step checks of a faithful port can tell, over input seeds: torchvision's
MobileNetV2 (train mode, batch statistics, 16 images), a torchvision ConvNeXt block with the
official repo's names, and HF GPT-2 (tiny config, AdamW with GPT's param groups), each in
float32 with 3 steps, one ``check`` per input seed. For each: the float32 step checks alone
(parts "step" and "batch_stats": what ``check`` had before its float64 steps) and with the
same steps in float64 in both frameworks (parts "... (float64)"), counted from one run:
passed, failed, inconclusive, not tested.

    .venv/bin/python bench/step_verdicts.py [--seeds 8] [--only mobilenet_v2,convnext,gpt2]

Needs the ``test`` extra (transformers). Prints a markdown table.
"""

from __future__ import annotations

import argparse
import collections
import sys
import time
from pathlib import Path

import jax
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _mobilenet(seed):
    from winit_jax.lab import examples as E
    net, port, x, kw = E.mobilenet_v2(seed)
    return net, port, x, {**kw, "init_seeds": 0}


def _convnext(seed):
    import torch
    from flax import nnx

    from tests.porting import test_natural_ports as T
    net, _, _, kw = T._convnext()
    x = np.random.default_rng(seed).standard_normal((2, 3, 16, 24)).astype(np.float32)
    torch.manual_seed(seed)
    return net, T._ConvNeXtPort(16, nnx.Rngs(0)), x, {**kw, "train": True}


def _gpt2(seed):
    import torch
    from flax import nnx

    from tests.porting import test_gpt2 as T
    from winit_jax import parity as P
    ids = np.random.default_rng(seed).integers(0, T.CONFIG["vocab_size"], (2, 8))
    mask = np.ones((2, 8), np.int64)
    mask[1, -3:] = 0
    return T.torch_gpt2(), T.GPT2(nnx.Rngs(0)), ids, dict(
        kwargs=dict(attention_mask=mask, use_cache=False), targets=ids, loss=P.cross_entropy,
        init_seeds=0, torch_outputs=lambda out: out.logits,
        make_optimizer=lambda m: torch.optim.AdamW(T.gpt_groups(m), lr=1e-2))


MODELS = {"mobilenet_v2": _mobilenet, "convnext": _convnext, "gpt2": _gpt2}
FLOAT32 = ("step", "batch_stats")
FLOAT64 = ("step (float64)", "batch_stats (float64)", "single step")
SUPERSEDED = "the single steps and the float64 steps judge it"


def main(argv=None):
    from winit_jax import parity as P

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=8)
    ap.add_argument("--only", default=",".join(MODELS))
    args = ap.parse_args(argv)
    jax.config.update("jax_numpy_dtype_promotion", "standard")
    print("| model | seeds passed | float32 steps: passed / failed / inconclusive / not tested "
          "| with float64 and single steps: passed / failed / inconclusive / not tested | "
          "inconclusive share, before / with | seconds per check |")
    print("| --- | ---: | --- | --- | ---: | ---: |")
    for name in args.only.split(","):
        before, after, ok, seconds = collections.Counter(), collections.Counter(), 0, []
        for seed in range(args.seeds):
            net, port, x, kw = MODELS[name](seed)
            start = time.perf_counter()
            report = P.check(net, port, x, steps=3, layers=False, **kw)
            seconds.append(time.perf_counter() - start)
            ok += report.ok
            for c in report.checks:
                if c.part in FLOAT32:  # as check judged them before: chaos is inconclusive
                    before["inconclusive" if SUPERSEDED in c.how else c.outcome.value] += 1
                if c.part in FLOAT32 + FLOAT64:
                    after[c.outcome.value] += 1
        row = [f"{c['passed']} / {c['failed']} / {c['inconclusive']} / {c['not tested']}"
               for c in (before, after)]
        share = [c["inconclusive"] / max(1, sum(c.values())) for c in (before, after)]
        print(f"| {name} | {ok} of {args.seeds} | {row[0]} | {row[1]} | {share[0]:.1%} / "
              f"{share[1]:.1%} | "
              f"{np.median(seconds):.0f} |", flush=True)


if __name__ == "__main__":
    main()
