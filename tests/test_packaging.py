"""Packaging by JAX's conventions: a runtime-only install, accelerator extras named as JAX names
them, test and benchmark extras apart, and a `make train` that installs no PyTorch."""

import os
import subprocess
import tomllib

REPOSITORY = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))


def project():
    with open(os.path.join(REPOSITORY, "pyproject.toml"), "rb") as f:
        return tomllib.load(f)["project"]


def test_runtime_dependencies_hold_no_pytorch_tensorflow_or_test_tools():
    names = " ".join(project()["dependencies"]).lower()
    for absent in ("torch", "tensorflow>", "tensorflow=", "pytest", "nbclient"):
        assert absent not in names
    assert "tensorflow-datasets" in names  # read without TensorFlow (data_source)


def test_accelerator_extras_pull_the_matching_jax_extra():
    extras = project()["optional-dependencies"]
    assert extras["tpu"] == ["jax[tpu]>=0.6"]
    assert extras["cuda"] == ["jax[cuda]>=0.6"] and extras["cuda12"] == ["jax[cuda12]>=0.6"]
    assert extras["cpu"] == ["jax[cpu]>=0.6"]
    assert any(d.startswith("torch") for d in extras["test"]) and any(d.startswith("torch") for d in extras["bench"])


def test_make_train_installs_the_library_alone_and_make_test_the_test_extra(tmp_path):
    def dry_run(target):
        done = subprocess.run(["make", "-n", target, f"VENV={tmp_path / 'venv'}"], cwd=REPOSITORY,
                              capture_output=True, text=True, check=True)
        return [line for line in done.stdout.splitlines() if "pip install" in line]

    train = dry_run("train")
    assert any(line.endswith("pip install --quiet -c constraints.txt -e .") for line in train)
    assert not any("[test]" in line or "torch" in line for line in train)
    assert any('-e ".[test]"' in line for line in dry_run("test"))
