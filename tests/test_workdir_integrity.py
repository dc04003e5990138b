"""A workdir's files never block a resume or mix runs silently: torn logs, a missing or damaged
config, a stop on an epoch's last chunk, train and sweep workdirs mixed up, a sweep with no
finite member, validation before anything is written, and the edges (closed streams, long
paths, repeated keys, Ctrl-C in eval, a full stdout). ``test_fault_injection`` damages every
file of a finished workdir at random."""

import json
import os
import shutil
import signal
import stat
import subprocess
import sys

import pytest

from effnet_jax import cli
from effnet_jax.files import read_records, write_text
from helpers import write_tiny_config_file

HERE = os.path.dirname(os.path.abspath(__file__))
STEPS_PER_EPOCH = 5  # 44 mock training images in batches of 8; chunks of 2, 2 and 1 steps


def train(capsys, config, workdir, *extra):
    """``effnet-jax train`` in this process: ``(status, results or None, stderr lines)``."""
    status = cli.main(["train", "--config", str(config), "--workdir", str(workdir), *extra])
    captured = capsys.readouterr()
    out, train.last_stderr = captured.out, captured.err
    return status, (json.loads(out[out.index("{"):]) if status == 0 and "{" in out else None), \
        [line for line in captured.err.splitlines() if line.startswith("effnet-jax train")]


@pytest.fixture
def config(tmp_path):
    return write_tiny_config_file(tmp_path / "tiny.py", "c.train.epochs = 2", "c.train.batch_size = 8",
                                  "c.train.eval_batch_size = 12", "c.train.steps_per_dispatch = 2",
                                  "c.model.options.bn_momentum = 0.5")


def epochs_logged(workdir):
    return [r["epoch"] for r in read_records(str(workdir / "metrics.jsonl"))[0] if r["kind"] == "epoch"]


# 1 -------------------------------------------------------------------- a torn metrics.jsonl
def test_a_torn_last_record_is_dropped_with_a_warning_and_the_run_resumes(mock_data, tmp_path, config, capsys):
    workdir = tmp_path / "run"
    assert train(capsys, config, workdir, "--max-steps", "7")[0] == 0
    path = workdir / "metrics.jsonl"
    os.truncate(path, path.stat().st_size - 40)  # what a full disk leaves mid-append
    status, results, _ = train(capsys, config, workdir)
    assert status == 0 and results["steps"] == 2 * STEPS_PER_EPOCH
    assert train.last_stderr.count("metrics.jsonl: its last line (1) is incomplete") == 1
    assert epochs_logged(workdir) == [2]  # epoch 1's record was the torn one; the log is whole again
    assert path.read_text().endswith("\n") and all(json.loads(line) for line in path.read_text().splitlines())


def test_a_damaged_record_inside_the_log_is_one_line_naming_file_and_line(mock_data, tmp_path, config, capsys):
    workdir = tmp_path / "run"
    assert train(capsys, config, workdir)[0] == 0
    path = workdir / "metrics.jsonl"
    lines = path.read_text().splitlines(keepends=True)
    path.write_text(lines[0] + '{"kind": "epo\n' + "".join(lines[1:]))
    status, _, err = train(capsys, config, workdir)
    assert status == 2 and len(err) == 1 and f"{str(path)!r} line 2 is not a JSON record" in err[0]


# 2 -------------------------------------------------------------------- an epoch's edge
@pytest.mark.parametrize("stop_at", [STEPS_PER_EPOCH, STEPS_PER_EPOCH - 1])
def test_a_stop_on_or_before_an_epochs_last_chunk_leaves_every_epoch_logged_once(mock_data, tmp_path, config, capsys,
                                                                                  stop_at):
    workdir = tmp_path / "run"
    assert train(capsys, config, workdir, "--max-steps", str(stop_at))[0] == 0
    if stop_at == STEPS_PER_EPOCH:  # the epoch ended as a unit: its record and best candidate exist
        assert epochs_logged(workdir) == [1]
        assert os.listdir(workdir / "checkpoints" / "best") == [str(STEPS_PER_EPOCH)]
    status, results, _ = train(capsys, config, workdir)
    assert status == 0 and results["steps"] == 2 * STEPS_PER_EPOCH
    records = read_records(str(workdir / "metrics.jsonl"))[0]
    assert epochs_logged(workdir) == [1, 2]
    assert all("val_accuracy" in r for r in records if r["kind"] == "epoch")


