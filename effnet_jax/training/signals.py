"""Preemption-friendly stops: SIGTERM and SIGINT ask the loop to save and return.

``StopRequests`` installs handlers for the duration of a ``with`` (main thread only; elsewhere
it does nothing). The first signal sets ``requested`` (the loop saves a checkpoint at the end of
the chunk in flight and returns); a second one exits at once with the signal's status (128 +
its number): Orbax writes each checkpoint to a temporary directory and renames it when complete,
so an exit mid-save leaves the previous checkpoints intact.
"""

from __future__ import annotations

import os
import signal
import sys
import threading

from effnet_jax.errors import EffNetJaxError

SIGNALS = (signal.SIGTERM, signal.SIGINT)


def _exit_now(number, frame) -> None:
    print(f"effnet-jax: second {signal.Signals(number).name}: exiting without waiting", file=sys.stderr, flush=True)
    os._exit(128 + number)


def exit_at_once_on_another_signal() -> None:
    """For a command line that stopped on a signal (its checkpoint saved) and now only exits: a
    second SIGINT or SIGTERM during that exit (JAX's and Orbax's atexit clean-ups take a while)
    ends the process at once with one line, as during the run, not with a KeyboardInterrupt
    traceback. Process-wide, so for entry scripts only (a notebook keeps its own Ctrl-C)."""
    for number in SIGNALS:
        signal.signal(number, _exit_now)


class StopRequests:
    """Catches SIGTERM/SIGINT while active; ``requested`` names the first one caught."""

    def __init__(self):
        self.requested: str | None = None
        self._previous: dict[int, object] = {}

    def _handle(self, number, frame):
        if self.requested is not None:  # a second signal: leave now
            _exit_now(number, frame)
        self.requested = signal.Signals(number).name

    def __enter__(self) -> "StopRequests":
        if threading.current_thread() is threading.main_thread():
            for number in SIGNALS:
                self._previous[number] = signal.signal(number, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for number, handler in self._previous.items():
            signal.signal(number, handler)
        self._previous.clear()


class Interrupted(EffNetJaxError, RuntimeError):
    """A run stopped by a signal after saving a checkpoint (re-running resumes)."""

    def __init__(self, signal_name: str, step: int, workdir: str):
        self.signal_name, self.step = signal_name, step
        super().__init__(f"{signal_name} at step {step}: checkpoint saved in {workdir}; "
                         "run the same command again to resume")

    @property
    def exit_status(self) -> int:
        """128 + the signal's number, as a shell reports a process the signal ended."""
        return 128 + int(getattr(signal, self.signal_name))
