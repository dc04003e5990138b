"""One writer per workdir: a second process gets one clear line and touches nothing; a crashed
holder leaves no stale lock."""

import os
import signal
import subprocess
import sys

import pytest

from effnet_jax.training.workdir import WorkdirBusy, workdir_lock

HOLD = ("import sys, time; from effnet_jax.training.workdir import workdir_lock; "
        "lock = workdir_lock(sys.argv[1]); lock.__enter__(); print('held', flush=True); time.sleep(600)")


def hold(workdir):
    process = subprocess.Popen([sys.executable, "-c", HOLD, str(workdir)], stdout=subprocess.PIPE, text=True)
    assert process.stdout.readline().strip() == "held"
    return process


def snapshot(directory):
    return {name: os.path.getmtime(os.path.join(directory, name)) for name in os.listdir(directory)}


def test_a_busy_workdir_is_refused_in_one_line_and_left_untouched(mock_data, tmp_path, capsys):
    from effnet_jax import cli
    from helpers import write_tiny_config_file

    workdir = tmp_path / "run"
    holder = hold(workdir)
    try:
        before = snapshot(workdir)
        config = write_tiny_config_file(tmp_path / "config.py", "c.train.epochs = 1", "c.train.batch_size = 8",
                                        "c.train.eval_batch_size = 12")
        assert cli.main(["train", "--config", config, "--workdir", str(workdir)]) == 2
        assert cli.main(["sweep", "--config", config, "--workdir", str(workdir)]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 2 and all(f"is in use by process {holder.pid}" in line for line in err)
        assert snapshot(workdir) == before
    finally:
        holder.kill()
        holder.wait()


def test_a_killed_holder_leaves_no_stale_lock(tmp_path):
    holder = hold(tmp_path / "run")
    with pytest.raises(WorkdirBusy):
        with workdir_lock(str(tmp_path / "run")):
            pass
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait()
    with workdir_lock(str(tmp_path / "run")):  # the kernel released the crashed process's lock
        assert os.path.exists(tmp_path / "run")
    with workdir_lock(str(tmp_path / "run")):  # and ours is released on exit
        pass
