"""Sweeps: expansion, equivalence with single runs, divergence isolation, results, bad specs."""

import csv
import json
import os

import jax
import numpy as np
import pytest

from effnet_jax import cli
from effnet_jax.sweeps import expand_members, sweep
from effnet_jax.training import train_and_evaluate
from effnet_jax.config import load_config
from helpers import latest_state, tiny_mock_config, write_tiny_config_file


@pytest.mark.parametrize("grid,expected", [("sweep.grid.dropout_rate=(0.0, 0.3)", [0.0, 0.3]),
                                            ("sweep.grid.learning_rate=(1e-3, 3e-3)", None)])
def test_stacked_hparams_trace_dropout_only_where_swept(grid, expected):
    """A swept dropout rate is a per-member input even where the model's own rate is 0; an unswept
    zero rate is left out (no mask drawn)."""
    from types import SimpleNamespace

    from effnet_jax.sweeps.runner import stacked_hparams

    config = tiny_mock_config(grid)
    run = SimpleNamespace(config=config, model=SimpleNamespace(dropout_rate=0.0))
    stacked = stacked_hparams(run, expand_members(config))
    if expected is None:
        assert "dropout_rate" not in stacked and stacked["learning_rate"].shape == (2,)
    else:
        np.testing.assert_allclose(stacked["dropout_rate"], expected)


def test_grid_and_random_expansion():
    config = tiny_mock_config("sweep.seeds=(0, 1, 2)", "sweep.grid.learning_rate=(1e-3, 3e-3)",
                          "sweep.grid.label_smoothing=(0.0, 0.1)",
                          "sweep.random.weight_decay=('log_uniform', 1e-5, 1e-3)", "sweep.num_samples=2")
    members = expand_members(config)
    assert len(members) == 2 * 2 * 2 * 3
    assert [m.seed for m in members[:3]] == [0, 1, 2] and len({m.config_id for m in members}) == 8
    decays = {m.hparams["weight_decay"] for m in members}
    assert len(decays) == 2 and all(1e-5 <= d <= 1e-3 for d in decays)
    assert {(m.hparams["learning_rate"], m.hparams["label_smoothing"]) for m in members} == {
        (1e-3, 0.0), (1e-3, 0.1), (3e-3, 0.0), (3e-3, 0.1)}
    assert [m.hparams for m in expand_members(config)] == [m.hparams for m in members]  # reproducible


@pytest.mark.parametrize("overrides, message", [
    (["sweep.grid.learnig_rate=(1e-3,)"], "unknown hyperparameter 'learnig_rate'; sweepable: b1, b2, dropout_rate"),
    (["sweep.grid.learning_rate=()"], "sweep.grid.learning_rate is an empty axis"),
    (["sweep.grid.learning_rate=(1e-3, 0.0)"], r"learning_rate must be > 0.0, got 0.0"),
    (["sweep.grid.weight_decay=(-1e-4,)"], r"weight_decay must be >= 0.0, got -0.0001"),
    (["sweep.grid.dropout_rate=(0.5, 1.0)"], r"dropout_rate must be >= 0.0 and < 1.0, got 1.0"),
    (["sweep.seeds=()"], "sweep.seeds is empty"),
    (["sweep.random.learning_rate=('log_uniform', 0.0, 1.0)", "sweep.num_samples=2"], "learning_rate must be > 0.0"),
    (["sweep.random.learning_rate=('normal', 1e-3, 1.0)", "sweep.num_samples=2"], "must be \\(distribution, low, high\\)"),
    (["sweep.random.learning_rate=('uniform', 1e-3, 1e-2)"], "sweep.num_samples is 0"),
    (["sweep.grid.grad_clip_norm=(1.0,)"], "needs clipping on"),
])
def test_bad_sweep_specs_fail_before_compiling(tmp_path, overrides, message):
    workdir = tmp_path / "sweep"
    with pytest.raises(ValueError, match=message):
        sweep(tiny_mock_config(*overrides), str(workdir))
    assert not workdir.exists()


