"""The datasets' original files, fetched and read with numpy: no TensorFlow, no TFDS preparation.

CIFAR-10 (the binary version), SVHN (cropped digits, the MATLAB files), MNIST and Fashion-MNIST
(IDX files) are read straight from the files their authors publish, into the arrays TFDS would
produce (``[N, H, W, C]`` uint8 images, ``int32`` labels; SVHN's label 10 is digit 0). This is
what runs on accelerator runtimes without TensorFlow (Colab TPU): TFDS can only *prepare* these
image datasets with TensorFlow installed.

Files live in ``<root>/<dataset>/`` (``root``: ``data.data_dir``, else ``$EFFNET_JAX_DATA_DIR``,
else ``~/effnet_jax_data``). A missing file is downloaded once from its official address and
checked against its published MD5; offline, the first attempt fails within seconds with one
message naming the dataset, the files and the directory to place them in.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import os
import shutil
import tarfile
import tempfile
import urllib.error
import urllib.request

import numpy as np

from effnet_jax.data import idx
from effnet_jax.errors import DataError, NotFound

DATA_DIR_VARIABLE = "EFFNET_JAX_DATA_DIR"
DEFAULT_ROOT = os.path.join("~", "effnet_jax_data")
DOWNLOAD_TIMEOUT_S = 5.0  # per connection attempt; no retries, so offline fails fast


@dataclasses.dataclass(frozen=True)
class RemoteFile:
    """One original file: its name, where its authors publish it, and its MD5."""

    name: str
    url: str
    md5: str


def _idx_files(base: str, md5s: tuple[str, str, str, str]) -> tuple[RemoteFile, ...]:
    names = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
             "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")
    return tuple(RemoteFile(n, base + n, m) for n, m in zip(names, md5s))


FILES: dict[str, tuple[RemoteFile, ...]] = {
    "cifar10": (RemoteFile("cifar-10-binary.tar.gz", "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz",
                           "c32a1d4ab5d03f1284b67883e8d87530"),),
    "svhn_cropped": (
        RemoteFile("train_32x32.mat", "http://ufldl.stanford.edu/housenumbers/train_32x32.mat",
                   "e26dedcc434d2e4c54c9b2d4a06d8373"),
        RemoteFile("test_32x32.mat", "http://ufldl.stanford.edu/housenumbers/test_32x32.mat",
                   "eb5a983be6a315427106f1b164d9cef3"),
    ),
    "mnist": _idx_files("https://storage.googleapis.com/cvdf-datasets/mnist/", (
        "f68b3c2dcbeaaa9fbdd348bbdeb94873", "d53e105ee54ea40749a09fcbcd1e9432",
        "9fb629c4189551a2d022fa330f9573f3", "ec29112dd5afa0611ce80d1b7f02629c")),
    "fashion_mnist": _idx_files("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/", (
        "8d4fb7e6c68d591d4c3dfef9ec88bf0d", "25c81989df183df01b3e8a0aad5dffbe",
        "bef4ecab320f06d8554ea6380940ec79", "bb300cfdad3c16e7a12a480ee83cd310")),
}
CIFAR10_BATCHES = {"train": [f"data_batch_{i}.bin" for i in range(1, 6)], "test": ["test_batch.bin"]}
CIFAR10_RECORD = 1 + 32 * 32 * 3  # label byte, then the image as 3 planes of 32x32


def supports(name: str) -> bool:
    """Whether ``name`` can be read from its original files."""
    return name in FILES


def dataset_dir(name: str, root: str | None = None) -> str:
    """Where ``name``'s original files are kept: ``<root>/<name>``."""
    root = root or os.environ.get(DATA_DIR_VARIABLE) or DEFAULT_ROOT
    return os.path.join(os.path.expanduser(root), name)


