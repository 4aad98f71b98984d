"""Loading and saving a torch checkpoint of at least 1 GB, each way in a fresh process, one
run on one machine: seconds, and peak resident memory above the finished model.

A GPT-2-medium-sized model (HF transformers, 24 layers, width 1024, vocabulary 50,257,
355M parameters, 1.42 GB in float32, random weights) is written by torch
(``safetensors.torch.save_model``); then, each in its own process:

  raw      every tensor of the file read with ``safetensors.safe_open`` (numpy), nothing else
  ours     ``parity.load_checkpoint`` into an abstract port (``nnx.eval_shape``), the torch
           module on the meta device
  torch    ``load_state_dict(safetensors.torch.load_file(...), assign=True)`` into the
           torch model on the meta device (no random init), then ``parity.from_torch``
           into the same abstract port
  save     ``parity.save_checkpoint`` of the loaded port (torch module on the meta device)
  torch-save  ``safetensors.torch.save_model`` of the torch model

Memory: ``ru_maxrss`` of the process minus its resident size just before the timed part
(imports, the abstract port and the meta torch module already made), minus the finished
model's bytes where the part ends holding the model. Needs the ``test`` extra (transformers).

    python bench/checkpoint.py [--dir /tmp/ckpt-bench] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

MEDIUM = dict(vocab_size=50257, n_positions=1024, n_embd=1024, n_layer=24, n_head=16,
              resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _peak() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _config():
    import transformers
    return transformers.GPT2Config(**MEDIUM)


def _port():
    from flax import nnx

    from tests.porting import gpt2_port
    gpt2_port.CONFIG.update(MEDIUM)
    return nnx.eval_shape(lambda: gpt2_port.GPT2(nnx.Rngs(0)))


def _meta():
    import torch
    import transformers
    with torch.device("meta"):
        return transformers.GPT2LMHeadModel(_config())


def write(path: Path) -> dict:
    import safetensors.torch
    import torch
    import transformers
    torch.manual_seed(0)
    net = transformers.GPT2LMHeadModel(_config())
    safetensors.torch.save_model(net, str(path))
    sizes = [p.numel() * p.element_size() for p in net.state_dict().values()]
    return {"file_bytes": path.stat().st_size, "largest_tensor_bytes": max(sizes),
            "model_bytes": sum(p.numel() * p.element_size() for p in net.parameters())}


def part(name: str, path: Path, out: Path) -> dict:
    """One part, timed in this process."""
    import jax
    import numpy as np
    from flax import nnx

    from winit_jax import parity as P
    holds_model = name in ("ours", "torch")
    if name == "raw":
        from safetensors import safe_open
        base, start = _rss(), time.perf_counter()
        with safe_open(str(path), framework="numpy") as f:
            for k in f.keys():
                f.get_tensor(k)
    elif name == "ours":
        port, meta = _port(), _meta()
        base, start = _rss(), time.perf_counter()
        report = P.load_checkpoint(path, port, torch_module=meta)
        jax.block_until_ready(jax.tree.leaves(nnx.state(port)))
    elif name == "torch":
        import safetensors.torch
        import transformers
        port, net = _port(), _meta()
        base, start = _rss(), time.perf_counter()
        # the fastest torch way: no random init (meta), tensors assigned, the tie restored
        state = safetensors.torch.load_file(str(path))
        for a, b in (("transformer.wte.weight", "lm_head.weight"),) * 2:  # the file keeps one
            state.setdefault(a, state.get(b))
            state.setdefault(b, state.get(a))
        net.load_state_dict(state, strict=True, assign=True)
        net.tie_weights()
        P.from_torch(net, port)
        jax.block_until_ready(jax.tree.leaves(nnx.state(port)))
    elif name == "save":
        port, meta = _port(), _meta()
        P.load_checkpoint(path, port, torch_module=meta)
        base, start = _rss(), time.perf_counter()
        P.save_checkpoint(port, out, torch_module=meta)
    elif name == "torch-save":
        import safetensors.torch
        import transformers
        net = transformers.GPT2LMHeadModel(_config())
        net.load_state_dict(safetensors.torch.load_file(str(path)), strict=False)
        base, start = _rss(), time.perf_counter()
        safetensors.torch.save_model(net, str(out))
    seconds = time.perf_counter() - start
    result = {"seconds": seconds, "peak_above_start": _peak() - base, "holds_model": holds_model}
    if name == "ours":
        result["bytes_read"] = report.bytes_read
    if name in ("save", "torch-save"):
        result["equal_to_source"] = _same_file_tensors(path, out)
    del np
    return result


def _same_file_tensors(a: Path, b: Path) -> bool:
    import numpy as np
    from safetensors import safe_open
    with safe_open(str(a), framework="numpy") as fa, safe_open(str(b), framework="numpy") as fb:
        keys = set(fa.keys()) & set(fb.keys())
        return bool(keys) and all(np.array_equal(fa.get_tensor(k), fb.get_tensor(k))
                                  for k in keys)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dir", default="/tmp/winit-ckpt-bench")
    ap.add_argument("--json")
    ap.add_argument("--part", help=argparse.SUPPRESS)
    args = ap.parse_args()
    d = Path(args.dir)
    if args.part:
        res = part(args.part, d / "gpt2-medium.safetensors", d / f"{args.part}.safetensors")
        print(json.dumps(res))
        return
    d.mkdir(parents=True, exist_ok=True)
    src = d / "gpt2-medium.safetensors"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1]),
           "JAX_PLATFORMS": "cpu"}
    code = ("import json, sys; sys.path.insert(0, 'bench'); from checkpoint import write; "
            f"from pathlib import Path; print(json.dumps(write(Path({str(src)!r}))))")
    info = json.loads(subprocess.run([sys.executable, "-c", code], env=env, check=True,
                                     capture_output=True, text=True).stdout.splitlines()[-1])
    results = {}
    for name in ("raw", "ours", "torch", "save", "torch-save"):
        proc = subprocess.run([sys.executable, __file__, "--dir", str(d), "--part", name],
                              env=env, capture_output=True, text=True)
        if proc.returncode:
            sys.exit(f"{name} failed:\n{proc.stderr[-3000:]}")
        results[name] = json.loads(proc.stdout.splitlines()[-1])
    mb = 1e6
    model, largest = info["model_bytes"], info["largest_tensor_bytes"]
    print(f"GPT-2 medium config, file {info['file_bytes'] / mb:,.0f} MB, model "
          f"{model / mb:,.0f} MB, largest tensor {largest / mb:,.0f} MB "
          f"(goal: peak above the model <= {(3 * largest + 256e6) / mb:,.0f} MB)")
    print(f"{'part':<11} {'seconds':>8} {'peak MB above start':>20} {'above the model':>16}")
    for name, r in results.items():
        above = r["peak_above_start"] - (model if r["holds_model"] else 0)
        r["above_model"] = above
        print(f"{name:<11} {r['seconds']:>8.2f} {r['peak_above_start'] / mb:>20,.0f} "
              f"{above / mb:>16,.0f}")
    ours, raw, torch_ = (results[k]["seconds"] for k in ("ours", "raw", "torch"))
    print(f"ours / raw read: {ours / raw:.2f}x (goal <= 1.5x); ours / torch path: "
          f"{ours / torch_:.2f}x (goal < 1); peak ours / torch path: "
          f"{results['ours']['peak_above_start'] / results['torch']['peak_above_start']:.2f}"
          f" (goal <= 0.5); save / torch save: "
          f"{results['save']['seconds'] / results['torch-save']['seconds']:.2f}x; "
          f"bytes read by ours: {results['ours']['bytes_read'] / mb:,.0f} MB")
    if args.json:
        Path(args.json).write_text(json.dumps({"info": info, "results": results}, indent=2))


if __name__ == "__main__":
    main()
