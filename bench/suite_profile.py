"""Where the test suite's time goes: a pytest plugin that splits each test's wall time.

For every test it records the wall time and what JAX spent inside it, from JAX's own
monitoring events: tracing to a jaxpr, lowering to MLIR, XLA's backend compile (how many
programs, how long), and the persistent cache's hits and the time they took to load. Each
xdist worker appends one JSON line per test to ``<dir>/<worker>.jsonl``; ``--summary`` reads
them back.

Usage::

    SUITE_PROFILE=/tmp/prof CI=true .venv/bin/python -m pytest -p bench.suite_profile
    .venv/bin/python bench/suite_profile.py --summary /tmp/prof

A measurement, not a test: nothing here asserts a time.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import time
from pathlib import Path

_EVENTS = {
    "/jax/core/compile/jaxpr_trace_duration": "trace_s",
    "/jax/core/compile/jaxpr_to_mlir_module_duration": "lower_s",
    "/jax/core/compile/backend_compile_duration": "compile_s",
    "/jax/compilation_cache/cache_retrieval_time_sec": "cache_load_s",
}
_COUNTS = {
    "/jax/core/compile/backend_compile_duration": "compiles",
    "/jax/compilation_cache/cache_hits": "cache_hits",
    "/jax/compilation_cache/cache_misses": "cache_misses",
}

_current: collections.Counter = collections.Counter()


def _on_duration(event: str, seconds: float, **_) -> None:
    if event in _EVENTS:
        _current[_EVENTS[event]] += seconds
    if event in _COUNTS:
        _current[_COUNTS[event]] += 1


def _on_event(event: str, **_) -> None:
    if event in _COUNTS:
        _current[_COUNTS[event]] += 1


def pytest_configure(config) -> None:
    out = os.environ.get("SUITE_PROFILE")
    if not out:
        return
    import jax.monitoring
    jax.monitoring.register_event_duration_secs_listener(_on_duration)
    jax.monitoring.register_event_listener(_on_event)
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
    config._suite_profile = (folder / f"{worker}.jsonl").open("a")


def pytest_runtest_protocol(item, nextitem):
    handle = getattr(item.config, "_suite_profile", None)
    if handle is None:
        return None
    from _pytest.runner import runtestprotocol
    _current.clear()
    start = time.perf_counter()
    item.ihook.pytest_runtest_logstart(nodeid=item.nodeid, location=item.location)
    runtestprotocol(item, nextitem=nextitem)
    item.ihook.pytest_runtest_logfinish(nodeid=item.nodeid, location=item.location)
    row = {"test": item.nodeid, "wall_s": time.perf_counter() - start, **_current}
    handle.write(json.dumps(row) + "\n")
    handle.flush()
    return True


def summary(folder: Path, top: int) -> None:
    rows = [json.loads(line) for path in sorted(folder.glob("*.jsonl"))
            for line in path.read_text().splitlines()]
    keys = ["wall_s", "trace_s", "lower_s", "compile_s", "cache_load_s", "compiles",
            "cache_hits"]
    total = {k: sum(r.get(k, 0) for r in rows) for k in keys}
    print(f"{len(rows)} tests; " + ", ".join(f"{k} {v:,.0f}" for k, v in total.items()))
    by_file: dict = collections.defaultdict(collections.Counter)
    for r in rows:
        by_file[r["test"].split("::")[0]].update({k: r.get(k, 0) for k in keys})
        by_file[r["test"].split("::")[0]]["tests"] += 1
    print(f"\n{'file':48s} {'tests':>5s} " + " ".join(f"{k:>11s}" for k in keys))
    for name, c in sorted(by_file.items(), key=lambda kv: -kv[1]["wall_s"]):
        print(f"{name:48s} {c['tests']:5d} " + " ".join(f"{c[k]:11.1f}" for k in keys))
    print(f"\nslowest {top} tests")
    for r in sorted(rows, key=lambda r: -r["wall_s"])[:top]:
        print(f"{r['wall_s']:7.1f} s  compile {r.get('compile_s', 0):6.1f} s "
              f"({r.get('compiles', 0):4d})  trace+lower "
              f"{r.get('trace_s', 0) + r.get('lower_s', 0):6.1f} s  {r['test']}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--summary", type=Path, required=True)
    parser.add_argument("--top", type=int, default=40)
    args = parser.parse_args()
    summary(args.summary, args.top)
