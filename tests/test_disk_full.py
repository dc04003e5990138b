"""A full disk mid-run: one line naming where, exit 2, and the checkpoints already complete
kept intact (a 2 MB tmpfs where the machine lets us mount one; skipped elsewhere)."""

import os
import shutil
import subprocess
import sys

import pytest

from effnet_jax.data.idx import DEBIAN_FASHION_MNIST_DIR, idx_files_present

HERE = os.path.dirname(os.path.abspath(__file__))
OVERRIDES = ["data.train_subset=640", "data.validation_size=128", "data.test_subset=256",
             "model.options.widths=(8,16,16)", "train.epochs=3", "train.batch_size=64", "train.eval_batch_size=128",
             "log.progress=False", "log.plot=False"]


@pytest.fixture
def small_disk(tmp_path):
    mount = tmp_path / "small"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)], capture_output=True)
    if done.returncode != 0:
        pytest.skip("cannot mount a tmpfs here")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


@pytest.mark.slow
@pytest.mark.skipif(not idx_files_present(DEBIAN_FASHION_MNIST_DIR), reason="needs Debian's dataset-fashion-mnist")
def test_disk_full_mid_run_is_one_line_and_keeps_the_complete_checkpoints(small_disk):
    workdir = small_disk / "run"
    command = [sys.executable, "-m", "effnet_jax.cli", "train", "--config",
               os.path.join(HERE, "..", "experiments", "configs", "fashion_mnist.py"), "--workdir", str(workdir)]
    first = subprocess.run([*command, "--max-steps", "10", *OVERRIDES], capture_output=True, text=True, timeout=600)
    assert first.returncode == 0, first.stderr[-2000:]
    assert os.listdir(workdir / "checkpoints" / "latest") == ["10"]
    free = shutil.disk_usage(small_disk).free
    with open(small_disk / "filler", "wb") as f:  # leave less room than one more checkpoint needs
        f.write(b"\0" * max(0, free - 16 * 1024))
    second = subprocess.run([*command, *OVERRIDES], capture_output=True, text=True, timeout=600)
    errors = [line for line in second.stderr.splitlines() if not line.startswith("effnet-jax: ")]
    assert second.returncode == 2, second.stderr[-3000:]
    assert len(errors) == 1 and errors[0].startswith("effnet-jax train: error: no space left on the device"), errors
    assert "Traceback" not in second.stderr
    os.remove(small_disk / "filler")  # space again: the kept checkpoint resumes the run to its end
    third = subprocess.run([*command, *OVERRIDES], capture_output=True, text=True, timeout=600)
    assert third.returncode == 0, third.stderr[-2000:]
    assert '"steps": 30' in third.stdout


def test_disk_full_at_start_is_one_line_naming_the_path(small_disk, capsys):
    from effnet_jax import cli

    free = shutil.disk_usage(small_disk).free
    with open(small_disk / "filler", "wb") as f:
        f.write(b"\0" * free)
    workdir = small_disk / "run"
    code = cli.main(["train", "--config", os.path.join(HERE, "..", "experiments", "configs", "fashion_mnist.py"),
                     "--workdir", str(workdir), "log.progress=False"])
    errors = [line for line in capsys.readouterr().err.splitlines() if not line.startswith("effnet-jax: ")]
    assert code == 2 and len(errors) == 1, errors
    assert errors[0].startswith(f"effnet-jax train: error: no space left on the device (writing {workdir}")
    assert not (workdir / "config.json").exists()
