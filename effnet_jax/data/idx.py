"""Reader of the original MNIST-family IDX files (as Debian's dataset-fashion-mnist ships them).

Debian recompresses the files, so TFDS's download checksums reject them; their contents are
the original IDX arrays. ``load_idx_split`` returns exactly those arrays, in file order: the
same examples and labels the TFDS ``fashion_mnist`` builder reads from the same files.
"""

from __future__ import annotations

import gzip
import os
import zlib

import numpy as np

from effnet_jax.errors import DataError

DEBIAN_FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"
_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
_UBYTE = 0x08


def read_idx(path: str) -> np.ndarray:
    """Reads one (optionally gzipped) IDX file into a numpy array, checking its header."""
    opener = gzip.open if path.endswith(".gz") else open
    try:
        with opener(path, "rb") as f:
            data = f.read()
    except (EOFError, gzip.BadGzipFile, zlib.error) as error:
        raise DataError(f"{path} is truncated or not a gzip file ({error}): expected a gzipped IDX file") from None
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise DataError(f"{path} is not an IDX file (bad magic number)")
    if data[2] != _UBYTE:
        raise DataError(f"{path}: only unsigned-byte IDX files are supported, type code {data[2]:#x}")
    ndim = data[3]
    dims = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    offset = 4 + 4 * ndim
    expected = int(np.prod(dims))
    if len(data) - offset != expected:
        raise DataError(f"{path}: header says {dims} ({expected} bytes), file has {len(data) - offset}")
    return np.frombuffer(data, np.uint8, offset=offset).reshape(dims)


def idx_files_present(directory: str) -> bool:
    """Whether all four Fashion-MNIST IDX files are in ``directory``."""
    return all(os.path.exists(os.path.join(directory, f)) for pair in _FILES.values() for f in pair)


def load_idx_split(directory: str, split: str) -> tuple[np.ndarray, np.ndarray]:
    """Images ``[N, 28, 28, 1]`` uint8 and labels ``[N]`` int32 of ``split`` ('train'/'test')."""
    if split not in _FILES:
        raise DataError(f"IDX data has splits {sorted(_FILES)}, got {split!r}")
    images_file, labels_file = (os.path.join(directory, f) for f in _FILES[split])
    images = read_idx(images_file)
    labels = read_idx(labels_file)
    if images.shape[0] != labels.shape[0]:
        raise DataError(f"{images_file} has {images.shape[0]} images but {labels_file} {labels.shape[0]} labels")
    return images[..., None], labels.astype(np.int32)
