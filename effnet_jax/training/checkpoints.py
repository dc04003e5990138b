"""Orbax checkpoints of the train state: the latest few, and the best by validation accuracy.

Orbax writes each checkpoint to a temporary directory and renames it when complete, so a run
killed mid-save leaves only complete checkpoints behind; ``restore_latest`` picks the newest.
Saves are asynchronous where enabled: the state is copied to host memory before ``save``
returns (so the next step may donate its buffers), the files are written in the background.

Integrity: every save also records a SHA-256 digest of the state's values (every leaf's path,
dtype, shape and bytes) in ``integrity/<latest|best>-<step>.json``; a restore recomputes it from
the values Orbax returns. That checks the whole path end to end, whatever Orbax's file layout:
a flipped byte in any data file, a truncated or garbled file, a missing ``_METADATA``. A
checkpoint that cannot be read, or whose digest differs, is reported in one line (which step,
why) and the next older one is tried; if none is good, ``CheckpointError`` says so and nothing
is deleted. (A checkpoint saved without a digest, by an older version, is trusted as read.)
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import tempfile
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

from effnet_jax.errors import CheckpointError, NotFound  # noqa: F401  (re-exported)

BEST_METRIC = "val_accuracy"
logger = logging.getLogger("effnet_jax")


def state_digest(state: Any) -> str:
    """SHA-256 over every leaf of ``state``: its path, dtype, shape and bytes."""
    from effnet_jax.parallel.mesh import to_host

    digest = hashlib.sha256()
    for path, leaf in jax.tree_util.tree_flatten_with_path(to_host(state))[0]:
        array = np.ascontiguousarray(np.asarray(leaf))
        digest.update(f"{jax.tree_util.keystr(path)}|{array.dtype}|{array.shape}|".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0][:200] if text else ''}"


def _barriers(kind: str) -> dict[str, Any]:
    """Options giving one manager's cross-process barriers (its async saves' included) names of
    their own."""
    prefix = f"effnet_jax_{kind}"
    return dict(multiprocessing_options=ocp.options.MultiprocessingOptions(barrier_sync_key_prefix=prefix))


@contextlib.contextmanager
def _quiet_read_only_notice(read_only: bool):
    """Orbax warns "Given directory is read only" for every read-only manager, which is what
    ``effnet_jax.load`` and ``eval`` ask for: the notice is held back while the two are made (the
    ``absl`` logger's level is put back after)."""
    absl_logger = logging.getLogger("absl")
    level = absl_logger.level
    if read_only:
        absl_logger.setLevel(max(level, logging.ERROR))
    try:
        yield
    finally:
        absl_logger.setLevel(level)


class Checkpoints:
    """``<directory>/latest`` (periodic, ``keep`` newest) and ``<directory>/best`` (one)."""

    def __init__(self, directory: str, keep: int = 2, async_save: bool = True, read_only: bool = False):
        directory = os.path.abspath(directory)
        self.directory = directory
        self.read_only = read_only
        self._damaged: set[tuple[str, int]] = set()  # found damaged on restore: replaced when saved again
        common = dict(enable_async_checkpointing=async_save, create=not read_only, read_only=read_only)
        # Orbax names a save's cross-process barriers after the step directory ("4.orbax-
        # checkpoint-tmp"), the same in latest/ and best/: without a prefix of its own, the two
        # managers' concurrent saves of one step meet at each other's barriers, and a
        # multi-process run could hang until the coordination service aborted it.
        with _quiet_read_only_notice(read_only):
            self.latest = ocp.CheckpointManager(
                os.path.join(directory, "latest"),
                options=ocp.CheckpointManagerOptions(max_to_keep=keep, **common, **_barriers("latest")),
            )
            self.best = ocp.CheckpointManager(
                os.path.join(directory, "best"),
                options=ocp.CheckpointManagerOptions(
                    max_to_keep=1, best_fn=lambda m: m[BEST_METRIC], best_mode="max",
                    keep_checkpoints_without_metrics=False, **common, **_barriers("best")),
            )

    def _digest_path(self, kind: str, step: int) -> str:
        return os.path.join(self.directory, "integrity", f"{kind}-{step}.json")

    def _write_digest(self, kind: str, step: int, state: Any) -> None:
        if jax.process_index() != 0:
            return
        path = self._digest_path(kind, step)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with tempfile.NamedTemporaryFile("w", dir=os.path.dirname(path), delete=False, suffix=".tmp") as f:
            json.dump({"step": step, "sha256": state_digest(state)}, f)
        os.replace(f.name, path)

    def _read_digest(self, kind: str, step: int) -> str | None:
        try:
            with open(self._digest_path(kind, step)) as f:
                return json.load(f)["sha256"]
        except (OSError, ValueError, KeyError):
            return None

    def _replace_if_damaged(self, kind: str, manager, step: int) -> None:
        if (kind, step) in self._damaged and step in manager.all_steps():
            manager.delete(step)
            self._damaged.discard((kind, step))

    def save_latest(self, step: int, state: Any) -> None:
        """Saves ``state`` as the checkpoint of ``step`` (replacing a damaged one of the same step)."""
        self._replace_if_damaged("latest", self.latest, step)
        if step in self.latest.all_steps():
            return
        self._write_digest("latest", step, state)
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
        if best is not None and val_accuracy <= best and ("best", self.best.best_step()) not in self._damaged:
            return False
        self._replace_if_damaged("best", self.best, step)
        self._write_digest("best", step, state)
        self.best.save(step, args=ocp.args.StandardSave(state), metrics={BEST_METRIC: float(val_accuracy)}, force=True)
        return True

    def _restore(self, manager, step, target):
        """One step's state, read by a checkpointer of its own: what the manager infers from one
        damaged step directory (e.g. its item names) must not spoil reading the others."""
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, target)
        path = os.path.join(str(manager.directory), str(step), "default")
        if not os.path.isdir(path):
            raise NotFound(f"{path} is missing")
        with ocp.StandardCheckpointer() as checkpointer:
            return checkpointer.restore(path, abstract)

    def _restore_intact(self, kind: str, manager, steps: list[int], target: Any) -> Any | None:
        """The first of ``steps`` that restores with its recorded digest; damaged ones are
        reported (one line each) and skipped. ``None`` if there are no steps."""
        problems = []
        for step in steps:
            try:
                state = self._restore(manager, step, target)
            except Exception as error:  # unreadable: any of Orbax's / TensorStore's errors
                problems.append(f"step {step} cannot be read ({_first_line(error)})")
                self._damaged.add((kind, step))
                continue
            expected = self._read_digest(kind, step)
            if expected is not None and state_digest(state) != expected:
                problems.append(f"step {step} does not match the checksum saved with it")
                self._damaged.add((kind, step))
                continue
            if problems:
                logger.warning("%s checkpoint %s; using step %d", kind, "; ".join(problems), step)
            return state
        if problems:
            raise CheckpointError(f"no intact {kind} checkpoint in {self.directory}: {'; '.join(problems)}; "
                                  "nothing was deleted")
        return None

    def restore_latest(self, target: Any) -> Any | None:
        """The newest intact checkpoint, shaped like ``target`` (``None`` if there is none)."""
        return self._restore_intact("latest", self.latest, sorted(self.latest.all_steps(), reverse=True), target)

    def restore_best(self, target: Any) -> Any | None:
        """The best-by-validation checkpoint, shaped like ``target`` (``None`` if none)."""
        step = self.best.best_step()
        return None if step is None else self._restore_intact("best", self.best, [step], target)

    def wait(self) -> None:
        """Blocks until background saves have finished."""
        self.latest.wait_until_finished()
        self.best.wait_until_finished()

    def close(self) -> None:
        """Finishes pending saves and releases resources."""
        self.latest.close()
        self.best.close()


def restore_for_use(directory: str, target: Any, checkpoint: str = "best") -> tuple[Any, str]:
    """``(state, which)`` from a workdir's ``checkpoints`` directory, read-only, for evaluation
    or inference: the ``best`` (falling back, with a warning, to the newest intact ``latest`` when
    there is no best or it is damaged) or the ``latest``.

    Raises:
      FileNotFoundError: no checkpoint at all. CheckpointError: none intact.
    """
    checkpoints = Checkpoints(directory, read_only=True)
    try:
        state = None
        if checkpoint == "best":
            try:
                state = checkpoints.restore_best(target)
            except CheckpointError as error:  # a damaged best: the newest intact latest instead, said so
                logger.warning("%s; using the latest instead", error)
        if state is None:
            state, checkpoint = checkpoints.restore_latest(target), "latest"
    finally:
        checkpoints.close()
    if state is None:
        raise NotFound(f"{os.path.dirname(directory)!r} has no checkpoint")
    return state, checkpoint
