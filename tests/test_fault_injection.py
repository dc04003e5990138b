"""Fault injection: a file of a finished workdir is cut at a random offset or overwritten with
garbage (hypothesis draws which file of each kind, how and where), then the run is resumed and
evaluated. Each command either gives what it gives on the undisturbed workdir or fails with one
line naming the file (or the checkpoint holding it); never a traceback, never a silent mix."""

import contextlib
import io
import json
import os
import shutil
import tempfile

import hypothesis.strategies as st
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings

from effnet_jax import cli
from helpers import write_tiny_config_file

# What a run's results say about the model, not about the machine's speed that day.
SETTLED = ("steps", "epochs", "train_loss", "train_accuracy", "train_sample_loss", "train_sample_accuracy",
           "val_loss", "val_accuracy", "test_loss", "test_accuracy", "best_test_loss", "best_test_accuracy",
           "checkpoint")
# Every kind of file a finished run leaves, by where it lies in the workdir.
KINDS = {
    "config": lambda path: path == "config.json",
    "metrics": lambda path: path == "metrics.jsonl",
    "summary": lambda path: path == "summary.md",
    "plot": lambda path: path.endswith(".png"),
    "tensorboard": lambda path: path.startswith("tensorboard/"),
    "lock": lambda path: path == ".lock",
    "integrity": lambda path: path.startswith("checkpoints/integrity/"),
    "latest_newest": lambda path: path.startswith("checkpoints/latest/10/"),
    "latest_older": lambda path: path.startswith("checkpoints/latest/5/"),
    "best": lambda path: path.startswith("checkpoints/best/"),
}


def run_cli(argv):
    """``(status, stdout, stderr)`` of ``effnet-jax`` in this process."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            status = cli.main(argv)
        except SystemExit as exit_:
            status = exit_.code
    return status, out.getvalue(), err.getvalue()


def settled(stdout):
    results = json.loads(stdout[stdout.index("{"):])
    return {key: results.get(key) for key in SETTLED}


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A finished 2-epoch run (latest checkpoints at steps 5 and 10) and what resuming it and
    evaluating its best and latest checkpoints give when nothing is damaged."""
    import tensorflow_datasets as tfds

    root = tmp_path_factory.mktemp("faults")
    config = write_tiny_config_file(root / "tiny.py", "c.train.epochs = 2", "c.train.batch_size = 8",
                                    "c.train.eval_batch_size = 12", "c.train.steps_per_dispatch = 2",
                                    "c.model.options.bn_momentum = 0.5", "c.log.tensorboard = True",
                                    "c.log.plot = True")
    workdir = root / "clean"
    with tfds.testing.mock_data(num_examples=60):
        assert run_cli(["train", "--config", config, "--workdir", str(workdir)])[0] == 0
        copy = root / "copy"
        shutil.copytree(workdir, copy)
        status, resumed, err = run_cli(["train", "--config", config, "--workdir", str(copy)])
        assert status == 0, err
        evaluated = {}
        for checkpoint in ("best", "latest"):
            status, out, err = run_cli(["eval", "--workdir", str(copy), "--checkpoint", checkpoint])
            assert status == 0, err
            evaluated[checkpoint] = settled(out)
    files = sorted(os.path.relpath(os.path.join(d, f), workdir) for d, _, names in os.walk(workdir) for f in names)
    return config, workdir, files, settled(resumed), evaluated


def damage(path, data):
    """Cuts ``path`` at a drawn offset or overwrites it with as many drawn random bytes."""
    size = os.path.getsize(path)
    if data.draw(st.booleans(), label="cut") or size == 0:
        os.truncate(path, data.draw(st.integers(0, max(size - 1, 0)), label="offset"))
    else:
        seed = data.draw(st.integers(0, 2**32 - 1), label="garbage seed")
        with open(path, "wb") as f:
            f.write(np.random.default_rng(seed).bytes(size))


def names_the_damage(line, workdir, relative):
    """Whether an error line names the damaged file, or a directory holding it in the workdir."""
    parts = relative.split("/")
    candidates = [os.path.join(str(workdir), *parts[:i]) for i in range(1, len(parts) + 1)]
    return any(candidate in line for candidate in candidates)


@pytest.mark.slow
@pytest.mark.parametrize("kind", sorted(KINDS))
@settings(max_examples=2, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_a_damaged_file_gives_the_same_results_or_one_line_naming_it(finished, kind, data):
    import tensorflow_datasets as tfds

    config, clean, files, resumed, evaluated = finished  # evaluated: of the best and of the latest
    candidates = [path for path in files if KINDS[kind](path)]
    assert candidates, f"a finished run holds no {kind} file: {files}"
    relative = data.draw(st.sampled_from(candidates), label="file")
    with tempfile.TemporaryDirectory() as scratch:
        workdir = os.path.join(scratch, "run")
        shutil.copytree(clean, workdir)
        damage(os.path.join(workdir, relative), data)
        with tfds.testing.mock_data(num_examples=60):
            for argv in (["train", "--config", config, "--workdir", workdir], ["eval", "--workdir", workdir]):
                status, out, err = run_cli(argv)
                assert "Traceback" not in err, err[-3000:]
                if status != 0:
                    errors = [line for line in err.splitlines() if line.startswith(f"effnet-jax {argv[0]}: error")]
                    assert len(errors) == 1, (relative, err[-3000:])
                    assert names_the_damage(errors[0], workdir, relative), (relative, errors[0])
                elif argv[0] == "train":
                    assert settled(out) == resumed, (relative, err[-2000:])
                else:  # eval: the best, or the latest after one warning naming the damaged best
                    results = settled(out)
                    assert results == evaluated[results["checkpoint"]], (relative, err[-2000:])
                    if results["checkpoint"] == "latest":
                        warnings = [line for line in err.splitlines() if "using the latest instead" in line]
                        assert len(warnings) == 1 and names_the_damage(warnings[0], workdir, relative), err
