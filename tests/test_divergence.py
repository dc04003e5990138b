"""A run whose loss turns NaN stops with one line naming the step, keeps its last finite
checkpoint as latest and best, saves nothing non-finite, and logs strict JSON."""

import json
import math
import os

import jax
import numpy as np
import pytest

from effnet_jax import cli
from effnet_jax.training import train_and_evaluate
from effnet_jax.training.loop import TrainingDiverged
from helpers import tiny_mock_config, write_tiny_config_file


def strict_records(workdir):
    def reject(constant):
        raise ValueError(f"non-JSON constant {constant}")

    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        return [json.loads(line, parse_constant=reject) for line in f]


def restored_params(directory, config):
    from effnet_jax.training.checkpoints import Checkpoints
    from effnet_jax.training.experiment import build_run
    from effnet_jax.training.state import init_train_state

    run = build_run(config)
    target = jax.eval_shape(lambda: init_train_state(run.model, run.tx, jax.random.PRNGKey(0), run.sample))
    checkpoints = Checkpoints(directory, read_only=True)
    latest, best = checkpoints.restore_latest(target), checkpoints.restore_best(target)
    steps = checkpoints.latest.all_steps()
    checkpoints.close()
    return latest, best, steps


def test_divergence_in_the_second_epoch_keeps_the_first_epochs_checkpoint(mock_data, tmp_path):
    # The step schedule multiplies the learning rate by 1e30 halfway: epoch 2 (steps 6-10) blows up.
    config = tiny_mock_config("optimizer.schedule=step", "optimizer.step_boundaries=(0.5, 0.9)",
                              "optimizer.step_factor=1e30", "optimizer.name=sgd", "train.epochs=2")
    workdir = str(tmp_path / "run")
    with pytest.raises(TrainingDiverged, match=r"training diverged at step \d+ .*the last finite checkpoint, "
                                               r"step 5, stays as latest and best"):
        train_and_evaluate(config, workdir)
    latest, best, steps = restored_params(os.path.join(workdir, "checkpoints"), config)
    assert steps == [5] and int(latest.step) == 5 and int(best.step) == 5
    assert all(np.all(np.isfinite(x)) for x in jax.tree.leaves((latest.params, best.params)))
    records = strict_records(workdir)
    assert [r["kind"] for r in records] == ["epoch", "diverged"] and records[1]["step"] > 5


def test_the_cli_says_it_in_one_line_and_exits_non_zero(mock_data, tmp_path, capsys):
    config = write_tiny_config_file(tmp_path / "config.py", "c.optimizer.learning_rate = 1e30",
                                    "c.optimizer.name = 'sgd'", "c.train.batch_size = 8", "c.train.eval_batch_size = 12")
    code = cli.main(["train", "--config", config, "--workdir", str(tmp_path / "run")])
    err = [line for line in capsys.readouterr().err.splitlines() if not line.startswith("effnet-jax: ")]  # info
    assert code == 1 and len(err) == 1, err
    assert err[0].startswith("effnet-jax train: error: training diverged at step")
    assert "no checkpoint had been saved" in err[0]
    assert not os.listdir(tmp_path / "run" / "checkpoints" / "latest")


def test_non_finite_values_are_null_in_metrics_jsonl(tmp_path):
    from effnet_jax.training.logs import MetricsWriter

    writer = MetricsWriter(str(tmp_path), tensorboard=True)
    writer.write({"kind": "epoch", "step": 3, "train_loss": math.nan, "val_loss": math.inf, "members": [1.0, math.nan]})
    writer.close()
    assert strict_records(str(tmp_path)) == [{"kind": "epoch", "step": 3, "train_loss": None, "val_loss": None,
                                              "members": [1.0, None]}]
