"""Load a dataset split into numpy arrays: TFDS ``data_source`` (no TensorFlow at read time) or
Debian's offline Fashion-MNIST IDX files."""

from __future__ import annotations

import dataclasses

import numpy as np

from effnet_jax.data import idx
from effnet_jax.data.catalog import DatasetInfo

SOURCES = ("auto", "tfds", "idx")


@dataclasses.dataclass(frozen=True)
class ArraySplit:
    """Images ``[N, H, W, C]`` uint8 and labels ``[N]`` int32 of one split."""

    images: np.ndarray
    labels: np.ndarray

    def __post_init__(self):
        if self.images.shape[0] != self.labels.shape[0]:
            raise ValueError(f"{self.images.shape[0]} images but {self.labels.shape[0]} labels")

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def take(self, indices: np.ndarray) -> "ArraySplit":
        """The examples at ``indices``."""
        return ArraySplit(self.images[indices], self.labels[indices])


def resolve_source(info: DatasetInfo, source: str, idx_dir: str) -> str:
    """Which loader serves ``info``: 'idx' for an offline Fashion-MNIST under 'auto', else 'tfds'."""
    if source not in SOURCES:
        raise ValueError(f"data.source must be one of {SOURCES}, got {source!r}")
    if source == "idx" and info.name != "fashion_mnist":
        raise ValueError(f"data.source='idx' serves fashion_mnist only, not {info.name!r}")
    if source == "auto":
        offline = info.name == "fashion_mnist" and idx.idx_files_present(idx_dir)
        return "idx" if offline else "tfds"
    return source


def load_split(info: DatasetInfo, split: str, data_dir: str | None, source: str = "auto",
               idx_dir: str = idx.DEBIAN_FASHION_MNIST_DIR) -> ArraySplit:
    """Loads ``split`` ('train' or 'test') of a catalogued dataset into memory.

    Raises:
      FileNotFoundError: the data is neither present nor obtainable, with how to get it.
    """
    loader = resolve_source(info, source, idx_dir)
    if loader == "idx":
        if not idx.idx_files_present(idx_dir):
            raise FileNotFoundError(f"no Fashion-MNIST IDX files in {idx_dir}: {info.how_to_get}")
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
            raise FileNotFoundError(
                f"{info.name} is not prepared in {data_dir or '~/tensorflow_datasets'}, and preparing it "
                "with TFDS needs TensorFlow once (pip install tensorflow-cpu); reading it afterwards "
                f"does not. Or: {info.how_to_get}"
            ) from error
        raise
    except Exception as error:  # Download or manual-data failures: say how to get the data.
        raise FileNotFoundError(f"could not load {info.name} ({error}). To get it: {info.how_to_get}") from error
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
