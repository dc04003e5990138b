"""The Colab notebook runs top to bottom (CPU smoke switch) and is committed without outputs."""

import os

import nbformat
import pytest

from effnet_jax.data.idx import DEBIAN_FASHION_MNIST_DIR, idx_files_present

NOTEBOOK = os.path.join(os.path.dirname(__file__), "..", "experiments", "colab_tpu.ipynb")


def test_notebook_is_committed_without_outputs():
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    code = [c for c in notebook.cells if c.cell_type == "code"]
    assert code and all(not c.outputs and c.execution_count is None for c in code)


@pytest.mark.slow
@pytest.mark.skipif(not idx_files_present(DEBIAN_FASHION_MNIST_DIR),
                    reason="needs Debian's dataset-fashion-mnist (make data installs it)")
def test_notebook_executes_top_to_bottom(monkeypatch):
    from nbclient import NotebookClient

    monkeypatch.setenv("EFFNET_JAX_NOTEBOOK_SMOKE", "1")
    monkeypatch.setenv("MPLBACKEND", "Agg")
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    NotebookClient(notebook, timeout=600, kernel_name="python3").execute()
    outputs = "".join(o.get("text", "") for c in notebook.cells for o in c.get("outputs", []))
    assert "test_accuracy" in outputs and "mean and std over seeds" in outputs
