"""A run's directory and its life: what it records as its config, the rules of ``--resume``,
claiming its checkpoint directory (once, by process 0 of a multi-host run), the distributed
start, and the end (the checkpoints go once the results are written).

Each rule raises ``RunError`` naming the command-line flag it is about; ``winit_jax.lab.cli``
turns that into its one-line usage error.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Mapping
from pathlib import Path

import numpy as np

# Flags that do not change what a run computes: not recorded, free to differ on --resume.
NOT_CONFIG = frozenset({"func", "command", "quiet", "out", "resume", "coordinator",
                        "num_processes", "process_id"})


class RunError(ValueError):
    """A run that cannot start as asked; ``flag`` is the command-line flag at fault."""

    def __init__(self, flag: str, message: str):
        super().__init__(message)
        self.flag = flag


def _jsonable(v):
    return str(v) if isinstance(v, Path) else v


def run_config(command: str, options: Mapping) -> dict:
    """What a run computes from (recorded in ``checkpoints/config.json``): the command and
    every option but those in ``NOT_CONFIG``."""
    return {"command": command, **{k: _jsonable(v) for k, v in options.items()
                                   if k not in NOT_CONFIG}}


def resumed_options(command: str, options: Mapping, defaults: Mapping, resume: Path,
                    out: Path | None) -> dict:
    """The options of ``--resume DIR``: the recorded config, with ``out`` = DIR.

    Args:
      command: the command being run.
      options: the options as given on this command line.
      defaults: the command's defaults (an option equal to its default was not given).
      resume: the interrupted run's directory.
      out: ``--out`` if given.

    Returns:
      The options to run with (``options`` updated from the record).

    Raises:
      RunError: ``--out`` other than DIR; DIR without a readable record; a record of another
        command; an option given with another value than the recorded one.
    """
    if out is not None and out != resume:
        raise RunError("--resume", f"conflicts with --out {out} (the run's directory is "
                                   f"{resume})")
    try:
        stored = json.loads((resume / "checkpoints" / "config.json").read_text())
    except (OSError, ValueError):
        raise RunError("--resume", f"{resume} holds no interrupted run (no readable "
                                   "checkpoints/config.json)") from None
    if stored.get("command") != command:
        raise RunError("--resume", f"{resume} is a {stored.get('command')!r} run, not "
                                   f"{command!r}")
    new = dict(options)
    for k, v in stored.items():
        if k == "command":
            continue
        given = _jsonable(options.get(k))
        if given != _jsonable(defaults.get(k)) and given != v:
            raise RunError("--resume", f"{resume} was made with --{k.replace('_', '-')} "
                                       f"{v!r}, not {given!r}")
        new[k] = Path(v) if k == "data_dir" and v is not None else v
    new["out"] = resume
    return new


def claim(out: Path, config: Mapping, *, resume: bool):
    """The run's ``RunCheckpoint`` under ``out/checkpoints``, claimed (or, resuming,
    checked) by process 0; in a multi-host run (one ``out`` on a filesystem all hosts
    share) every process learns whether that worked before going on.

    Raises:
      RunError: the directory holds another run, or resuming finds nothing to resume.
    """
    import jax

    from winit_jax.lab.checkpoint import ResumeError, RunCheckpoint

    ckpt = RunCheckpoint(out / "checkpoints")
    error = None
    if jax.process_index() == 0:
        try:
            ckpt.claim(dict(config), resume=resume)
        except ResumeError as e:
            error = str(e)
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils
        failed = multihost_utils.broadcast_one_to_all(np.int32(error is not None))
        if error is None and int(failed):
            error = "process 0 could not claim it (see its message)"
    if error is not None:
        raise RunError("--resume" if resume else "--out", error)
    return ckpt


def finish(ckpt) -> None:
    """The results are written: every process waits for the others, then process 0
    removes the checkpoints, which have served their purpose."""
    import jax

    if jax.process_count() > 1:
        from jax.experimental import multihost_utils
        multihost_utils.sync_global_devices("winit-jax: results written")
    if jax.process_index() == 0:
        shutil.rmtree(ckpt.directory)


def init_distributed(coordinator: str | None, num_processes, process_id) -> None:
    """``jax.distributed.initialize`` when a multi-host run is asked for (all three given);
    nothing when none is.

    Raises:
      RunError: some but not all given, or a process id outside [0, num_processes).
    """
    import jax

    given = [coordinator, num_processes, process_id]
    if all(v is None for v in given):
        return
    if any(v is None for v in given):
        raise RunError("--coordinator", "a multi-host run needs --coordinator, "
                                        "--num-processes and --process-id (or their "
                                        "environment variables)")
    n, i = int(num_processes), int(process_id)
    if not 0 <= i < n:
        raise RunError("--process-id", f"{i} is not in [0, {n})")
    jax.distributed.initialize(coordinator_address=coordinator, num_processes=n, process_id=i,
                               initialization_timeout=120)