def _md5(path: str) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _download(remote: RemoteFile, path: str, timeout: float) -> None:
    """``remote`` to ``path`` (atomically; a partial download never takes the file's name)."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with urllib.request.urlopen(remote.url, timeout=timeout) as response, \
            tempfile.NamedTemporaryFile(dir=os.path.dirname(path), delete=False, suffix=".part") as part:
        shutil.copyfileobj(response, part)
    if _md5(part.name) != remote.md5:
        os.remove(part.name)
        raise DataError(f"{remote.url} did not match its published MD5 {remote.md5}")
    os.replace(part.name, path)


def fetch(name: str, root: str | None = None, timeout: float = DOWNLOAD_TIMEOUT_S) -> str:
    """The directory holding every original file of ``name``, downloading the missing ones.

    Raises:
      FileNotFoundError: a file is missing and cannot be downloaded (offline, unreachable, a
        bad checksum), naming the dataset, the files and where to place them.
    """
    directory = dataset_dir(name, root)
    for remote in FILES[name]:
        path = os.path.join(directory, remote.name)
        if os.path.exists(path):
            continue
        try:
            _download(remote, path, timeout)
        except (OSError, ValueError, urllib.error.URLError) as error:
            reason = getattr(error, "reason", None) or error
            files = ", ".join(f"{f.name} ({f.url})" for f in FILES[name])
            raise NotFound(
                f"{name}: {remote.name} is not in {directory} and could not be downloaded ({reason}); "
                f"place {files} in {directory} (or set data.data_dir / ${DATA_DIR_VARIABLE} to where they are)"
            ) from None
    return directory


def _read_cifar10(directory: str, split: str) -> tuple[np.ndarray, np.ndarray]:
    path = os.path.join(directory, FILES["cifar10"][0].name)
    records = []
    try:
        with tarfile.open(path, "r:gz") as archive:
            members = {os.path.basename(m.name): m for m in archive.getmembers() if m.isfile()}
            for batch in CIFAR10_BATCHES[split]:
                if batch not in members:
                    raise DataError(f"{path} holds no {batch}")
                data = archive.extractfile(members[batch]).read()
                if len(data) % CIFAR10_RECORD:
                    raise DataError(f"{path}: {batch} is {len(data)} bytes, not a multiple of {CIFAR10_RECORD}")
                records.append(np.frombuffer(data, np.uint8).reshape(-1, CIFAR10_RECORD))
    except (tarfile.TarError, EOFError, OSError) as error:
        raise DataError(f"{path} is not a readable CIFAR-10 binary archive ({error})") from None
    rows = np.concatenate(records)
    images = rows[:, 1:].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    return np.ascontiguousarray(images), rows[:, 0].astype(np.int32)


def _read_svhn(directory: str, split: str) -> tuple[np.ndarray, np.ndarray]:
    from scipy.io import loadmat

    path = os.path.join(directory, f"{split}_32x32.mat")
    try:
        data = loadmat(path)
        images, labels = data["X"], data["y"]
    except (ValueError, KeyError, OSError, NotImplementedError) as error:
        raise DataError(f"{path} is not a readable SVHN .mat file with X and y ({error})") from None
    if images.ndim != 4 or images.shape[:3] != (32, 32, 3) or images.shape[3] != labels.size:
        raise DataError(f"{path}: expected X of shape (32, 32, 3, N) and N labels, got {images.shape} "
                        f"and {labels.size}")
    images = np.ascontiguousarray(images.transpose(3, 0, 1, 2), np.uint8)
    return images, (labels.reshape(-1) % 10).astype(np.int32)  # SVHN writes digit 0 as 10


def _read_idx(directory: str, split: str) -> tuple[np.ndarray, np.ndarray]:
    return idx.load_idx_split(directory, split)


READERS = {"cifar10": _read_cifar10, "svhn_cropped": _read_svhn, "mnist": _read_idx, "fashion_mnist": _read_idx}


def load(name: str, split: str, root: str | None = None, timeout: float = DOWNLOAD_TIMEOUT_S
         ) -> tuple[np.ndarray, np.ndarray]:
    """Images ``[N, H, W, C]`` uint8 and labels ``[N]`` int32 of ``split`` ('train'/'test').

    Raises:
      FileNotFoundError: files missing and not downloadable (see ``fetch``).
      ValueError: a file that is not what it should be (which file, what was expected).
    """
    if split not in ("train", "test"):
        raise DataError(f"{name} has splits 'train' and 'test', got {split!r}")
    return READERS[name](fetch(name, root, timeout), split)


def write_cifar10_binary(path: str, splits: dict[str, tuple[np.ndarray, np.ndarray]]) -> None:
    """A CIFAR-10 binary archive of the given ``{'train': (images, labels), 'test': ...}``
    (train images are dealt over the five data batches), for tests and offline demos."""
    def records(images, labels):
        planes = np.asarray(images, np.uint8).transpose(0, 3, 1, 2).reshape(len(labels), -1)
        return np.concatenate([np.asarray(labels, np.uint8)[:, None], planes], axis=1).tobytes()

    train_images, train_labels = splits["train"]
    parts = np.array_split(np.arange(len(train_labels)), 5)
    contents = {f"data_batch_{i + 1}.bin": records(train_images[p], train_labels[p]) for i, p in enumerate(parts)}
    contents["test_batch.bin"] = records(*splits["test"])
    with tarfile.open(path, "w:gz") as archive:
        for batch, data in contents.items():
            info = tarfile.TarInfo(f"cifar-10-batches-bin/{batch}")
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
