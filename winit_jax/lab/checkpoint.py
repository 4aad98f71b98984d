"""Per-epoch checkpoints (orbax-checkpoint): a run killed at any moment resumes bit for bit.

A run's checkpoint directory holds ``config.json`` (what the run was asked to do, so that a
resume with another config is refused), one orbax ``CheckpointManager`` per group of
models trained together (``group-<i>/<epoch>``: parameters, optimiser state, the PRNG
keys, epoch, per-batch losses and finite flags so far), one per torch reference run
(``torch-<scheme>-<seed>/<epoch>``: weights, momentum buffers, torch's RNG state, losses),
and ``results/<name>.json`` for each finished torch run.

Orbax writes a step into a temporary directory and renames it when complete; a step that
was being written when the process died is never listed, so restore only ever sees whole
checkpoints. JSON files are written atomically (``winit_jax.lab.files``).
"""

from __future__ import annotations

import json
from pathlib import Path

import jax

from winit_jax.lab.files import write_atomic, write_json


class ResumeError(ValueError):
    """The checkpoint directory does not belong to this run."""


class GroupCheckpoint:
    """Epoch checkpoints of one pytree whose structure and shapes never change."""

    def __init__(self, directory: Path):
        import orbax.checkpoint as ocp
        self._ocp = ocp
        self.manager = ocp.CheckpointManager(
            Path(directory).absolute(),
            options=ocp.CheckpointManagerOptions(max_to_keep=2, create=True,
                                                 enable_async_checkpointing=False))

    @staticmethod
    def _flat(tree):
        leaves, treedef = jax.tree.flatten(tree)
        return {f"{i:04d}": leaf for i, leaf in enumerate(leaves)}, treedef

    def save(self, epoch: int, tree) -> None:
        flat, _ = self._flat(tree)
        self.manager.save(epoch, args=self._ocp.args.StandardSave(flat))
        self.manager.wait_until_finished()

    def restore_latest(self, template):
        """``(epoch, tree)`` of the newest whole checkpoint, shaped and sharded like
        ``template``; ``(0, template)`` when there is none."""
        epoch = self.manager.latest_step()
        if epoch is None:
            return 0, template
        flat, treedef = self._flat(template)
        restored = self.manager.restore(epoch, args=self._ocp.args.StandardRestore(flat))
        return epoch, jax.tree.unflatten(treedef, [restored[k] for k in sorted(flat)])

    def close(self) -> None:
        self.manager.close()


class RunCheckpoint:
    """The checkpoint directory of one run (``<out>/checkpoints`` for the CLI)."""

    def __init__(self, directory):
        self.directory = Path(directory)

    def claim(self, config: dict, *, resume: bool) -> None:
        """Records ``config`` for a new run, or checks it against the recorded one.

        Raises:
          ResumeError: resuming a directory made by another config, or one with no
            checkpoint; or starting a new run over an interrupted one.
        """
        path = self.directory / "config.json"
        if not resume:
            if path.exists():
                raise ResumeError(f"{self.directory.parent} holds an interrupted run: resume it "
                                  "with --resume, or choose another --out")
            write_json(self.directory, "config.json", config)
            return
        try:
            stored = json.loads(path.read_text())
        except (OSError, ValueError) as e:
            raise ResumeError(f"{self.directory.parent} holds no readable checkpoint of an "
                              f"interrupted run ({path.name}: {getattr(e, 'strerror', None) or e})")
        diff = [k for k in sorted(set(stored) | set(config)) if stored.get(k) != config.get(k)]
        if diff:
            k = diff[0]
            raise ResumeError(f"{self.directory.parent} was made by another config "
                              f"({k}: {stored.get(k)!r} there, {config.get(k)!r} now)")

    def group(self, name) -> GroupCheckpoint:
        """Epoch checkpoints of a vmapped group (``group-<i>``) or a named run."""
        return GroupCheckpoint(self.directory / (f"group-{name}" if isinstance(name, int) else name))

    def load_result(self, name: str) -> dict | None:
        path = self.directory / "results" / f"{name}.json"
        return json.loads(path.read_text()) if path.exists() else None

    def save_result(self, name: str, result: dict) -> None:
        # Python's JSON keeps NaN and inf (a diverged run's losses), unlike results.json.
        write_atomic(self.directory / "results", f"{name}.json", json.dumps(result).encode())
