"""Test configuration: one CPU device per test process (multi-device tests start their own),
and a compilation cache shared by the tests of one session (many compile the same programs)."""

import os
import sys
import tempfile

import jax
import pytest

sys.path.insert(0, os.path.dirname(__file__))

_CACHE = os.environ.setdefault("EFFNET_JAX_TEST_CACHE", os.path.join(tempfile.gettempdir(), "effnet-jax-test-xla-cache"))
jax.config.update("jax_compilation_cache_dir", _CACHE)
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
os.environ.setdefault("EFFNET_JAX_COMPILATION_CACHE", _CACHE)  # CLI subprocesses: the same cache, not ~/.cache


@pytest.fixture
def mock_data():
    """``tfds.testing.mock_data`` with 60 examples per split (no download, no TensorFlow)."""
    import tensorflow_datasets as tfds

    with tfds.testing.mock_data(num_examples=60):
        yield
