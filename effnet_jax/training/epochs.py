"""The one epoch loop. A single run and a sweep train through it alike (the sweep's step is
the same step under ``vmap``), so every option works for both: ``max_steps``,
``checkpoint.every_steps``, stop requests (SIGTERM/SIGINT), progress and throughput.

Per epoch: host chunks of ``steps_per_dispatch`` batches (an epoch's short last chunk padded to
that length, so one program runs them all) -> device (prefetched) -> the compiled multi-step;
each chunk's metrics are fetched while the next one runs, summed, and shown; at the epoch's end
the caller's ``end_epoch`` (BatchNorm statistics, evaluation, logs) and a checkpoint. What
differs between a run and a sweep (the state, how metrics are checked and recorded) comes in
as functions; nothing here knows files or models.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from effnet_jax.data.pipeline import pad_chunk, prefetch
from effnet_jax.training.logs import Throughput

SUMMED = ("loss_sum", "correct", "count")  # the training metrics an epoch adds up


class Progress:
    """A tqdm bar over steps; ``postfix(host_metrics, images_per_s)`` gives what it shows."""

    def __init__(self, total: int, initial: int, enabled: bool, postfix: Callable[[dict, float], dict],
                 description: str | None = None):
        from tqdm.auto import tqdm

        self.postfix = postfix
        self.bar = tqdm(total=total, initial=initial, disable=not enabled, unit="step", dynamic_ncols=True,
                        desc=description)

    def update(self, steps: int, metrics: dict[str, Any], images_per_s: float) -> None:
        """Advances by ``steps`` and shows the chunk's metrics."""
        self.bar.set_postfix(self.postfix(metrics, images_per_s), refresh=False)
        self.bar.update(steps)

    def close(self) -> None:
        """Closes the bar."""
        self.bar.close()


@dataclasses.dataclass
class EpochLoop:
    """What the loop needs from a run or a sweep.

    Attributes:
      run_steps: ``(state, device_chunk, steps) -> (state, metrics)``, the compiled multi-step
        (``steps``: how many of the chunk's batches are real, the rest padding).
      chunks: ``(epoch, steps_done_in_it) -> iterator of host chunks`` (``label`` leading axis:
        steps, at most ``steps_per_dispatch``).
      put: host chunk -> device chunk.
      fetch: device metrics -> host metrics (raises to stop, e.g. on divergence).
      end_epoch: ``(state, epoch, step, sums, epoch_start) -> state`` at each epoch's end,
        before its checkpoint (``sums``: the epoch's summed ``SUMMED`` metrics).
      save: ``(step, state)``: a checkpoint (``every_steps``, epoch ends, early stops).
      images_per_step: images one step trains on (all members together in a sweep).
      steps_per_dispatch: the length every chunk is padded to.
      steps_per_epoch, epochs: the schedule.
      every_steps: also checkpoint every this many steps (0: epoch ends only).
      max_steps: stop at the first chunk boundary at or after this step (saved; resumable).
      stop_requested: ``() -> bool`` (e.g. a signal arrived): stop the same way.
    """

    run_steps: Callable
    chunks: Callable[[int, int], Iterator[dict[str, np.ndarray]]]
    put: Callable
    fetch: Callable
    end_epoch: Callable
    save: Callable
    images_per_step: int
    steps_per_dispatch: int
    steps_per_epoch: int
    epochs: int
    every_steps: int = 0
    max_steps: int | None = None
    stop_requested: Callable[[], bool] = lambda: False

    @property
    def total_steps(self) -> int:
        """Steps of the whole schedule."""
        return self.steps_per_epoch * self.epochs


@dataclasses.dataclass
class Outcome:
    """Where the loop ended: the state, its step, whether it stopped before the schedule's end
    (``max_steps`` or a stop request; a checkpoint was saved), and the measured throughput."""

    state: Any
    step: int
    stopped_early: bool
    throughput: Throughput


def _add(sums: dict | None, metrics: dict) -> dict:
    chunk = {key: np.asarray(metrics[key], np.float64) for key in SUMMED}
    return chunk if sums is None else {key: sums[key] + chunk[key] for key in SUMMED}


def train_epochs(loop: EpochLoop, state, step: int, progress: Progress) -> Outcome:
    """Trains ``state`` from ``step`` to the end of the schedule (or an early stop)."""
    spe, total = loop.steps_per_epoch, loop.total_steps
    throughput, compiled = Throughput(), False  # the first chunk compiles: not timed
    stopped = False

    def collect(pending, sums):
        metrics, steps, compiling = pending
        host = loop.fetch(metrics)  # waits for that chunk (the next one is already queued)
        throughput.done(steps * loop.images_per_step, compiling)
        progress.update(steps, host, throughput.rate)
        return _add(sums, host)

    for epoch in range(step // spe, loop.epochs):
        epoch_start = step - epoch * spe
        sums, pending = None, None  # pending: the previous chunk's metrics, fetched after the next starts
        throughput.restart()
        chunks = ((int(c["label"].shape[0]), loop.put(pad_chunk(c, loop.steps_per_dispatch)))
                  for c in loop.chunks(epoch, epoch_start))
        for steps, chunk in prefetch(chunks):
            compiling, compiled = not compiled, True
            state, metrics = loop.run_steps(state, chunk, steps)
            if pending is not None:
                sums = collect(pending, sums)
            pending = (metrics, steps, compiling)
            step += steps
            if loop.every_steps and step // loop.every_steps > (step - steps) // loop.every_steps and step % spe:
                loop.save(step, state)
            if (loop.stop_requested() or (loop.max_steps is not None and step >= loop.max_steps)) and step < total:
                stopped = True
                break  # an epoch's last chunk: the epoch still ends below, as one unit
        if pending is not None:
            sums = collect(pending, sums)
        if stopped and step % spe:  # mid-epoch: the checkpoint resumes inside this epoch
            loop.save(step, state)
            break
        # The epoch's end is one unit (statistics, evaluation, record, checkpoint): a stop on its
        # last chunk still finishes it, or a resume would start the next epoch without it.
        state = loop.end_epoch(state, epoch, step, sums, epoch_start)
        loop.save(step, state)
        if stopped:
            break
    return Outcome(state, step, stopped, throughput)
