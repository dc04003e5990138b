"""Damaged checkpoints never cost results: each kind of damage is found (read errors or the
checksum saved with the checkpoint), reported in one line, and the newest intact one is used;
with none intact, one clear error and nothing deleted."""

import glob
import os
import shutil

import jax
import numpy as np
import pytest

from effnet_jax import cli
from effnet_jax.training import train_and_evaluate
from helpers import latest_state, tiny_mock_config


def data_files(step_dir):
    """The array data files of one checkpoint step (OCDBT chunks)."""
    return [p for p in glob.glob(os.path.join(step_dir, "default", "**", "d", "*"), recursive=True) if os.path.isfile(p)]


def random_bytes(step_dir):
    for path in data_files(step_dir):
        with open(path, "r+b") as f:
            f.write(os.urandom(os.path.getsize(path)))


def flip_one_byte(step_dir):
    for path in data_files(step_dir):
        data = bytearray(open(path, "rb").read())
        data[len(data) // 2] ^= 0x01
        open(path, "wb").write(bytes(data))


def delete_metadata(step_dir):
    os.remove(os.path.join(step_dir, "default", "_METADATA"))


def delete_default(step_dir):
    shutil.rmtree(os.path.join(step_dir, "default"))


DAMAGE = {"random_bytes": random_bytes, "flip_one_byte": flip_one_byte, "delete_metadata": delete_metadata,
          "delete_default": delete_default}


@pytest.fixture(scope="module")
def two_epoch_run(tmp_path_factory):
    """A finished run of 2 epochs (latest checkpoints at steps 5 and 10), copied by each test."""
    import tensorflow_datasets as tfds

    root = tmp_path_factory.mktemp("integrity")
    with tfds.testing.mock_data(num_examples=60):
        config = tiny_mock_config()
        train_and_evaluate(config, str(root / "clean"))
    return root, config


@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_damaged_latest_checkpoint_falls_back_to_the_previous_one(mock_data, two_epoch_run, tmp_path, damage, caplog):
    from effnet_jax.training.checkpoints import Checkpoints
    from effnet_jax.training.experiment import build_run
    from effnet_jax.training.state import init_train_state

    clean, config = two_epoch_run
    workdir = tmp_path / "run"
    shutil.copytree(clean / "clean", workdir)
    DAMAGE[damage](str(workdir / "checkpoints" / "latest" / "10"))
    run = build_run(config)
    target = jax.eval_shape(lambda: init_train_state(run.model, run.tx, jax.random.PRNGKey(0), run.sample))
    checkpoints = Checkpoints(str(workdir / "checkpoints"), read_only=True)
    with caplog.at_level("WARNING", logger="effnet_jax"):
        state = checkpoints.restore_latest(target)
    checkpoints.close()
    assert int(state.step) == 5
    assert all(np.all(np.isfinite(x)) for x in jax.tree.leaves(state.params))
    warnings = [r.getMessage() for r in caplog.records if r.name == "effnet_jax" and r.levelname == "WARNING"]
    assert len(warnings) == 1 and warnings[0].startswith("latest checkpoint step 10 ") and "using step 5" in warnings[0]


def test_training_resumes_from_the_intact_checkpoint_and_replaces_the_damaged_one(mock_data, two_epoch_run, tmp_path):
    clean, config = two_epoch_run
    workdir = tmp_path / "run"
    shutil.copytree(clean / "clean", workdir)
    flip_one_byte(str(workdir / "checkpoints" / "latest" / "10"))
    os.remove(workdir / "metrics.jsonl")  # the resumed run logs epoch 2 again
    results = train_and_evaluate(config, str(workdir))  # retrains epoch 2 from step 5
    assert results["steps"] == 10
    again, reference = latest_state(str(workdir), config), latest_state(str(clean / "clean"), config)
    for a, b in zip(jax.tree.leaves(again.params), jax.tree.leaves(reference.params)):
        np.testing.assert_array_equal(a, b)  # bitwise what the undamaged run had


def test_no_intact_checkpoint_is_one_error_and_nothing_is_deleted(mock_data, two_epoch_run, tmp_path, capsys):
    clean, _ = two_epoch_run
    workdir = tmp_path / "run"
    shutil.copytree(clean / "clean", workdir)
    for step in ("5", "10"):
        random_bytes(str(workdir / "checkpoints" / "latest" / step))
    before = sorted(os.listdir(workdir / "checkpoints" / "latest"))
    assert cli.main(["train", "--config", str(workdir / "config.json"), "--workdir", str(workdir)]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("effnet-jax train: error")]
    assert len(err) == 1 and "no intact latest checkpoint" in err[0] and "nothing was deleted" in err[0]
    assert sorted(os.listdir(workdir / "checkpoints" / "latest")) == before


def test_eval_falls_back_from_a_damaged_best_to_the_latest_and_says_so(mock_data, two_epoch_run, tmp_path, capsys):
    clean, _ = two_epoch_run
    workdir = tmp_path / "run"
    shutil.copytree(clean / "clean", workdir)
    best_step = os.listdir(workdir / "checkpoints" / "best")[0]
    flip_one_byte(str(workdir / "checkpoints" / "best" / best_step))
    assert cli.main(["eval", "--workdir", str(workdir)]) == 0
    captured = capsys.readouterr()
    warnings = [line for line in captured.err.splitlines() if "no intact best checkpoint" in line]
    assert len(warnings) == 1 and f"step {best_step} " in warnings[0] and "using the latest instead" in warnings[0]
    assert '"checkpoint": "latest"' in captured.out and "Traceback" not in captured.err


def test_latest_and_best_saves_of_one_step_use_barriers_of_their_own(tmp_path):
    """Orbax names a save's cross-process barriers after the step's temporary directory, which is
    the same ("4.orbax-checkpoint-tmp") under latest/ and best/. An epoch's end saves both at one
    step, concurrently; with shared barrier names a two-process run hung in its shutdown barrier
    and was aborted (the failure this pins). Each manager's barriers carry its own prefix."""
    from effnet_jax.training.checkpoints import Checkpoints

    checkpoints = Checkpoints(str(tmp_path / "checkpoints"))
    try:
        prefixes = [manager._options.multiprocessing_options.barrier_sync_key_prefix
                    for manager in (checkpoints.latest, checkpoints.best)]
    finally:
        checkpoints.close()
    assert all(prefixes) and len(set(prefixes)) == 2, prefixes
