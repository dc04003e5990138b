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


@pytest.mark.slow
@pytest.mark.skipif(not idx_files_present(DEBIAN_FASHION_MNIST_DIR),
                    reason="Debian's dataset-fashion-mnist is not installed (make data installs it)")
def test_evaluation_after_35_steps_is_what_batch_statistics_give(tmp_path):
    """After 35 steps (momentum 0.99) the running averages still describe the initial network;
    evaluation with statistics estimated at the current parameters is right, the lagging one is not."""
    import numpy as np

    import effnet_jax
    from effnet_jax.data import dataset_info, load_split

    overrides = ["data.train_subset=4480", "data.validation_size=1000", "data.test_subset=2000",
                 "train.epochs=1", "log.progress=False", "log.plot=False", "log.tensorboard=False"]
    config = apply_overrides(load_config("experiments/configs/fashion_mnist.py"), overrides)
    precise = train_and_evaluate(config, str(tmp_path / "precise"))
    lagging = train_and_evaluate(apply_overrides(config, ["train.bn_statistics_batches=0"]), str(tmp_path / "lagging"))
    assert precise["steps"] == 35

    trained = effnet_jax.load(str(tmp_path / "precise"), "latest")
    test = load_split(dataset_info("fashion_mnist"), "test", None)
    images, labels = test.images[:2000], test.labels[:2000]  # any 2,000 test images: the accuracy level matters
    normalized = (images.astype(np.float32) / 255 - 0.2860) / 0.3530
    logits = [trained.model.apply(trained.variables, normalized[i:i + 500], train=True, mutable=["batch_stats"])[0]
              for i in range(0, 2000, 500)]
    batch_statistics_accuracy = float(np.mean(np.argmax(np.concatenate(logits), -1) == labels))
    assert batch_statistics_accuracy > 0.6, batch_statistics_accuracy
    assert abs(precise["test_accuracy"] - batch_statistics_accuracy) < 0.04, (precise, batch_statistics_accuracy)
    assert abs(precise["val_accuracy"] - precise["train_accuracy"]) < 0.1, precise
    # The network at the end, in evaluation mode, on training images: close to validation (after
    # one pass over these 4,480 images it fits them ~5 points better than held-out ones).
    assert 0.0 <= precise["train_sample_accuracy"] - precise["val_accuracy"] < 0.07, precise
    assert lagging["test_accuracy"] < batch_statistics_accuracy - 0.2, lagging  # what the estimate fixes
