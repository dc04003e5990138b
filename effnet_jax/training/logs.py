"""Readable logs: JSON lines, TensorBoard events, a learning-curve PNG and a summary table."""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable, Iterable
from typing import Any

from effnet_jax.files import read_records, write_text

METRICS_FILE = "metrics.jsonl"


def json_safe(value):
    """``value`` with every non-finite float (NaN, Inf) replaced by ``None``, so that each line
    of ``metrics.jsonl`` is strict JSON (``null`` marks a value that was not finite)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


def summary_writer_class():
    """tensorboardX's ``SummaryWriter``, imported without PyTorch. tensorboardX imports torch
    wherever it is installed, only to accept torch tensors (the library logs Python floats):
    ~1.7 s and a few hundred MB in every run of a research environment that has PyTorch. A
    process that already holds torch (or tensorboardX) is left as it is."""
    import sys

    if "torch" in sys.modules or "tensorboardX" in sys.modules:
        from tensorboardX import SummaryWriter

        return SummaryWriter
    sys.modules["torch"] = None  # ``import torch`` raises ImportError while tensorboardX imports
    try:
        from tensorboardX import SummaryWriter
    finally:
        del sys.modules["torch"]
    return SummaryWriter


class MetricsWriter:
    """Appends records to ``metrics.jsonl`` and scalars to TensorBoard (``tensorboard/``).

    Only the process that should write (process 0 in multi-host runs) creates one; others
    pass ``enabled=False`` and every call is a no-op.
    """

    def __init__(self, workdir: str, tensorboard: bool = True, enabled: bool = True):
        self.enabled = enabled
        self.path = os.path.join(workdir, METRICS_FILE)
        self._tb = None
        if enabled and tensorboard:
            self._tb = summary_writer_class()(os.path.join(workdir, "tensorboard"))

    def truncate_after(self, step: int, selects: Callable[[dict[str, Any]], bool] = lambda record: True) -> None:
        """Drops the records ``selects`` picks that lie past ``step`` (logged by a run that died
        before its next checkpoint, which its resume logs again) or are final (a re-run writes
        its own), and a torn last line; the file is replaced atomically."""
        if not self.enabled or not os.path.exists(self.path):
            return
        records = read_metrics(os.path.dirname(self.path))
        kept = [r for r in records if not selects(r) or (r.get("step", 0) <= step and r.get("kind") != "final")]
        write_text(self.path, "".join(json.dumps(r) + "\n" for r in kept))

    def write(self, record: dict[str, Any]) -> None:
        """One JSON line; numeric entries also go to TensorBoard at ``record['step']``."""
        if not self.enabled:
            return
        with open(self.path, "a") as f:
            f.write(json.dumps(json_safe(record), allow_nan=False) + "\n")
        if self._tb is not None:
            for key, value in record.items():
                if key != "step" and isinstance(value, (int, float)) and math.isfinite(value):
                    self._tb.add_scalar(key, value, record["step"])
            self._tb.flush()

    def scalars(self, step: int, values: dict[str, float]) -> None:
        """TensorBoard-only scalars (frequent training metrics)."""
        if self.enabled and self._tb is not None:
            for key, value in values.items():
                self._tb.add_scalar(key, value, step)

    def close(self) -> None:
        """Flushes and closes the TensorBoard writer."""
        if self._tb is not None:
            self._tb.close()


class Throughput:
    """Images per second from the completions of dispatched chunks, with no extra syncs.

    The loops fetch a chunk's metrics after dispatching the next one, so the device is busy
    between two fetches: their interval is the chunk's compute time. Call ``restart()`` before a
    stretch of chunks (after evaluation or checkpointing pauses) and ``done(images, compiled)``
    after each fetch; chunks that compiled are not counted.
    """

    def __init__(self):
        self.images, self.seconds, self._last = 0, 0.0, time.perf_counter()

    def restart(self) -> None:
        self._last = time.perf_counter()

    def done(self, images: int, compiled: bool) -> None:
        now = time.perf_counter()
        if not compiled:
            self.images += images
            self.seconds += now - self._last
        self._last = now

    @property
    def rate(self) -> float:
        """Images per second so far (0 before any timed chunk)."""
        return self.images / self.seconds if self.seconds else 0.0


def read_metrics(workdir: str) -> list[dict[str, Any]]:
    """All records of ``metrics.jsonl`` in ``workdir`` (a torn last line dropped, with a warning).

    Raises:
      WorkdirError: another line is damaged (naming the file and the line).
    """
    return read_records(os.path.join(workdir, METRICS_FILE))[0]


def plot_learning_curves(records: Iterable[dict[str, Any]], path: str, title: str = "") -> None:
    """Loss and accuracy per epoch (training: the epoch's mean and, where measured, the network
    at the epoch's end; validation) as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [r for r in records if r.get("kind") == "epoch"]
    if not epochs:
        return
    fig, (loss_ax, acc_ax) = plt.subplots(1, 2, figsize=(10, 4))
    x = [r["epoch"] for r in epochs]
    labels = {"train": "train (epoch mean)", "train_sample": "train (end of epoch)", "val": "val"}
    for split, label in labels.items():
        if f"{split}_loss" in epochs[0]:
            loss_ax.plot(x, [r[f"{split}_loss"] for r in epochs], marker="o", label=label)
            acc_ax.plot(x, [r[f"{split}_accuracy"] for r in epochs], marker="o", label=label)
    loss_ax.set(xlabel="epoch", ylabel="loss", title="loss")
    acc_ax.set(xlabel="epoch", ylabel="top-1 accuracy", title="accuracy")
    for ax in (loss_ax, acc_ax):
        ax.grid(alpha=0.3)
        ax.legend()
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def summary_table(results: dict[str, Any]) -> str:
    """A Markdown table of the final loss/accuracy per split, plus run facts."""
    lines = ["| split | loss | accuracy |", "|---|---:|---:|"]
    for split in ("train", "train_sample", "val", "test", "best_test"):
        if f"{split}_accuracy" in results:
            lines.append(f"| {split} | {results[f'{split}_loss']:.4f} | {100 * results[f'{split}_accuracy']:.2f}% |")
    keys = ("steps", "epochs", "wall_time_s", "train_images_per_s", "backend", "devices", "implementation")
    facts = [f"{key}: {results[key]}" for key in keys if key in results]
    return "\n".join(lines + ([""] + facts if facts else []))
