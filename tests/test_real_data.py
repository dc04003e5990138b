"""A short real training run on Debian's offline Fashion-MNIST (marked slow; runs in CI)."""

import pytest

from effnet_jax.config import apply_overrides, load_config
from effnet_jax.data.idx import DEBIAN_FASHION_MNIST_DIR, idx_files_present
from effnet_jax.training import train_and_evaluate


@pytest.mark.slow
@pytest.mark.skipif(not idx_files_present(DEBIAN_FASHION_MNIST_DIR),
                    reason="Debian's dataset-fashion-mnist is not installed (make data installs it)")
def test_effnet_learns_real_fashion_mnist(tmp_path):
    config = apply_overrides(load_config("experiments/configs/fashion_mnist.py"), [
        "data.train_subset=6000", "data.validation_size=1000", "data.test_subset=2000",
        "train.epochs=2", "model.options.bn_momentum=0.9", "log.progress=False",
    ])
    results = train_and_evaluate(config, str(tmp_path / "run"))
    # Chance is 10%; a quick subset run must be far above it on held-out test images.
    assert results["test_accuracy"] > 0.75, results
    assert results["val_accuracy"] > 0.75, results