@pytest.mark.slow
def test_member_equals_training_its_configuration_alone(mock_data, tmp_path):
    """To 1e-5 with SGD at a moderate learning rate. EffNet's training is chaotic in rounding:
    the BatchNorm scales that a later BatchNorm makes scale-invariant have an exactly-zero
    gradient, so Adam (or a large SGD step with dropout and augmentation) turns float32
    rounding differences between two compiled programs into visible parameter differences
    within tens of steps; no two differently-compiled programs agree to 1e-5 there.)"""
    config = tiny_mock_config("optimizer.name=sgd", "sweep.seeds=(0, 3)", "sweep.grid.learning_rate=(0.003, 0.01)",
                          "sweep.grid.dropout_rate=(0.0, 0.3)", "optimizer.weight_decay=1e-3", "data.augment=True")
    rows = sweep(config, str(tmp_path / "sweep"))
    assert len(rows) == 8
    chosen = next(r for r in rows if r["seed"] == 3 and r["learning_rate"] == 0.003 and r["dropout_rate"] == 0.3)
    member_dir = tmp_path / "sweep" / "members" / chosen["name"]
    single_config = load_config(str(member_dir / "config.json"))
    assert single_config.seed == 3 and single_config.optimizer.learning_rate == 0.003
    assert single_config.model.options.dropout_rate == 0.3 and single_config.data.augment
    alone = str(tmp_path / "alone")
    train_and_evaluate(single_config, alone)
    a, b = latest_state(alone, single_config), latest_state(str(member_dir), single_config)
    assert int(a.step) == int(b.step) == 10
    jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-5), a.params, b.params)
    jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-5), a.batch_stats, b.batch_stats)
    # The exported member is a single-run workdir: re-running its config resumes (nothing left to train).
    resumed = train_and_evaluate(single_config, str(member_dir))
    assert resumed["steps"] == 10
    np.testing.assert_allclose(resumed["test_accuracy"], chosen["test_accuracy"], atol=1e-6)


@pytest.mark.slow
def test_diverging_member_is_frozen_and_the_others_are_untouched(mock_data, tmp_path):
    base = ("optimizer.name=sgd", "sweep.seeds=(0,)")
    with_bad = sweep(tiny_mock_config(*base, "sweep.grid.learning_rate=(0.01, 1e30, 0.03)"), str(tmp_path / "bad"))
    sane = sweep(tiny_mock_config(*base, "sweep.grid.learning_rate=(0.01, 0.02, 0.03)"), str(tmp_path / "sane"))
    bad = with_bad[1]
    assert bad["diverged"] and bad["diverged_at_step"] is not None
    assert not any(r["diverged"] for r in sane)

    def state(sweep_dir, row):
        workdir = str(tmp_path / sweep_dir / "members" / row["name"])
        return latest_state(workdir, load_config(os.path.join(workdir, "config.json")))

    # The others are bit-identical to the same population in which that member trains sanely:
    # nothing of the NaNs leaks. (A population of another size is another XLA program, whose
    # batched matmuls round differently; training amplifies that, so "without it" is compared
    # at the same population size.)
    for index in (0, 2):
        mine = state("bad", with_bad[index])
        jax.tree.map(np.testing.assert_array_equal, mine.params, state("sane", sane[index]).params)
        jax.tree.map(np.testing.assert_array_equal, mine.batch_stats, state("sane", sane[index]).batch_stats)
        assert with_bad[index]["test_loss"] == sane[index]["test_loss"]
    frozen = state("bad", bad)
    assert all(np.isfinite(x).all() for x in jax.tree.leaves(frozen.params))
    # Frozen as it was at the start of the chunk of steps in which its loss first went bad.
    assert int(frozen.step) <= bad["diverged_at_step"] < int(frozen.step) + 2