# 3 -------------------------------------------------------------------- config.json
def test_a_workdir_without_its_config_is_refused_naming_the_file(mock_data, tmp_path, config, capsys):
    workdir = tmp_path / "run"
    assert train(capsys, config, workdir, "--max-steps", "2")[:3:2] == (0, [])
    os.remove(workdir / "config.json")
    status, _, err = train(capsys, config, workdir, "train.batch_size=4")
    assert status == 2 and len(err) == 1
    assert "holds training but no config.json" in err[0] and "another workdir" in err[0]


def test_a_damaged_config_is_refused_naming_the_file_by_train_and_eval(mock_data, tmp_path, config, capsys):
    workdir = tmp_path / "run"
    assert train(capsys, config, workdir, "--max-steps", "2")[:3:2] == (0, [])
    (workdir / "config.json").write_text("{")
    status, _, err = train(capsys, config, workdir)
    assert status == 2 and len(err) == 1 and f"{str(workdir / 'config.json')!r} is not valid JSON" in err[0]
    (workdir / "config.json").write_text("{}")  # JSON, but no config: never the defaults instead
    assert cli.main(["eval", "--workdir", str(workdir)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "is not an effnet-jax config: it has no model.name or data.name" in err[0]


# 4 -------------------------------------------------------------------- train and sweep workdirs
def test_train_and_sweep_refuse_each_others_workdirs(mock_data, tmp_path, config, capsys):
    trained = tmp_path / "run"
    assert train(capsys, config, trained, "--max-steps", "2")[0] == 0
    assert cli.main(["sweep", "--config", str(config), "--workdir", str(trained), "--max-steps", "2"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "holds a single run; effnet-jax sweep needs a workdir of its own" in err[0]
    swept = tmp_path / "sweep"
    assert cli.main(["sweep", "--config", str(config), "--workdir", str(swept), "--max-steps", "2",
                     "sweep.seeds=(0,1)"]) == 0
    capsys.readouterr()
    status, _, err = train(capsys, swept / "config.json", swept)
    assert status == 2 and len(err) == 1 and "holds a sweep; effnet-jax train needs a workdir of its own" in err[0]


# 5 -------------------------------------------------------------------- a sweep with no finite member
def test_a_sweep_whose_every_member_diverges_exits_1_and_recommends_nothing(mock_data, tmp_path, config, capsys):
    workdir = tmp_path / "sweep"
    status = cli.main(["sweep", "--config", str(config), "--workdir", str(workdir), "train.epochs=1",
                       "sweep.seeds=(0,1)", "sweep.grid.learning_rate=(1e30,)", "optimizer.name=sgd"])
    err = capsys.readouterr().err.strip().splitlines()
    assert status == 1 and err[-1].startswith("effnet-jax sweep: error: every member of the sweep")
    assert not (workdir / "best_config.json").exists()
    assert "no configuration is recommended" in (workdir / "results.md").read_text()


# 6 -------------------------------------------------------------------- result files
def test_a_damaged_chunk_result_is_computed_again_from_its_checkpoint(mock_data, tmp_path, config, capsys):
    workdir = tmp_path / "sweep"
    command = ["sweep", "--config", str(config), "--workdir", str(workdir), "train.epochs=1", "sweep.seeds=(0,1)"]
    assert cli.main(command) == 0
    before = results_without_timing(workdir)
    done = workdir / "chunks" / "chunk_000" / "results.json"
    os.truncate(done, done.stat().st_size // 2)
    assert cli.main(command) == 0
    assert results_without_timing(workdir) == before  # the same members, the same numbers
    assert json.loads(done.read_text())


def results_without_timing(workdir):
    """``results.csv``'s rows without the throughput (not measured when no chunk trains)."""
    import csv

    with open(workdir / "results.csv", newline="") as f:
        return [{k: v for k, v in row.items() if k != "member_images_per_s"} for row in csv.DictReader(f)]


def test_a_damaged_reproduction_row_is_finished_again_not_skipped(tmp_path):
    from effnet_jax.paper.layout import read_results, row_finished

    row = tmp_path / "row"
    row.mkdir()
    header = "rank,member,config_id,seed,diverged,test_accuracy\n"
    for text in ("", header, header + "1,0,0,0,False,0.5\n", header + "1,0,0,0,False,0.5\n2,1,0,1,Fal"):
        (row / "results.csv").write_text(text)
        assert not row_finished(str(row), seeds=2), text
    (row / "results.csv").write_text(header + "1,0,0,0,False,0.5\n2,1,0,1,False,0.25\n")
    assert [r["test_accuracy"] for r in read_results(str(row), seeds=2)] == ["0.5", "0.25"]


def test_files_are_replaced_whole_with_the_umasks_permissions(tmp_path, monkeypatch):
    path = tmp_path / "results.json"
    write_text(str(path), "old\n")
    mask = os.umask(0)
    os.umask(mask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~mask

    def refused(source, target):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(os, "replace", refused)
    with pytest.raises(OSError):
        write_text(str(path), "new\n")
    assert path.read_text() == "old\n" and os.listdir(tmp_path) == ["results.json"]  # no temporary left


# 7 -------------------------------------------------------------------- validation first
@pytest.mark.parametrize("override, message", [
    ("seed=-1", "seed must be an integer in [0, 2**32), got -1"),
    ("train.batch_size=True", "train.batch_size must be a positive integer, got True"),
    ("model.options.no_such_option=3", "model.options: model 'effnet' has no option(s) ['no_such_option']"),
])
def test_bad_values_are_refused_naming_the_key_before_anything_is_written(mock_data, tmp_path, config, capsys,
                                                                          override, message):
    workdir = tmp_path / "run"
    status, _, err = train(capsys, config, workdir, override)
    assert status == 2 and len(err) == 1 and message in err[0]
    assert not workdir.exists()


# 8 -------------------------------------------------------------------- edges
def test_a_key_given_twice_is_refused(mock_data, capsys, tmp_path, config):
    status, _, err = train(capsys, config, tmp_path / "run", "train.epochs=1", "train.epochs=3")
    assert status == 2 and len(err) == 1 and "config key 'train.epochs' is given twice" in err[0]


def test_max_steps_must_be_positive(capsys, tmp_path, config):
    with pytest.raises(SystemExit) as exit_:
        cli.main(["train", "--config", str(config), "--workdir", str(tmp_path / "run"), "--max-steps", "0"])
    assert exit_.value.code == 2 and "--max-steps: expected an integer >= 1, got 0" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_a_workdir_path_too_long_for_its_checkpoints_is_refused_before_training(mock_data, tmp_path, config, capsys):
    workdir = tmp_path
    while len(str(workdir)) < 3994:
        workdir = workdir / ("d" * 200)
    status, _, err = train(capsys, config, workdir)
    assert status == 2 and len(err) == 1 and "use a shorter path" in err[0]


def test_a_sweep_killed_between_an_epochs_record_and_its_checkpoint_logs_that_epoch_once(mock_data, tmp_path, config,
                                                                                           capsys):
    workdir = tmp_path / "sweep"
    command = ["sweep", "--config", str(config), "--workdir", str(workdir), "sweep.seeds=(0,1)"]
    assert cli.main([*command, "--max-steps", str(STEPS_PER_EPOCH + 2)]) == 0
    # As if killed after epoch 1's record but before any checkpoint: the chunk restarts from 0.
    shutil.rmtree(workdir / "chunks" / "chunk_000" / "checkpoints")
    assert cli.main(command) == 0
    assert epochs_logged(workdir) == [1, 2]


def test_corrupt_compilation_cache_entries_are_removed_so_they_are_written_again(tmp_path):
    from effnet_jax.compilation_cache import remove_incomplete_entries

    (tmp_path / "k1-cache").write_bytes(os.urandom(300))  # garbage where a program should be
    (tmp_path / "k1-atime").write_bytes(b"\0" * 8)
    assert remove_incomplete_entries(str(tmp_path)) == ["k1"]
    assert sorted(os.listdir(tmp_path)) == [".lockfile"]


def test_a_compilation_cache_locked_by_a_stuck_process_is_turned_off_at_once(tmp_path):
    """JAX waits up to 10 s for the cache's lock at every program: the cache is skipped instead."""
    holder = subprocess.Popen([sys.executable, "-c", "import filelock, sys, time\n"
                               f"lock = filelock.FileLock({str(tmp_path / '.lockfile')!r}); lock.acquire()\n"
                               "print('held', flush=True); time.sleep(60)"], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        code = ("import logging, time\nlogging.basicConfig()\n"
                "from effnet_jax.compilation_cache import enable_compilation_cache\n"
                f"start = time.time(); print(enable_compilation_cache({str(tmp_path)!r}), round(time.time() - start))")
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                              env={**os.environ, "JAX_PLATFORMS": "cpu"})
    finally:
        holder.kill()
    assert done.stdout.split()[0] == "None" and int(done.stdout.split()[1]) <= 3, done.stdout + done.stderr
    assert "compilation cache off" in done.stderr and "locked by another process" in done.stderr


def cli_process(*argv, **options):
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "EFFNET_JAX_COMPILATION_CACHE": "0"}
    return subprocess.Popen([sys.executable, "-m", "effnet_jax.cli", *argv], env=env, text=True, **options)


@pytest.fixture(scope="module")
def finished_fashion_run(tmp_path_factory):
    """A tiny finished run on the Debian Fashion-MNIST files (a subprocess needs real data)."""
    workdir = tmp_path_factory.mktemp("edges") / "run"
    process = cli_process("train", "--config", "fashion_mnist", "--workdir", str(workdir), "data.train_subset=64",
                          "data.validation_size=32", "data.test_subset=64", "model.options.widths=(4,8,8)",
                          "train.epochs=1", "train.batch_size=32", "log.progress=False",
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    assert process.wait(timeout=300) == 0, process.stderr.read()[-2000:]
    return workdir


@pytest.mark.slow
def test_eval_with_stdout_and_stderr_closed_runs(finished_fashion_run):
    done = subprocess.run(f"{sys.executable} -m effnet_jax.cli eval --workdir {finished_fashion_run} >&- 2>&-",
                          shell=True, env={**os.environ, "JAX_PLATFORMS": "cpu"}, timeout=300)
    assert done.returncode == 0


@pytest.mark.slow
def test_eval_into_a_full_stdout_is_one_line_about_the_output(finished_fashion_run):
    with open("/dev/full", "w") as full:
        process = cli_process("eval", "--workdir", str(finished_fashion_run), stdout=full, stderr=subprocess.PIPE)
        err = process.communicate(timeout=300)[1]
    lines = [line for line in err.splitlines() if line.startswith("effnet-jax eval")]
    assert process.returncode == 2 and "Traceback" not in err and "Exception ignored" not in err, err[-2000:]
    assert lines == ["effnet-jax eval: error: no space left on the device (writing the output)"]


@pytest.mark.slow
def test_ctrl_c_during_eval_is_one_line_and_exit_130(finished_fashion_run):
    process = cli_process("eval", "--workdir", str(finished_fashion_run), stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE)
    first = process.stderr.readline()  # the model's line: the restore and the compilation follow
    assert "implementation" in first, first
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=120)
    assert process.returncode == 128 + signal.SIGINT and "Traceback" not in err, err[-2000:]
    assert [line for line in err.splitlines() if line.startswith("effnet-jax eval")] == \
        ["effnet-jax eval: interrupted (Ctrl-C)"]
