"""A TFDS builder for GTSRB (German Traffic Sign Recognition Benchmark), which TFDS lacks.

It reads the three official archives from the manual directory (no download: the benchmark's
terms require fetching them by hand), decodes the PPM images and resizes them to 32x32 as the
paper did. Images are stored as raw uint8 tensors, so preparing and reading need no TensorFlow.

Archives (https://benchmark.ini.rub.de/gtsrb_dataset.html), in ``<data_dir>/downloads/manual``:

* ``GTSRB_Final_Training_Images.zip``: ``GTSRB/Final_Training/Images/<class>/GT-<class>.csv``
  and the PPMs it lists (39,209 images);
* ``GTSRB_Final_Test_Images.zip``: ``GTSRB/Final_Test/Images/*.ppm`` (12,630 images);
* ``GTSRB_Final_Test_GT.zip``: ``GT-final_test.csv`` with the test labels.
"""

from __future__ import annotations

import csv
import io
import os
import zipfile

import numpy as np
import tensorflow_datasets as tfds

from effnet_jax.errors import DataError, NotFound

IMAGE_SIZE = 32
NUM_CLASSES = 43
TRAIN_ZIP = "GTSRB_Final_Training_Images.zip"
TEST_ZIP = "GTSRB_Final_Test_Images.zip"
TEST_LABELS_ZIP = "GTSRB_Final_Test_GT.zip"


def _resized(data: bytes) -> np.ndarray:
    from PIL import Image

    with Image.open(io.BytesIO(data)) as image:
        image = image.convert("RGB").resize((IMAGE_SIZE, IMAGE_SIZE), Image.BILINEAR)
        return np.asarray(image, dtype=np.uint8)


def _read_csv(archive: zipfile.ZipFile, member: str) -> list[dict[str, str]]:
    with archive.open(member) as f:
        return list(csv.DictReader(io.TextIOWrapper(f, "utf-8"), delimiter=";"))


class Gtsrb(tfds.core.GeneratorBasedBuilder):
    """GTSRB resized to 32x32 RGB, 43 classes; splits ``train`` and ``test``."""

    VERSION = tfds.core.Version("1.0.0")
    MANUAL_DOWNLOAD_INSTRUCTIONS = (
        f"Download {TRAIN_ZIP}, {TEST_ZIP} and {TEST_LABELS_ZIP} from "
        "https://benchmark.ini.rub.de/gtsrb_dataset.html and place them in the manual directory."
    )

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            description="German Traffic Sign Recognition Benchmark, resized to 32x32.",
            features=tfds.features.FeaturesDict({
                "image": tfds.features.Tensor(shape=(IMAGE_SIZE, IMAGE_SIZE, 3), dtype=np.uint8),
                "label": tfds.features.ClassLabel(num_classes=NUM_CLASSES),
            }),
            supervised_keys=("image", "label"),
            homepage="https://benchmark.ini.rub.de/gtsrb_dataset.html",
        )

    def _split_generators(self, dl_manager):
        manual = os.fspath(dl_manager.manual_dir)
        paths = {name: os.path.join(manual, name) for name in (TRAIN_ZIP, TEST_ZIP, TEST_LABELS_ZIP)}
        missing = [name for name, path in paths.items() if not os.path.exists(path)]
        if missing:
            raise NotFound(
                f"GTSRB archives missing from {manual}: {', '.join(missing)}. "
                + self.MANUAL_DOWNLOAD_INSTRUCTIONS
            )
        return {
            "train": self._generate_train(paths[TRAIN_ZIP]),
            "test": self._generate_test(paths[TEST_ZIP], paths[TEST_LABELS_ZIP]),
        }

    def _generate_examples(self, **kwargs):  # Each split has its own generator below.
        raise NotImplementedError

    def _generate_train(self, train_zip: str):
        with zipfile.ZipFile(train_zip) as archive:
            for member in sorted(n for n in archive.namelist() if os.path.basename(n).startswith("GT-")):
                folder = os.path.dirname(member)
                for row in _read_csv(archive, member):
                    path = f"{folder}/{row['Filename']}"
                    yield path, {"image": _resized(archive.read(path)), "label": int(row["ClassId"])}

    def _generate_test(self, test_zip: str, labels_zip: str):
        with zipfile.ZipFile(labels_zip) as labels_archive:
            csv_name = next(n for n in labels_archive.namelist() if n.endswith(".csv"))
            labels = {row["Filename"]: int(row["ClassId"]) for row in _read_csv(labels_archive, csv_name)}
        with zipfile.ZipFile(test_zip) as archive:
            for path in sorted(n for n in archive.namelist() if n.endswith(".ppm")):
                name = os.path.basename(path)
                if name not in labels:
                    raise DataError(f"{test_zip}: {name} has no label in {labels_zip}")
                yield name, {"image": _resized(archive.read(path)), "label": labels[name]}
