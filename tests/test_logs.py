"""Tests for effnet_jax.training.logs: the metrics file, the summary table and throughput."""

from __future__ import annotations

import pytest

from effnet_jax.training import logs
from effnet_jax.training.logs import MetricsWriter, Throughput, read_metrics, summary_table


def test_metrics_writer_round_trip_and_truncate(tmp_path):
    writer = MetricsWriter(str(tmp_path), tensorboard=False)
    for step in (10, 20, 30):
        writer.write({"kind": "epoch", "step": step, "train_loss": 1.0 / step})
    writer.write({"kind": "final", "step": 30})
    assert [r["step"] for r in read_metrics(str(tmp_path))] == [10, 20, 30, 30]
    writer.truncate_after(20)  # a resumed run from step 20 drops later records and the final one
    assert [(r["kind"], r["step"]) for r in read_metrics(str(tmp_path))] == [("epoch", 10), ("epoch", 20)]


def test_disabled_writer_writes_nothing(tmp_path):
    MetricsWriter(str(tmp_path), enabled=False).write({"kind": "epoch", "step": 1})
    assert read_metrics(str(tmp_path)) == []


def test_summary_table_lists_the_splits_present():
    table = summary_table({"train_loss": 0.5, "train_accuracy": 0.8, "test_loss": 0.6,
                           "test_accuracy": 0.75, "steps": 7})
    assert "| train | 0.5000 | 80.00% |" in table and "| test | 0.6000 | 75.00% |" in table
    assert "val" not in table and "steps: 7" in table


def test_throughput_counts_intervals_between_fetches_and_skips_compiled_chunks(monkeypatch):
    clock = iter([0.0, 5.0, 6.0, 8.0, 100.0, 101.0])
    monkeypatch.setattr(logs.time, "perf_counter", lambda: next(clock))
    meter = Throughput()             # t=0
    meter.done(64, compiled=True)    # t=5: compiled chunk, not counted
    meter.done(64, compiled=False)   # t=6: 1 s
    meter.done(128, compiled=False)  # t=8: 2 s
    meter.restart()                  # t=100: a pause for evaluation is not counted
    meter.done(32, compiled=False)   # t=101: 1 s
    assert meter.images == 224 and meter.seconds == pytest.approx(4.0)
    assert meter.rate == pytest.approx(56.0)


def test_throughput_rate_is_zero_before_any_timed_chunk():
    assert Throughput().rate == 0.0


TENSORBOARD_WITHOUT_TORCH = """
import sys
{first}
from effnet_jax.training.logs import MetricsWriter
writer = MetricsWriter(sys.argv[1])
writer.write({{"kind": "epoch", "step": 1, "train_loss": 0.5}})
writer.close()
from tensorboard_events import scalars
print("RESULT", "torch" in sys.modules, scalars(sys.argv[1]))
try:
    import torch  # still importable afterwards
    print("TORCH", torch.__name__)
except ImportError:
    print("TORCH none")
"""


@pytest.mark.parametrize("first", ["", "import torch"])
def test_tensorboard_events_are_written_without_importing_pytorch(tmp_path, first):
    """tensorboardX imports PyTorch wherever it is installed (~1.7 s per run); the writer keeps it
    out, and a process that already holds PyTorch keeps it."""
    import os
    import subprocess
    import sys

    pytest.importorskip("torch")
    done = subprocess.run([sys.executable, "-c", TENSORBOARD_WITHOUT_TORCH.format(first=first), str(tmp_path)],
                          env={**os.environ, "PYTHONPATH": os.path.dirname(__file__)}, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    result = done.stdout.split("RESULT ")[1].splitlines()[0]
    assert result == f"{bool(first)} {{'train_loss': [(1, 0.5)]}}"
    assert "TORCH torch" in done.stdout
