"""The datasets' original files read with numpy (no TensorFlow): small archives the tests write,
downloads from a local server, and the fast one-line failure when the data cannot be had."""

import gzip
import hashlib
import http.server
import socket
import threading
import time

import numpy as np
import pytest

from effnet_jax.data import archives, dataset_info, load_split
from effnet_jax.data.sources import resolve_source

RNG = np.random.default_rng(0)


def images(n, shape):
    return RNG.integers(0, 256, (n, *shape), dtype=np.uint8)


def labels(n, classes=10):
    return RNG.integers(0, classes, n).astype(np.int32)


def write_idx(path, array):
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


@pytest.fixture
def cifar_dir(tmp_path):
    splits = {"train": (images(23, (32, 32, 3)), labels(23)), "test": (images(7, (32, 32, 3)), labels(7))}
    (tmp_path / "cifar10").mkdir()
    archives.write_cifar10_binary(str(tmp_path / "cifar10" / "cifar-10-binary.tar.gz"), splits)
    return tmp_path, splits


def test_cifar10_binary_archive_reads_into_nhwc_arrays(cifar_dir):
    root, splits = cifar_dir
    for split in ("train", "test"):
        got_images, got_labels = archives.load("cifar10", split, str(root))
        assert got_images.dtype == np.uint8 and got_images.shape == splits[split][0].shape
        np.testing.assert_array_equal(got_images, splits[split][0])
        np.testing.assert_array_equal(got_labels, splits[split][1])


def test_cifar10_record_layout_is_label_then_channel_planes(tmp_path):
    # One image whose red plane is 1, green 2, blue 3: NHWC pixels read (1, 2, 3).
    image = np.stack([np.full((32, 32), c, np.uint8) for c in (1, 2, 3)], axis=-1)[None]
    (tmp_path / "cifar10").mkdir()
    archives.write_cifar10_binary(str(tmp_path / "cifar10" / "cifar-10-binary.tar.gz"),
                                  {"train": (np.repeat(image, 5, 0), np.arange(5)), "test": (image, np.array([9]))})
    got, label = archives.load("cifar10", "test", str(tmp_path))
    assert got[0, 5, 7].tolist() == [1, 2, 3] and label.tolist() == [9]


def test_svhn_mat_files_read_with_digit_zero_as_label_zero(tmp_path):
    from scipy.io import savemat

    (tmp_path / "svhn_cropped").mkdir()
    expected = {}
    for split, n in (("train", 12), ("test", 4)):
        x = images(n, (32, 32, 3))
        y = np.arange(1, n + 1) % 10 + (np.arange(1, n + 1) % 10 == 0) * 10  # SVHN writes 0 as 10
        savemat(str(tmp_path / "svhn_cropped" / f"{split}_32x32.mat"), {"X": x.transpose(1, 2, 3, 0), "y": y[:, None]})
        expected[split] = (x, y % 10)
    for split, (x, y) in expected.items():
        data = load_split(dataset_info("svhn_cropped"), split, str(tmp_path), source="files")
        np.testing.assert_array_equal(data.images, x)
        np.testing.assert_array_equal(data.labels, y)
    assert 0 in expected["train"][1]


@pytest.mark.parametrize("name", ["mnist", "fashion_mnist"])
def test_idx_datasets_read_from_their_gz_files(tmp_path, name):
    directory = tmp_path / name
    directory.mkdir()
    x, y = images(6, (28, 28)), labels(6)
    for remote, array in zip(archives.FILES[name], (x, y, x[:2], y[:2])):
        write_idx(directory / remote.name, array)
    data = load_split(dataset_info(name), "train", str(tmp_path), source="files")
    np.testing.assert_array_equal(data.images, x[..., None])
    np.testing.assert_array_equal(data.labels, y)
    assert len(load_split(dataset_info(name), "test", str(tmp_path), source="files")) == 2


def test_auto_reads_the_original_files_unless_tfds_prepared_the_dataset(cifar_dir):
    root, _ = cifar_dir
    info = dataset_info("cifar10")
    assert resolve_source(info, "auto", "/nonexistent", str(root)) == "files"
    (root / "cifar10" / "3.0.2").mkdir()
    (root / "cifar10" / "3.0.2" / "dataset_info.json").write_text("{}")
    assert resolve_source(info, "auto", "/nonexistent", str(root)) == "tfds"
    assert resolve_source(dataset_info("gtsrb"), "auto", "/nonexistent", str(root)) == "tfds"
    with pytest.raises(ValueError, match="data.source='files' serves cifar10, fashion_mnist, mnist, svhn_cropped, not 'gtsrb'"):
        resolve_source(dataset_info("gtsrb"), "files", "/nonexistent", str(root))


