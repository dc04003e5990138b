"""SIGTERM and SIGINT (preemption, Ctrl-C): a checkpoint is saved, one line, no traceback, and
re-running resumes; a second Ctrl-C exits at once."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from effnet_jax.data.idx import DEBIAN_FASHION_MNIST_DIR, idx_files_present

HERE = os.path.dirname(os.path.abspath(__file__))
pytestmark = pytest.mark.skipif(not idx_files_present(DEBIAN_FASHION_MNIST_DIR),
                                reason="needs Debian's dataset-fashion-mnist (make data installs it)")
OVERRIDES = ["data.train_subset=640", "data.validation_size=128", "data.test_subset=256",
             "model.options.widths=(8,16,16)", "train.epochs=40", "train.batch_size=64", "train.eval_batch_size=128",
             "train.steps_per_dispatch=2", "log.progress=False", "log.plot=False"]


def with_overrides(*overrides):
    """``OVERRIDES`` with ``overrides`` in place of the same keys (the CLI refuses a key twice)."""
    keys = {item.split("=", 1)[0] for item in overrides}
    return [item for item in OVERRIDES if item.split("=", 1)[0] not in keys] + list(overrides)


def start(workdir, *overrides):
    command = [sys.executable, "-m", "effnet_jax.cli", "train", "--config",
               os.path.join(HERE, "..", "experiments", "configs", "fashion_mnist.py"), "--workdir", str(workdir),
               *with_overrides(*overrides)]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for_epochs(workdir, count, timeout=300):
    path = os.path.join(workdir, "metrics.jsonl")
    deadline = time.time() + timeout
    while time.time() < deadline:
        if os.path.exists(path) and sum(1 for _ in open(path)) >= count:
            return
        time.sleep(0.2)
    raise AssertionError("the run did not log its epochs in time")


@pytest.mark.slow
def test_sigterm_saves_a_checkpoint_and_the_rerun_resumes(tmp_path):
    workdir = tmp_path / "run"
    process = start(workdir, "train.epochs=10")  # 100 steps: SIGTERM after the first epoch's 10
    wait_for_epochs(workdir, 1)
    process.send_signal(signal.SIGTERM)
    out, err = process.communicate(timeout=300)
    lines = [line for line in err.splitlines() if not line.startswith(("effnet-jax: ", "WARNING:absl"))]
    assert process.returncode == 128 + signal.SIGTERM, err[-2000:]
    assert len(lines) == 1 and lines[0].startswith("effnet-jax train: SIGTERM at step ") and "Traceback" not in err
    step = int(lines[0].split("at step ")[1].split(":")[0])
    assert 10 <= step < 100 and str(step) in os.listdir(workdir / "checkpoints" / "latest")
    # Resuming finishes the run from that step.
    done = subprocess.run(process.args, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(done.stdout[done.stdout.index("{"):])["steps"] == 100


@pytest.mark.slow
def test_a_second_sigint_exits_at_once(tmp_path):
    workdir = tmp_path / "run"
    process = start(workdir)
    wait_for_epochs(workdir, 1)
    process.send_signal(signal.SIGINT)
    time.sleep(0.5)  # two signals at the same instant are one pending signal to Python
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 128 + signal.SIGINT and "Traceback" not in err, err[-2000:]
    assert "second SIGINT: exiting without waiting" in err


STOPPED_COMMANDS = {  # a sweep raises its stop (Interrupted); train_and_evaluate returns it in its results
    "sweep": ["from effnet_jax.cli import report_error", "from effnet_jax.training.signals import Interrupted",
              "status = report_error('train', Interrupted('SIGINT', 14, 'runs/x'))"],
    "train": ["import effnet_jax.training", "from effnet_jax.cli import main",
              "effnet_jax.training.train_and_evaluate = lambda *a, **k: {'interrupted': 'SIGINT', 'steps': 14}",
              "status = main(['train', '--config', 'fashion_mnist', '--workdir', 'runs/x'])"],
}


@pytest.mark.parametrize("command", sorted(STOPPED_COMMANDS))
def test_a_second_signal_while_the_stopped_command_exits_ends_it_at_once(command):
    """The first signal's checkpoint is saved and its line printed; a second one arriving while
    the interpreter shuts down (JAX's atexit clean-up, here an atexit that waits) exits at once
    with the one line, not a KeyboardInterrupt traceback from the atexit callback."""
    code = "\n".join(["import atexit, sys, time", *STOPPED_COMMANDS[command],
                      "atexit.register(lambda: (print('exiting', flush=True), time.sleep(60)))", "sys.exit(status)"])
    process = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert process.stdout.readline() == "exiting\n"
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=30)
    assert process.returncode == 128 + signal.SIGINT and "Traceback" not in err, err
    assert err.splitlines() == ["effnet-jax train: SIGINT at step 14: checkpoint saved in runs/x; run the same command "
                                "again to resume", "effnet-jax: second SIGINT: exiting without waiting"]


@pytest.mark.slow
def test_sigterm_stops_a_sweep_with_its_checkpoint_and_the_rerun_finishes(tmp_path):
    workdir = tmp_path / "sweep"
    command = [sys.executable, "-m", "effnet_jax.cli", "sweep", "--config",
               os.path.join(HERE, "..", "experiments", "configs", "fashion_mnist.py"), "--workdir", str(workdir),
               *with_overrides("train.epochs=6", "sweep.seeds=(0, 1)")]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for_epochs(workdir, 1)
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=300)
    lines = [line for line in err.splitlines() if not line.startswith(("effnet-jax: ", "WARNING:absl"))]
    assert process.returncode == 128 + signal.SIGTERM and "Traceback" not in err, err[-2000:]
    assert len(lines) == 1 and lines[0].startswith("effnet-jax sweep: SIGTERM at step "), lines
    done = subprocess.run(command, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "2 members" in done.stdout


@pytest.mark.slow
def test_kill_9_at_several_points_then_rerun_equals_an_uninterrupted_run(tmp_path):
    """SIGKILL (no handler runs) after 1 logged epoch, then after 2 right at a checkpoint's
    start; re-running each time resumes from the newest complete checkpoint, and the finished run
    has bitwise the parameters of a run never interrupted."""
    import jax
    import numpy as np

    sys.path.insert(0, HERE)
    from helpers import latest_state

    from effnet_jax.config import apply_overrides, load_config

    overrides = with_overrides("train.epochs=4", "checkpoint.every_steps=3")
    config_path = os.path.join(HERE, "..", "experiments", "configs", "fashion_mnist.py")

    def command(workdir):
        return [sys.executable, "-m", "effnet_jax.cli", "train", "--config", config_path, "--workdir", str(workdir),
                *overrides]

    killed = tmp_path / "killed"
    for epochs_logged in (1, 2):
        process = subprocess.Popen(command(killed), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for_epochs(killed, epochs_logged)
        if epochs_logged == 2:  # as a checkpoint is being written
            deadline = time.time() + 60
            while time.time() < deadline and not any(n.endswith("orbax-checkpoint-tmp") or "tmp" in n
                                                     for n in os.listdir(killed / "checkpoints" / "latest")):
                time.sleep(0.01)
        process.kill()
        process.wait()
    done = subprocess.run(command(killed), capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-2000:]
    reference = subprocess.run(command(tmp_path / "reference"), capture_output=True, text=True, timeout=900)
    assert reference.returncode == 0, reference.stderr[-2000:]
    config = apply_overrides(load_config(config_path), overrides)
    a, b = latest_state(str(killed), config), latest_state(str(tmp_path / "reference"), config)
    assert int(a.step) == int(b.step) == 40
    for x, y in zip(jax.tree.leaves((a.params, a.batch_stats)), jax.tree.leaves((b.params, b.batch_stats))):
        np.testing.assert_array_equal(x, y)
    # What the killed processes logged reached disk: TensorBoard holds every epoch's validation.
    assert {10, 20, 30, 40} <= tensorboard_steps(killed / "tensorboard", "val_accuracy")


def tensorboard_steps(directory, tag):
    """The steps at which any event file under ``directory`` recorded ``tag``."""
    import struct

    from tensorboardX.proto import event_pb2

    steps = set()
    for name in os.listdir(directory):
        data, offset = open(os.path.join(directory, name), "rb").read(), 0
        while offset + 12 <= len(data):  # records: length (8), its CRC (4), event, CRC (4)
            length = struct.unpack("<Q", data[offset:offset + 8])[0]
            event = event_pb2.Event()
            event.ParseFromString(data[offset + 12:offset + 12 + length])
            steps |= {event.step for value in event.summary.value if value.tag == tag}
            offset += 16 + length
    return steps
