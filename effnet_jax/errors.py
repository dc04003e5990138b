"""The errors a user can act on: a bad config, bad data, a workdir that does not match, a diverged
run, a corrupted checkpoint, a file that is not there.

The ``effnet-jax`` command prints an ``EffNetJaxError`` as one line (``effnet-jax train: error:
...``) and exits non-zero; anything else keeps its traceback, since it is a bug (in JAX, in the
library, or in a researcher's own model code) whose file and line are what is needed. Each class
also derives from the built-in exception it refines, so ``except ValueError`` (or
``FileNotFoundError``, ``RuntimeError``) still catches it.
"""

from __future__ import annotations


class EffNetJaxError(Exception):
    """Base of every error a user can act on; its message names the key, file or value."""


class ConfigError(EffNetJaxError, ValueError, TypeError):
    """A config key, model option, command-line argument or value out of range or of the wrong type."""


class DataError(EffNetJaxError, ValueError, TypeError):
    """A data set or batch the library cannot use (missing split, wrong shape or dtype, bad archive)."""


class WorkdirError(EffNetJaxError, FileExistsError):
    """A workdir that cannot hold this run: a file, another run's or another kind's, or busy."""


class NotWritable(EffNetJaxError, PermissionError):
    """A workdir or output directory that cannot be created or written."""


class NotFound(EffNetJaxError, FileNotFoundError):
    """A file or directory the user named (a config, data, a module to import, a workdir) is missing."""


class CheckpointError(EffNetJaxError, RuntimeError):
    """A checkpoint that cannot be restored (corrupted, incomplete, or of another model)."""


class TrainingDiverged(EffNetJaxError, RuntimeError):
    """The loss or the parameters became NaN/Inf; nothing from that point on was saved."""

    def __init__(self, step: int, workdir: str, kept: int | None):
        self.step, self.kept = step, kept
        where = (f"the last finite checkpoint, step {kept}, stays as latest and best in {workdir}"
                 if kept is not None else f"no checkpoint had been saved in {workdir}")
        super().__init__(f"training diverged at step {step} (non-finite loss or parameters): stopped; {where}. "
                         "Lower optimizer.learning_rate or set optimizer.grad_clip_norm")


class SweepDiverged(EffNetJaxError, RuntimeError):
    """Every member of a sweep diverged: its results are written, nothing is recommended."""