@pytest.mark.slow
def test_results_files_and_best_config(mock_data, tmp_path, capsys):
    config_file = write_tiny_config_file(
        tmp_path / "sweep_config.py", "c.train.epochs = 1", "c.train.batch_size = 8",
        "c.sweep.seeds = (0, 1)", "c.sweep.grid.learning_rate = (1e-3, 1e-2)")
    workdir = tmp_path / "sweep"
    assert cli.main(["sweep", "--config", str(config_file), "--workdir", str(workdir), "sweep.chunk_size=3"]) == 0
    assert "mean and std over seeds" in capsys.readouterr().out
    rows = list(csv.DictReader(open(workdir / "results.csv")))
    assert len(rows) == 4 and [int(r["rank"]) for r in rows] == [1, 2, 3, 4]
    accuracies = [float(r["val_accuracy"]) for r in rows]
    assert accuracies == sorted(accuracies, reverse=True)
    assert (workdir / "accuracy_vs_learning_rate.png").stat().st_size > 0
    assert len(os.listdir(workdir / "chunks")) == 2  # 4 members in chunks of 3
    epoch = next(r for r in map(json.loads, open(workdir / "metrics.jsonl")) if r["kind"] == "epoch")
    assert len(epoch["train_sample_accuracy"]) == len(epoch["val_accuracy"]) == 3  # the networks at the epoch's end
    markdown = (workdir / "results.md").read_text()
    assert "val_accuracy_mean" in markdown and "val_accuracy_std" in markdown
    best = json.load(open(workdir / "best_config.json"))
    assert best["sweep"]["grid"] == {} and best["optimizer"]["learning_rate"] in (1e-3, 1e-2)
    code = cli.main(["train", "--config", str(workdir / "best_config.json"), "--workdir", str(tmp_path / "best")])
    assert code == 0


@pytest.mark.slow
def test_chunks_shrink_until_the_program_fits_the_device(mock_data, monkeypatch):
    from effnet_jax.sweeps import runner
    from effnet_jax.training.experiment import build_run

    run = build_run(tiny_mock_config())
    per_four = runner._population_bytes(run, 4)
    assert runner._population_bytes(run, 8) > per_four > runner._population_bytes(run, 2)
    monkeypatch.setattr(runner, "_device_memory_limit", lambda: int(per_four / runner._MEMORY_HEADROOM) + 1)
    assert runner.choose_chunk_size(run, 8) == 4
    monkeypatch.setattr(runner, "_device_memory_limit", lambda: None)  # CPU: no limit reported
    assert runner.choose_chunk_size(run, 8) == 8
    assert runner.choose_chunk_size(build_run(tiny_mock_config("sweep.chunk_size=3")), 8) == 3


@pytest.mark.slow
def test_a_sweep_stops_at_max_steps_checkpoints_every_steps_and_resumes_to_the_same_members(mock_data, tmp_path, capsys):
    """The sweep trains through the single run's epoch loop: ``--max-steps`` and
    ``checkpoint.every_steps`` work for it too, and the resumed sweep ends where an uninterrupted
    one does, bit for bit."""
    overrides = ["sweep.seeds=(0,1)", "checkpoint.every_steps=3"]
    config_file = write_tiny_config_file(tmp_path / "sweep_config.py", "c.train.epochs = 2", "c.train.batch_size = 8",
                                         "c.train.steps_per_dispatch = 2")
    stopped, whole = tmp_path / "stopped", tmp_path / "whole"
    assert cli.main(["sweep", "--config", config_file, "--workdir", str(stopped), "--max-steps", "4", *overrides]) == 0
    assert "stopped at --max-steps 4 with 0 of 2 members finished" in capsys.readouterr().err
    assert not (stopped / "results.csv").exists()
    checkpoints = stopped / "chunks" / "chunk_000" / "checkpoints"
    assert sorted(os.listdir(checkpoints / "latest"))[-1:] == ["4"]
    assert cli.main(["sweep", "--config", config_file, "--workdir", str(stopped), *overrides]) == 0
    assert cli.main(["sweep", "--config", config_file, "--workdir", str(whole), *overrides]) == 0
    rows = {r["name"]: r for r in csv.DictReader(open(whole / "results.csv"))}
    for row in csv.DictReader(open(stopped / "results.csv")):
        config = load_config(str(whole / "members" / row["name"] / "config.json"))
        a = latest_state(str(stopped / "members" / row["name"]), config)
        b = latest_state(str(whole / "members" / row["name"]), config)
        assert int(a.step) == int(b.step) == 10 and row["test_accuracy"] == rows[row["name"]]["test_accuracy"]
        jax.tree.map(np.testing.assert_array_equal, a.params, b.params)
