"""Orbax checkpoints of the train state: the latest few, and the best by validation accuracy.

Orbax writes each checkpoint to a temporary directory and renames it when complete, so a run
killed mid-save leaves only complete checkpoints behind; ``restore_latest`` picks the newest.
Saves are asynchronous where enabled: the state is copied to host memory before ``save``
returns (so the next step may donate its buffers), the files are written in the background.
"""

from __future__ import annotations

import os
from typing import Any

import jax
import orbax.checkpoint as ocp

BEST_METRIC = "val_accuracy"


class Checkpoints:
    """``<directory>/latest`` (periodic, ``keep`` newest) and ``<directory>/best`` (one)."""

    def __init__(self, directory: str, keep: int = 2, async_save: bool = True, read_only: bool = False):
        directory = os.path.abspath(directory)
        common = dict(enable_async_checkpointing=async_save, create=not read_only, read_only=read_only)
        self.latest = ocp.CheckpointManager(
            os.path.join(directory, "latest"),
            options=ocp.CheckpointManagerOptions(max_to_keep=keep, **common),
        )
        self.best = ocp.CheckpointManager(
            os.path.join(directory, "best"),
            options=ocp.CheckpointManagerOptions(
                max_to_keep=1, best_fn=lambda m: m[BEST_METRIC], best_mode="max",
                keep_checkpoints_without_metrics=False, **common),
        )

    def save_latest(self, step: int, state: Any) -> None:
        """Saves ``state`` as the checkpoint of ``step`` (replacing one of the same step)."""
        if step in self.latest.all_steps():
            return
        self.latest.save(step, args=ocp.args.StandardSave(state), force=True)

    def best_value(self) -> float | None:
        """The best validation accuracy saved so far, if any."""
        step = self.best.best_step()
        if step is None:
            return None
        metrics = self.best.metrics(step) or {}
        return metrics.get(BEST_METRIC)

    def save_best(self, step: int, state: Any, val_accuracy: float) -> bool:
        """Saves ``state`` if ``val_accuracy`` beats the best so far; returns whether it did."""
        best = self.best_value()
        if best is not None and val_accuracy <= best:
            return False
        self.best.save(step, args=ocp.args.StandardSave(state), metrics={BEST_METRIC: float(val_accuracy)}, force=True)
        return True

    def _restore(self, manager, step, target):
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, target)
        return manager.restore(step, args=ocp.args.StandardRestore(abstract))

    def restore_latest(self, target: Any) -> Any | None:
        """The newest complete checkpoint, shaped like ``target`` (``None`` if there is none)."""
        step = self.latest.latest_step()
        return None if step is None else self._restore(self.latest, step, target)

    def restore_best(self, target: Any) -> Any | None:
        """The best-by-validation checkpoint, shaped like ``target`` (``None`` if none)."""
        step = self.best.best_step()
        return None if step is None else self._restore(self.best, step, target)

    def wait(self) -> None:
        """Blocks until background saves have finished."""
        self.latest.wait_until_finished()
        self.best.wait_until_finished()

    def close(self) -> None:
        """Finishes pending saves and releases resources."""
        self.latest.close()
        self.best.close()
