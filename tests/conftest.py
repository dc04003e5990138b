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


# The unit tier (``make test-fast``, marker ``unit``): models, kernels against the reference,
# steps, config and errors, in under a minute. Whole modules by file name; elsewhere the tests
# whose names start with one of these (each runs in a second or two, without training).
UNIT_MODULES = ("test_config.py", "test_packaging.py", "test_imports.py", "test_errors.py", "test_summary.py",
                "test_convert.py", "test_jax_workarounds.py", "test_mesh.py", "test_bad_input.py", "test_benchmarks.py")
UNIT_TESTS = (
    "test_models.py::test_every_model_has_the_presets_parameter_shapes", "test_models.py::test_image_too_small",
    "test_models.py::test_integer_images", "test_models.py::test_wrong_", "test_models.py::test_block_variants",
    "test_models.py::test_seed_effnet_parameter_count", "test_models.py::test_fashion_mnist_input_head_width",
    "test_models.py::test_eval_mode_uses_running_averages", "test_models.py::test_gtsrb_preset",
    "test_fast_seam.py::test_the_stock_block_runs_as_one_fast_function_equal_to_the_reference[overrides0",
    "test_fast_seam.py::test_the_stock_block_runs_as_one_fast_function_equal_to_the_reference[overrides3",
    "test_fast_seam.py::test_an_edited_stock_block", "test_fast_seam.py::test_the_stock_block_declares",
    "test_fast_seam.py::test_comments_formatting", "test_fast_seam.py::test_what_computes_a_model_is_said",
    "test_fast_seam.py::test_plain_convolutions_equal_flax_on_the_fast_path[layer0",
    "test_fast_seam.py::test_plain_convolutions_equal_flax_on_the_fast_path[layer7",
    "test_fast_dense_conv.py::test_dense_conv_and_its_gradients_equal_lax",
    "test_fast_dense_conv.py::test_an_own_scan_of_an_own_module",
    "test_fast_fused.py::test_hand_written_gradients_equal_automatic_ones",
    "test_steps.py::test_cross_entropy", "test_steps.py::test_optimizers_match", "test_steps.py::test_schedules",
    "test_steps.py::test_step_rng_is_folded", "test_steps.py::test_zero_dropout",
    "test_steps.py::test_eval_metrics_average_exactly_over_uneven_batches[10]",
)


def pytest_collection_modifyitems(items):
    """Marks the unit tier; then slow tests first (stable order otherwise): with ``pytest -n 2``
    they start on both workers at once, and the short ones fill in after, instead of the long ones
    forming the suite's tail."""
    for item in items:
        name = item.nodeid.split("/")[-1]
        if name.split("::")[0] in UNIT_MODULES or name.startswith(UNIT_TESTS):
            item.add_marker(pytest.mark.unit)
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)
