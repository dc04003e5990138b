"""The Colab notebook runs top to bottom as a user runs it: its install cell really installs the
local checkout (into a fresh environment for the notebook's kernel), on 8 CPU devices, on a
CIFAR-10 archive the test writes, with the full run's batch, member count and meshes."""

import json
import os
import subprocess
import sys
import sysconfig

import nbformat
import numpy as np
import pytest

REPOSITORY = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
NOTEBOOK = os.path.join(REPOSITORY, "experiments", "colab_tpu.ipynb")


def test_notebook_is_committed_without_outputs():
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    code = [c for c in notebook.cells if c.cell_type == "code"]
    assert code and all(not c.outputs and c.execution_count is None for c in code)
    assert "parameters" in code[0].metadata.get("tags", [])


def test_notebook_uses_the_papers_recipe_and_five_seeds():
    source = "\n".join(c.source for c in nbformat.read(NOTEBOOK, as_version=4).cells if c.cell_type == "code")
    for setting in ("optimizer.learning_rate=1e-3", "optimizer.b1=0.75", "train.batch_size=128",
                    "data.augment=False", "data.name=cifar10", "sweep.seeds=(0, 1, 2, 3, 4)"):
        assert setting in source


def kernel_environment(root):
    """A new virtual environment whose Python sees this environment's packages (one ``.pth``
    line) except effnet-jax itself, registered as a Jupyter kernel: the notebook's install cell
    has to install effnet-jax into it."""
    venv = root / "kernel-venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    python = venv / "bin" / "python"
    purelib = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             check=True, capture_output=True, text=True).stdout.strip()
    with open(os.path.join(purelib, "parent_environment.pth"), "w") as f:
        f.write(sysconfig.get_paths()["purelib"] + "\n")
    kernels = root / "jupyter" / "kernels" / "effnet-jax-notebook"
    kernels.mkdir(parents=True)
    (kernels / "kernel.json").write_text(json.dumps({
        "argv": [str(python), "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "effnet-jax notebook test", "language": "python"}))
    return python, purelib


def write_cifar10(directory, train=1400, test=300):
    from effnet_jax.data.archives import write_cifar10_binary

    rng = np.random.default_rng(0)
    directory.mkdir(parents=True)
    write_cifar10_binary(str(directory / "cifar-10-binary.tar.gz"), {
        split: (rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8), rng.integers(0, 10, n))
        for split, n in (("train", train), ("test", test))})


@pytest.mark.slow
def test_notebook_installs_and_runs_top_to_bottom_on_eight_devices(tmp_path, monkeypatch):
    from nbclient import NotebookClient

    python, purelib = kernel_environment(tmp_path)
    check = subprocess.run([str(python), "-c", "import importlib.util as u; print(u.find_spec('effnet_jax'))"],
                           cwd=tmp_path, capture_output=True, text=True)
    assert check.stdout.strip() == "None"  # not installed until the notebook installs it
    write_cifar10(tmp_path / "data" / "cifar10")
    for key, value in {"EFFNET_JAX_SOURCE": REPOSITORY, "EFFNET_JAX_ACCELERATOR": "cpu",
                       "EFFNET_JAX_DATA_DIR": str(tmp_path / "data"), "EFFNET_JAX_WORKDIR": str(tmp_path / "runs"),
                       "EFFNET_JAX_NOTEBOOK_SMOKE": "1", "JAX_NUM_CPU_DEVICES": "8", "JAX_PLATFORMS": "cpu",
                       "MPLBACKEND": "Agg", "JUPYTER_PATH": str(tmp_path / "jupyter")}.items():
        monkeypatch.setenv(key, value)
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    client = NotebookClient(notebook, timeout=900, kernel_name="effnet-jax-notebook",
                            resources={"metadata": {"path": str(tmp_path)}})
    client.execute()
    outputs = "".join(o.get("text", "") for c in notebook.cells for o in c.get("outputs", []))
    assert f"from {os.path.join(purelib, 'effnet_jax')}" in outputs  # the installed copy, not the checkout
    assert "8 cpu device(s)" in outputs
    assert "TensorFlow installed: False" in outputs
    assert "'implementation': 'fast'" in outputs and "'devices': 8" in outputs
    assert "sweep mesh: {'population': 1, 'data': 8}, 5 member slots" in outputs
    assert "test accuracy over 5 seeds" in outputs and "mean and std over seeds" in outputs
    assert (tmp_path / "runs" / "sweep" / "results.csv").exists()
