"""Data: offline Fashion-MNIST, TFDS sources (mock), GTSRB builder, batching, preprocessing."""

import gzip
import os
import zipfile

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import tensorflow_datasets as tfds

from effnet_jax.data import ArraySplit, carve_validation, check_labels, dataset_info, eval_batches, load_split, train_chunks
from effnet_jax.data.idx import DEBIAN_FASHION_MNIST_DIR, idx_files_present, read_idx
from effnet_jax.data.pipeline import steps_per_epoch
from effnet_jax.data.preprocess import make_preprocess, normalize, random_crop, random_flip

needs_debian_data = pytest.mark.skipif(
    not idx_files_present(DEBIAN_FASHION_MNIST_DIR),
    reason="Debian's dataset-fashion-mnist is not installed (make data installs it)")


def raw_idx(path, header):
    with gzip.open(path, "rb") as f:
        return np.frombuffer(f.read()[header:], np.uint8)


@needs_debian_data
@pytest.mark.parametrize("split, images_file, labels_file, count", [
    ("train", "train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", 60_000),
    ("test", "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz", 10_000),
])
def test_offline_fashion_mnist_equals_the_idx_contents(split, images_file, labels_file, count):
    data = load_split(dataset_info("fashion_mnist"), split, None, source="auto")
    chex.assert_shape(data.images, (count, 28, 28, 1))
    assert data.images.dtype == np.uint8 and data.labels.dtype == np.int32
    np.testing.assert_array_equal(data.images.reshape(-1), raw_idx(os.path.join(DEBIAN_FASHION_MNIST_DIR, images_file), 16))
    np.testing.assert_array_equal(data.labels, raw_idx(os.path.join(DEBIAN_FASHION_MNIST_DIR, labels_file), 8))
    # Fashion-MNIST is balanced: 6,000 (train) / 1,000 (test) images of each of the 10 classes.
    np.testing.assert_array_equal(np.bincount(data.labels), np.full(10, count // 10))


def test_idx_reader_rejects_a_corrupt_file(tmp_path):
    good = tmp_path / "ok-idx1-ubyte"
    good.write_bytes(bytes([0, 0, 8, 1, 0, 0, 0, 3, 7, 8, 9]))
    np.testing.assert_array_equal(read_idx(str(good)), [7, 8, 9])
    short = tmp_path / "short-idx1-ubyte"
    short.write_bytes(bytes([0, 0, 8, 1, 0, 0, 0, 4, 7, 8, 9]))
    with pytest.raises(ValueError, match=r"header says \(4,\) \(4 bytes\), file has 3"):
        read_idx(str(short))
    with pytest.raises(ValueError, match="not an IDX file"):
        (tmp_path / "junk").write_bytes(b"\x1f\x8bjunk")
        read_idx(str(tmp_path / "junk"))


def test_missing_offline_data_says_how_to_get_it(tmp_path):
    with pytest.raises(FileNotFoundError, match="apt-get install dataset-fashion-mnist"):
        load_split(dataset_info("fashion_mnist"), "train", None, source="idx", idx_dir=str(tmp_path))


def test_unknown_dataset_lists_the_valid_ones():
    with pytest.raises(ValueError, match="unknown dataset 'imagenet'; valid datasets: cifar10, fashion_mnist, gtsrb"):
        dataset_info("imagenet")


@pytest.mark.parametrize("name, shape", [("cifar10", (32, 32, 3)), ("svhn_cropped", (32, 32, 3)), ("mnist", (28, 28, 1))])
def test_tfds_datasets_load_without_tensorflow(name, shape):
    with tfds.testing.mock_data(num_examples=12):
        data = load_split(dataset_info(name), "test", None, source="tfds")
    chex.assert_shape(data.images, (12, *shape))
    assert data.images.dtype == np.uint8 and data.labels.dtype == np.int32
    assert data.labels.min() >= 0 and data.labels.max() < 10


def _ppm(rng, height, width):
    pixels = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    return f"P6 {width} {height} 255\n".encode() + pixels.tobytes()


def make_gtsrb_archives(directory, rng):
    """Tiny archives laid out like the official GTSRB ones (2 classes, 3 + 2 training images)."""
    header = "Filename;Width;Height;Roi.X1;Roi.Y1;Roi.X2;Roi.Y2;ClassId\n"
    with zipfile.ZipFile(directory / "GTSRB_Final_Training_Images.zip", "w") as z:
        for class_id, count in ((0, 3), (42, 2)):
            folder = f"GTSRB/Final_Training/Images/{class_id:05d}"
            rows = []
            for i in range(count):
                name = f"00000_{i:05d}.ppm"
                z.writestr(f"{folder}/{name}", _ppm(rng, 30 + i, 40 - i))
                rows.append(f"{name};1;1;0;0;1;1;{class_id}\n")
            z.writestr(f"{folder}/GT-{class_id:05d}.csv", header + "".join(rows))
    with zipfile.ZipFile(directory / "GTSRB_Final_Test_Images.zip", "w") as z:
        for i in range(4):
            z.writestr(f"GTSRB/Final_Test/Images/{i:05d}.ppm", _ppm(rng, 50, 45))
    with zipfile.ZipFile(directory / "GTSRB_Final_Test_GT.zip", "w") as z:
        z.writestr("GT-final_test.csv", header + "".join(f"{i:05d}.ppm;1;1;0;0;1;1;{7 * i}\n" for i in range(4)))


def test_gtsrb_builder_reads_the_official_archives(tmp_path):
    manual = tmp_path / "downloads" / "manual"
    manual.mkdir(parents=True)
    make_gtsrb_archives(manual, np.random.default_rng(0))
    info = dataset_info("gtsrb")
    train = load_split(info, "train", str(tmp_path))
    test = load_split(info, "test", str(tmp_path))
    chex.assert_shape(train.images, (5, 32, 32, 3))
    assert sorted(train.labels.tolist()) == [0, 0, 0, 42, 42]
    assert sorted(test.labels.tolist()) == [0, 7, 14, 21]
    assert info.num_classes == 43


def test_gtsrb_without_archives_explains_the_manual_download(tmp_path):
    with pytest.raises(FileNotFoundError, match="GTSRB_Final_Training_Images.zip"):
        load_split(dataset_info("gtsrb"), "train", str(tmp_path))


def split_of(n, classes=10):
    images = np.zeros((n, 2, 2, 1), np.uint8)
    images[:, 0, 0, 0] = np.arange(n)  # each image's id
    return ArraySplit(images, (np.arange(n) % classes).astype(np.int32))


def test_validation_is_carved_disjointly_and_reproducibly():
    data = split_of(100)
    train, val = carve_validation(data, 20, seed=3)
    assert len(train) == 80 and len(val) == 20
    ids = lambda s: set(s.images[:, 0, 0, 0].tolist())
    assert not ids(train) & ids(val) and ids(train) | ids(val) == ids(data)
    again, _ = carve_validation(data, 20, seed=3)
    np.testing.assert_array_equal(train.images, again.images)
    with pytest.raises(ValueError, match="validation_size=100 leaves no training data"):
        carve_validation(data, 100, seed=0)


def test_eval_batches_cover_every_example_once_with_padding_masked():
    data = split_of(10)
    batches = eval_batches(data, 4)
    chex.assert_shape(batches["image"], (3, 4, 2, 2, 1))
    assert batches["mask"].sum() == 10
    np.testing.assert_array_equal(batches["label"].reshape(-1)[:10], data.labels)
    np.testing.assert_array_equal(batches["mask"].reshape(-1)[10:], [0, 0])


def test_train_chunks_resume_at_any_chunk_boundary_with_the_same_batches():
    data = split_of(50)
    full = list(train_chunks(data, 4, seed=1, epoch=2, start_step=0, steps_per_dispatch=3))
    assert [c["label"].shape for c in full] == [(3, 4)] * 4  # 12 full batches, 2 examples left out
    resumed = list(train_chunks(data, 4, seed=1, epoch=2, start_step=6, steps_per_dispatch=3))
    for a, b in zip(full[2:], resumed):
        np.testing.assert_array_equal(a["image"], b["image"])
    other_epoch = next(train_chunks(data, 4, seed=1, epoch=3, start_step=0, steps_per_dispatch=3))
    assert not np.array_equal(full[0]["label"], other_epoch["label"])
    with pytest.raises(ValueError, match="not a chunk boundary"):
        next(train_chunks(data, 4, seed=1, epoch=0, start_step=4, steps_per_dispatch=3))
    with pytest.raises(ValueError, match="batch_size=64 exceeds the 50 training examples"):
        steps_per_epoch(50, 64)


def test_labels_out_of_range_are_reported():
    with pytest.raises(ValueError, match=r"labels must be in \[0, 5\) .* found labels from 0 to 9"):
        check_labels(split_of(20), 5, "train")


def test_normalisation_and_augmentation():
    info = dataset_info("cifar10")
    images = jnp.full((4, 8, 8, 3), 255, jnp.uint8)
    expected = (1.0 - np.asarray(info.mean)) / np.asarray(info.std)
    np.testing.assert_allclose(normalize(images, info.mean, info.std)[0, 0, 0], expected, rtol=1e-6)
    x = jnp.arange(4 * 8 * 8 * 1, dtype=jnp.float32).reshape(4, 8, 8, 1)
    cropped = random_crop(jax.random.key(0), x, 2)
    chex.assert_shape(cropped, x.shape)
    assert not np.array_equal(cropped, x)
    flipped = random_flip(jax.random.key(1), x)
    for original, out in zip(x, flipped):
        assert np.array_equal(out, original) or np.array_equal(out, original[:, ::-1])
    preprocess = make_preprocess(info, augment=True)
    raw = jax.random.randint(jax.random.key(2), (4, 8, 8, 3), 0, 256).astype(jnp.uint8)
    np.testing.assert_array_equal(preprocess(raw, jax.random.key(3), False), normalize(raw, info.mean, info.std))
    assert not np.array_equal(preprocess(raw, jax.random.key(3), True), normalize(raw, info.mean, info.std))
