"""Test configuration: one CPU device per test process (multi-device tests start their own),
and a compilation cache shared by the tests of one session (many compile the same programs)."""

import os
import sys
import tempfile

import pytest

sys.path.insert(0, os.path.dirname(__file__))

from effnet_jax.compilation_cache import enable_compilation_cache  # noqa: E402

_CACHE = os.environ.setdefault("EFFNET_JAX_TEST_CACHE", os.path.join(tempfile.gettempdir(), "effnet-jax-test-xla-cache"))
enable_compilation_cache(_CACHE)  # (also clears entries a killed test process left half-written)
os.environ.setdefault("EFFNET_JAX_COMPILATION_CACHE", _CACHE)  # CLI subprocesses: the same cache, not ~/.cache


@pytest.fixture
def mock_data():
    """``tfds.testing.mock_data`` with 60 examples per split (no download, no TensorFlow)."""
    import tensorflow_datasets as tfds

    with tfds.testing.mock_data(num_examples=60):
        yield


def pytest_collection_modifyitems(items):
    """Slow tests first (stable order otherwise): with ``pytest -n 2`` they start on both
    workers at once, and the short ones fill in after, instead of the long ones forming the
    suite's tail."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)
