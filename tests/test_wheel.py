"""The package as a user installs it: a wheel built from this checkout, installed (not editable)
into a fresh virtual environment outside the checkout, with the tested versions
(``constraints.txt``), runs the CLI with a named config and holds no tests or experiment outputs."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile

import pytest

from effnet_jax.data.idx import DEBIAN_FASHION_MNIST_DIR, idx_files_present

REPOSITORY = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))


def run(command, cwd, timeout=900):
    done = subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"{command}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done.stdout


@pytest.mark.slow
@pytest.mark.skipif(not idx_files_present(DEBIAN_FASHION_MNIST_DIR), reason="needs Debian's dataset-fashion-mnist")
def test_the_built_wheel_installs_alone_and_trains_a_named_config(tmp_path):
    dist = tmp_path / "dist"
    run([sys.executable, "-m", "build", "--sdist", "--wheel", "--outdir", str(dist), REPOSITORY], tmp_path)
    wheels = list(dist.glob("*.whl"))
    assert len(wheels) == 1 and list(dist.glob("*.tar.gz"))
    names = zipfile.ZipFile(wheels[0]).namelist()
    assert "effnet_jax/configs/fashion_mnist.py" in names
    assert not [n for n in names if n.split("/")[0] in ("tests", "experiments", "runs")], names

    venv = tmp_path / "venv"
    run([sys.executable, "-m", "venv", str(venv)], tmp_path)
    python, cli = str(venv / "bin" / "python"), str(venv / "bin" / "effnet-jax")
    run([python, "-m", "pip", "install", "--quiet", "-c", os.path.join(REPOSITORY, "constraints.txt"),
         str(wheels[0])], tmp_path)

    user = tmp_path / "user"  # nothing of the checkout in sight
    user.mkdir()
    location = run([python, "-c", "import effnet_jax; print(effnet_jax.__file__)"], user)
    assert str(venv) in location and REPOSITORY not in location
    version = run([python, "-c", "import importlib.metadata as m; print(m.version('effnet-jax'))"], user).strip()
    assert run([cli, "--version"], user).strip() == f"effnet-jax {version}"
    assert "EffNet" in run([cli, "summary", "effnet"], user)
    run([cli, "train", "--config", "fashion_mnist", "--workdir", "runs/fm", "data.train_subset=512",
         "data.validation_size=128", "data.test_subset=256", "train.epochs=1", "log.progress=False"], user)
    assert (user / "runs" / "fm" / "metrics.jsonl").is_file()
