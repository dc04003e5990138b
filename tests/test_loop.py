"""The whole loop: end to end on mock data, resumption, reports, CLI, and bad input."""

import json
import logging
import os

import jax
import numpy as np
import pytest
from helpers import latest_state, tiny_mock_config, write_tiny_config_file

from effnet_jax import cli
from effnet_jax.training import evaluate_workdir, train_and_evaluate


def snapshot(directory):
    files = {}
    for root, _, names in os.walk(directory):
        for name in names:
            path = os.path.join(root, name)
            with open(path, "rb") as f:
                files[os.path.relpath(path, directory)] = f.read()
    return files


def test_full_loop_on_mock_data_writes_every_report(mock_data, tmp_path):
    workdir = str(tmp_path / "run")
    results = train_and_evaluate(tiny_mock_config(), workdir)
    # 60 - 16 validation = 44 training examples -> 5 steps of 8 per epoch.
    assert results["steps"] == 10 and results["epochs"] == 2
    for key in ("train_accuracy", "train_sample_accuracy", "val_accuracy", "test_accuracy", "best_test_accuracy"):
        assert 0.0 <= results[key] <= 1.0
    names = set(os.listdir(workdir))
    assert {"config.json", "metrics.jsonl", "tensorboard", "checkpoints", "learning_curves.png", "summary.md"} <= names
    assert any(f.startswith("events.out.tfevents") for f in os.listdir(os.path.join(workdir, "tensorboard")))
    records = [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl"))]
    assert [r["epoch"] for r in records if r["kind"] == "epoch"] == [1, 2]
    assert all(0.0 <= r["train_sample_accuracy"] <= 1.0 for r in records if r["kind"] == "epoch")
    assert records[-1]["kind"] == "final" and records[-1]["test_accuracy"] == results["test_accuracy"]
    saved = json.load(open(os.path.join(workdir, "config.json")))
    assert saved["model"]["options"]["widths"] == [4, 8, 8]
    # implementation="auto" (the default) is resolved for the backend and recorded.
    assert (results["backend"], results["implementation"], results["devices"]) == ("cpu", "fast", 1)
    assert results["kernels"] == "fused EffNetBlock"  # what ran, in the results and the log line
    assert "implementation: fast" in open(os.path.join(workdir, "summary.md")).read()
    evaluated = evaluate_workdir(workdir)
    assert evaluated["test_accuracy"] == results["best_test_accuracy"]


@pytest.mark.slow
def test_interrupted_run_resumes_to_bitwise_equal_parameters(mock_data, tmp_path, caplog):
    config = tiny_mock_config("train.epochs=3", "optimizer.schedule=cosine", "model.options.dropout_rate=0.3",
                         "data.augment=True")
    straight = str(tmp_path / "straight")
    with jax.log_compiles(), caplog.at_level(logging.WARNING):
        train_and_evaluate(config, straight)
    # Chunks of 2, 2 and 1 steps: the short one is padded, so the multi-step compiles once.
    assert sum("Compiling jit(run)" in r.getMessage() for r in caplog.records) == 1
    interrupted = str(tmp_path / "interrupted")
    # 5 steps per epoch in chunks of 2 (2, 2, 1): step 7 is a chunk boundary mid-epoch 2.
    partial = train_and_evaluate(config, interrupted, max_steps=7)
    assert partial["stopped_early"] and partial["steps"] == 7
    train_and_evaluate(config, interrupted)
    a, b = latest_state(straight, config), latest_state(interrupted, config)
    assert int(a.step) == int(b.step) == 15
    jax.tree.map(np.testing.assert_array_equal, a.params, b.params)
    jax.tree.map(np.testing.assert_array_equal, a.batch_stats, b.batch_stats)
    jax.tree.map(np.testing.assert_array_equal, a.opt_state, b.opt_state)
    records = [r for r in map(json.loads, open(os.path.join(interrupted, "metrics.jsonl"))) if r["kind"] == "epoch"]
    assert [r["epoch"] for r in records] == [1, 2, 3]
    # Epoch 2 resumed at step 7: its training metrics average the 3 steps since, and say so.
    assert [r["train_steps"] for r in records] == [5, 3, 5]
    assert [r.get("train_partial", False) for r in records] == [False, True, False]
    # A re-run after the last epoch still reports that epoch's training metrics.
    again = train_and_evaluate(config, interrupted)
    assert again["train_loss"] == records[-1]["train_loss"] and again["steps"] == 15


def test_cli_train_with_overrides_then_eval(mock_data, tmp_path, capsys):
    config_file = write_tiny_config_file(tmp_path / "tiny.py")
    workdir = str(tmp_path / "cli")
    code = cli.main(["train", "--config", str(config_file), "--workdir", workdir,
                     "train.epochs=1", "train.batch_size=8", "optimizer.name=sgd"])
    assert code == 0
    out = capsys.readouterr().out
    assert json.loads(out[out.index("{"):])["steps"] == 5
    assert json.load(open(os.path.join(workdir, "config.json")))["optimizer"]["name"] == "sgd"
    assert cli.main(["eval", "--workdir", workdir]) == 0
    assert "test_accuracy" in capsys.readouterr().out
    assert cli.main(["train", "--config", str(config_file), "--workdir", workdir, "train.bacth_size=8"]) == 2
    assert "unknown config key 'train.bacth_size'" in capsys.readouterr().err


# --- bad input: clear errors before training, nothing in the workdir lost -------------------

@pytest.mark.parametrize("overrides, error, message", [
    (["data.name=imagenet"], ValueError, "unknown dataset 'imagenet'; valid datasets"),
    (["train.batch_size=0"], ValueError, "train.batch_size must be a positive integer, got 0"),
    (["train.batch_size=-8"], ValueError, "train.batch_size must be a positive integer, got -8"),
    (["model.name=resnet"], ValueError, "unknown model 'resnet'; valid names"),
    (["optimizer.name=lamb"], ValueError, "optimizer.name must be one of"),
    (["model.options.num_classes=5"], ValueError, r"labels must be in \[0, 5\)"),
    (["train.batch_size=512"], ValueError, "batch_size=512 exceeds the 44 training examples"),
])
def test_bad_config_fails_before_anything_is_written(mock_data, tmp_path, overrides, error, message):
    workdir = tmp_path / "run"
    with pytest.raises(error, match=message):
        train_and_evaluate(tiny_mock_config(*overrides), str(workdir))
    assert not (workdir / "config.json").exists() and not (workdir / "checkpoints").exists()


def test_missing_data_says_how_to_get_it(tmp_path):
    config = tiny_mock_config("data.name=fashion_mnist", "data.source=idx", f"data.idx_dir={tmp_path}")
    with pytest.raises(FileNotFoundError, match="apt-get install dataset-fashion-mnist"):
        train_and_evaluate(config, str(tmp_path / "run"))


def test_unwritable_workdir_is_reported(mock_data, tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a directory")
    with pytest.raises(PermissionError, match="is not writable"):
        train_and_evaluate(tiny_mock_config(), str(blocker / "run"))
    with pytest.raises(FileExistsError, match="exists and is not a directory"):
        train_and_evaluate(tiny_mock_config(), str(blocker))


def test_workdir_of_another_config_is_refused_and_left_intact(mock_data, tmp_path):
    workdir = str(tmp_path / "run")
    train_and_evaluate(tiny_mock_config("train.epochs=1"), workdir)
    before = snapshot(workdir)
    with pytest.raises(FileExistsError, match=r"different config.*optimizer.learning_rate: 0.001 in the workdir, 0.01 now"):
        train_and_evaluate(tiny_mock_config("train.epochs=1", "optimizer.learning_rate=0.01"), workdir)
    assert snapshot(workdir) == before
