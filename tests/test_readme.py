"""The README's Python snippets run as a reader runs them: in order, in one session, from the
repository root; where they train, on mock arrays of Fashion-MNIST's shape (no real epochs), and
with 300 validation images instead of the config's 5,000 (the sweep evaluates them for each of
its 8 members every epoch: most of the test's time, for nothing the snippets show)."""

import os
import re

import numpy as np
import pytest

REPOSITORY = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
with open(os.path.join(REPOSITORY, "README.md")) as _f:
    SNIPPETS = re.findall(r"```python\n(.*?)```", _f.read(), re.S)


VALIDATION = 300


def mock_fashion_mnist(split):
    """Random images and labels of Fashion-MNIST's shape: ``VALIDATION`` images and two training
    batches of 128 (300 images)."""
    n = VALIDATION + 300 if split == "train" else 600
    rng = np.random.default_rng(0 if split == "train" else 1)
    return rng.integers(0, 256, (n, 28, 28, 1), dtype=np.uint8), rng.integers(0, 10, n).astype(np.int32)


@pytest.mark.slow
def test_readme_python_snippets_run_in_order(tmp_path, monkeypatch):
    import effnet_jax
    from effnet_jax.config import apply_overrides
    from effnet_jax.data import idx
    from effnet_jax.models import registry

    assert len(SNIPPETS) >= 4
    monkeypatch.chdir(tmp_path)
    os.symlink(os.path.join(REPOSITORY, "experiments"), tmp_path / "experiments")
    monkeypatch.setattr(idx, "idx_files_present", lambda directory: True)
    monkeypatch.setattr(idx, "load_idx_split", lambda directory, split: mock_fashion_mnist(split))
    monkeypatch.setattr(registry, "MODELS", dict(registry.MODELS))
    load = effnet_jax.configs.load
    monkeypatch.setattr(effnet_jax.configs, "load",
                        lambda name: apply_overrides(load(name), [f"data.validation_size={VALIDATION}"]))
    session: dict = {}
    for number, snippet in enumerate(SNIPPETS):
        exec(compile(snippet, f"README.md python snippet {number}", "exec"), session)
    assert session["logits"].shape == (4, 10)
    assert session["results"]["steps"] == 2 * (300 // 128)
    assert session["trained"].checkpoint == "best"
    assert "my_net" in registry.MODELS
    assert len(session["rows"]) == 8 and {r["seed"] for r in session["rows"]} == {0, 1}
