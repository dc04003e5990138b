"""The datasets effnet-jax knows: TFDS names, shapes, classes and normalisation constants."""

from __future__ import annotations

import dataclasses

from effnet_jax.errors import ConfigError


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
    """What the pipeline needs to know about a dataset.

    Attributes:
      name: our name (also the model preset key).
      tfds_name: the TFDS builder name.
      image_shape: ``(H, W, C)`` of the stored images.
      num_classes: number of labels.
      mean, std: per-channel statistics of the training images in [0, 1], for normalisation.
      train_split, test_split: TFDS split names.
      how_to_get: what to do when the data cannot be found or downloaded.
    """

    name: str
    tfds_name: str
    image_shape: tuple[int, int, int]
    num_classes: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    train_split: str = "train"
    test_split: str = "test"
    how_to_get: str = "run with internet access once so that TFDS can download it"


DATASETS: dict[str, DatasetInfo] = {
    info.name: info
    for info in (
        DatasetInfo("cifar10", "cifar10", (32, 32, 3), 10,
                    (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
        DatasetInfo("svhn_cropped", "svhn_cropped", (32, 32, 3), 10,
                    (0.4377, 0.4438, 0.4728), (0.1980, 0.2010, 0.1970)),
        DatasetInfo("mnist", "mnist", (28, 28, 1), 10, (0.1307,), (0.3081,)),
        DatasetInfo("fashion_mnist", "fashion_mnist", (28, 28, 1), 10, (0.2860,), (0.3530,),
                    how_to_get="install Debian's offline copy (apt-get install dataset-fashion-mnist) "
                               "or run with internet access so that TFDS can download it"),
        DatasetInfo("gtsrb", "gtsrb", (32, 32, 3), 43,
                    (0.3403, 0.3121, 0.3214), (0.2724, 0.2608, 0.2669),
                    how_to_get="download GTSRB_Final_Training_Images.zip, GTSRB_Final_Test_Images.zip "
                               "and GTSRB_Final_Test_GT.zip from https://benchmark.ini.rub.de/gtsrb_dataset.html "
                               "into the manual directory (default <data_dir>/downloads/manual)"),
    )
}


def dataset_info(name: str) -> DatasetInfo:
    """The catalog entry for ``name``; raises listing the valid names otherwise."""
    if name not in DATASETS:
        raise ConfigError(f"unknown dataset {name!r}; valid datasets: {', '.join(sorted(DATASETS))}")
    return DATASETS[name]
