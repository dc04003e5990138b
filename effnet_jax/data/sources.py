"""Load a dataset split into numpy arrays, from one of three sources:

* ``files``: the dataset's original files read with numpy (``archives``; no TensorFlow at all);
* ``tfds``: a TFDS ``data_source`` (no TensorFlow to read, but TFDS needs it once to prepare);
* ``idx``: Debian's offline Fashion-MNIST IDX files.

``auto`` picks, in order: Debian's Fashion-MNIST where installed, a dataset TFDS has already
prepared on disk, the original files (CIFAR-10, SVHN, MNIST, Fashion-MNIST), else TFDS (GTSRB).
"""

from __future__ import annotations

import dataclasses
import glob
import os

import numpy as np

from effnet_jax.data import archives, idx
from effnet_jax.data.catalog import DatasetInfo
from effnet_jax.errors import ConfigError, DataError, NotFound

SOURCES = ("auto", "files", "tfds", "idx")


@dataclasses.dataclass(frozen=True)
class ArraySplit:
    """Images ``[N, H, W, C]`` uint8 and labels ``[N]`` int32 of one split."""

    images: np.ndarray
    labels: np.ndarray

    def __post_init__(self):
        if self.images.shape[0] != self.labels.shape[0]:
            raise DataError(f"{self.images.shape[0]} images but {self.labels.shape[0]} labels")

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def take(self, indices: np.ndarray) -> "ArraySplit":
        """The examples at ``indices``."""
        return ArraySplit(self.images[indices], self.labels[indices])


def tfds_prepared(info: DatasetInfo, data_dir: str | None) -> bool:
    """Whether TFDS has prepared ``info`` under ``data_dir`` (its default directory if ``None``),
    told from the files alone (TFDS is not imported)."""
    root = data_dir or os.environ.get("TFDS_DATA_DIR") or os.path.join("~", "tensorflow_datasets")
    pattern = os.path.join(os.path.expanduser(root), info.tfds_name, "*", "dataset_info.json")
    return bool(glob.glob(pattern))


def resolve_source(info: DatasetInfo, source: str, idx_dir: str, data_dir: str | None = None) -> str:
    """Which loader serves ``info`` (see the module docstring for what ``auto`` picks)."""
    if source not in SOURCES:
        raise ConfigError(f"data.source must be one of {SOURCES}, got {source!r}")
    if source == "idx" and info.name != "fashion_mnist":
        raise ConfigError(f"data.source='idx' serves fashion_mnist only, not {info.name!r}")
    if source == "files" and not archives.supports(info.name):
        raise ConfigError(f"data.source='files' serves {', '.join(sorted(archives.FILES))}, not {info.name!r}; "
                          "use data.source='tfds'")
    if source == "auto":
        if info.name == "fashion_mnist" and idx.idx_files_present(idx_dir):
            return "idx"
        if tfds_prepared(info, data_dir) or not archives.supports(info.name):
            return "tfds"
        return "files"
    return source


def load_split(info: DatasetInfo, split: str, data_dir: str | None, source: str = "auto",
               idx_dir: str = idx.DEBIAN_FASHION_MNIST_DIR) -> ArraySplit:
    """Loads ``split`` ('train' or 'test') of a catalogued dataset into memory.

    Raises:
      FileNotFoundError: the data is neither present nor obtainable, with how to get it.
    """
    loader = resolve_source(info, source, idx_dir, data_dir)
    if loader == "files":
        images, labels = archives.load(info.name, split, data_dir)
        return ArraySplit(images, labels)
    if loader == "idx":
        if not idx.idx_files_present(idx_dir):
            raise NotFound(f"no Fashion-MNIST IDX files in {idx_dir}: {info.how_to_get}")
        images, labels = idx.load_idx_split(idx_dir, split)
        return ArraySplit(images, labels)
    return _load_tfds(info, split, data_dir)


def _load_tfds(info: DatasetInfo, split: str, data_dir: str | None) -> ArraySplit:
    import tensorflow_datasets as tfds

    if info.name == "gtsrb":
        from effnet_jax.data import gtsrb  # noqa: F401  (registers the builder)
    tfds_split = info.train_split if split == "train" else info.test_split
    try:
        source = tfds.data_source(info.tfds_name, split=tfds_split, data_dir=data_dir, download=True,
                                  builder_kwargs={"file_format": "array_record"})
    except ModuleNotFoundError as error:
        if error.name and error.name.startswith("tensorflow"):
            raise NotFound(
                f"{info.name} is not prepared in {data_dir or '~/tensorflow_datasets'}, and preparing it "
                "with TFDS needs TensorFlow once (pip install tensorflow-cpu); reading it afterwards "
                f"does not. Or: {info.how_to_get}"
            ) from error
        raise
    except Exception as error:  # Download or manual-data failures: say how to get the data.
        raise NotFound(f"could not load {info.name} ({error}). To get it: {info.how_to_get}") from error
    examples = _read_all(source)
    images = np.stack([np.asarray(e["image"], np.uint8) for e in examples])
    labels = np.asarray([e["label"] for e in examples], np.int32)
    if images.ndim == 3:
        images = images[..., None]
    return ArraySplit(images, labels)


def _read_all(source) -> list:
    """Every record of a TFDS data source (batched reads where the source supports them)."""
    keys = list(range(len(source)))
    try:
        return source.__getitems__(keys)
    except TypeError:  # e.g. tfds.testing.mock_data's source reads one record at a time
        return [source[key] for key in keys]