def test_a_garbled_archive_is_one_clear_error(tmp_path):
    (tmp_path / "cifar10").mkdir()
    (tmp_path / "cifar10" / "cifar-10-binary.tar.gz").write_bytes(b"not a tar file" * 100)
    with pytest.raises(ValueError, match="cifar-10-binary.tar.gz is not a readable CIFAR-10 binary archive"):
        archives.load("cifar10", "train", str(tmp_path))


class _Files(http.server.BaseHTTPRequestHandler):
    content = b""

    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Length", str(len(self.content)))
        self.end_headers()
        self.wfile.write(self.content)

    def log_message(self, *args):
        pass


@pytest.fixture
def file_server():
    server = http.server.HTTPServer(("127.0.0.1", 0), _Files)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()


def serve_as_cifar(monkeypatch, url, content, md5):
    monkeypatch.setattr(_Files, "content", content)
    monkeypatch.setitem(archives.FILES, "cifar10", (archives.RemoteFile("cifar-10-binary.tar.gz", url, md5),))


def test_missing_files_are_downloaded_once_and_checked(tmp_path, file_server, monkeypatch):
    source = tmp_path / "source.tar.gz"
    archives.write_cifar10_binary(str(source), {"train": (images(5, (32, 32, 3)), labels(5)),
                                                "test": (images(2, (32, 32, 3)), labels(2))})
    content = source.read_bytes()
    serve_as_cifar(monkeypatch, file_server + "/cifar.tar.gz", content, hashlib.md5(content).hexdigest())
    x, _ = archives.load("cifar10", "train", str(tmp_path / "data"))
    assert x.shape == (5, 32, 32, 3)
    assert (tmp_path / "data" / "cifar10" / "cifar-10-binary.tar.gz").read_bytes() == content
    monkeypatch.setattr(_Files, "content", b"changed")  # present files are not fetched again
    assert archives.load("cifar10", "test", str(tmp_path / "data"))[0].shape == (2, 32, 32, 3)


def test_a_download_with_the_wrong_checksum_is_not_kept(tmp_path, file_server, monkeypatch):
    serve_as_cifar(monkeypatch, file_server + "/cifar.tar.gz", b"tampered", "0" * 32)
    with pytest.raises(FileNotFoundError, match="did not match its published MD5"):
        archives.load("cifar10", "train", str(tmp_path))
    assert list((tmp_path / "cifar10").iterdir()) == []


def test_unreachable_server_fails_within_ten_seconds_through_the_cli(tmp_path, monkeypatch, capsys):
    """A server that accepts the connection and never answers (a black hole), via ``effnet-jax
    train``: one line naming the dataset, the files and the directory; exit 2; under 10 s."""
    from effnet_jax.cli import main

    hole = socket.socket()
    hole.bind(("127.0.0.1", 0))
    hole.listen(1)
    url = f"http://127.0.0.1:{hole.getsockname()[1]}/cifar-10-binary.tar.gz"
    serve_as_cifar(monkeypatch, url, b"", "0" * 32)
    started = time.perf_counter()
    code = main(["train", "--config", "experiments/configs/fashion_mnist.py", "--workdir", str(tmp_path / "run"),
                 "data.name=cifar10", f"data.data_dir={tmp_path / 'data'}", "log.progress=False"])
    elapsed = time.perf_counter() - started
    hole.close()
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and elapsed < 10, elapsed
    assert len(err) == 1 and err[0].startswith("effnet-jax train: error: cifar10: cifar-10-binary.tar.gz is not in ")
    assert f"place cifar-10-binary.tar.gz ({url}) in {tmp_path / 'data' / 'cifar10'}" in err[0]


def test_refused_connection_names_the_files(tmp_path, monkeypatch):
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    monkeypatch.setitem(archives.FILES, "svhn_cropped", tuple(
        archives.RemoteFile(f.name, f"http://127.0.0.1:{port}/{f.name}", f.md5) for f in archives.FILES["svhn_cropped"]))
    with pytest.raises(FileNotFoundError, match=r"svhn_cropped: train_32x32.mat is not in .* place train_32x32.mat"):
        load_split(dataset_info("svhn_cropped"), "train", str(tmp_path), source="auto")
