"""Bad input is one line and exit status 2, before anything runs: broken config files, odd input
shapes, damaged dataset files; and, property-based, any mix of overrides and shapes."""

import hypothesis.strategies as st
import jax
import jax.numpy as jnp
import pytest
from hypothesis import HealthCheck, given, settings

from effnet_jax import cli
from effnet_jax.config import apply_overrides, default_config, load_config, lock, validate_config

CLI_ERRORS = (ValueError, TypeError, FileNotFoundError, FileExistsError, PermissionError)


def one_line_error(capsys, argv):
    assert cli.main(argv) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"effnet-jax {argv[0]}: error: "), captured.err
    return lines[0]


def test_a_config_with_a_syntax_error_names_file_and_line(tmp_path, capsys):
    path = tmp_path / "broken.py"
    path.write_text("from effnet_jax.config import default_config\n\ndef get_config(:\n    return default_config()\n")
    line = one_line_error(capsys, ["train", "--config", str(path), "--workdir", str(tmp_path / "run")])
    assert f"config file {path}, line 3: syntax error" in line
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("text, message", [
    ("def get_config():\n    return undefined_name\n", "get_config() failed: NameError"),
    ("import no_such_module_here\n", "failed to load: ModuleNotFoundError"),
])
def test_a_config_whose_code_fails_is_one_line(tmp_path, capsys, text, message):
    path = tmp_path / "config.py"
    path.write_text(text)
    assert message in one_line_error(capsys, ["sweep", "--config", str(path), "--workdir", str(tmp_path / "run")])


def test_a_garbled_json_config_names_file_and_line(tmp_path, capsys):
    path = tmp_path / "config.json"
    path.write_text('{"train": {"epochs": 3},\n "data": }')
    assert f"config file {path}, line 2: not valid JSON" in one_line_error(
        capsys, ["train", "--config", str(path), "--workdir", str(tmp_path / "run")])


@pytest.mark.parametrize("shape", [("32", "32", "0"), ("0", "32", "3"), ("-4", "32", "3")])
def test_summary_rejects_non_positive_input_shapes(capsys, shape):
    line = one_line_error(capsys, ["summary", "effnet", "--input-shape", *shape])
    assert "--input-shape takes three positive sizes H W C" in line


def test_summary_rejects_images_too_small_for_the_network(capsys):
    assert "needs images of at least 8x8, got 4x4" in one_line_error(
        capsys, ["summary", "effnet", "--input-shape", "4", "4", "3"])


@pytest.mark.parametrize("damage", ["truncated", "garbled"])
def test_damaged_fashion_mnist_files_name_the_file(tmp_path, capsys, damage):
    from test_archives import labels, images, write_idx

    for name, array in (("train-images-idx3-ubyte.gz", images(300, (28, 28))), ("train-labels-idx1-ubyte.gz", labels(300)),
                        ("t10k-images-idx3-ubyte.gz", images(50, (28, 28))), ("t10k-labels-idx1-ubyte.gz", labels(50))):
        write_idx(tmp_path / name, array)
    broken = tmp_path / "train-images-idx3-ubyte.gz"
    data = broken.read_bytes()
    broken.write_bytes(data[: len(data) // 2] if damage == "truncated" else b"\x00garbage" * 50)
    line = one_line_error(capsys, ["train", "--config", "experiments/configs/fashion_mnist.py", "--workdir",
                                   str(tmp_path / "run"), "data.source=idx", f"data.idx_dir={tmp_path}",
                                   "data.validation_size=0"])
    assert f"{broken} is truncated or not a gzip file" in line


KEYS = {
    "train.epochs": st.integers(-2, 3), "train.batch_size": st.integers(-4, 600),
    "train.steps_per_dispatch": st.integers(-1, 5), "train.label_smoothing": st.floats(-1, 2),
    "train.bn_statistics_batches": st.integers(-2, 4), "optimizer.learning_rate": st.floats(-1, 1),
    "optimizer.name": st.sampled_from(["adam", "sgd", "lamb", ""]), "optimizer.b1": st.floats(-1, 2),
    "optimizer.schedule": st.sampled_from(["cosine", "step", "linear"]), "data.name": st.sampled_from(
        ["cifar10", "mnist", "imagenet", "gtsrb"]), "data.validation_size": st.integers(-5, 10),
    "model.name": st.sampled_from(["effnet", "mobilenet", "shufflenet", "resnet"]),
    "model.options.widths": st.sampled_from(["(8, 16)", "(0, 4)", "()", "(4,)", "'wide'"]),
    "model.options.dropout_rate": st.floats(-1, 2), "model.options.implementation": st.sampled_from(
        ["auto", "xla", "cuda"]), "model.options.bn_momentum": st.floats(-1, 2),
    "parallel.population_shards": st.integers(-2, 9), "sweep.seeds": st.sampled_from(["(0, 1)", "()", "(1, 1)", "(-1,)"]),
    "no.such_key": st.integers(0, 1), "train.epochz": st.integers(0, 1),
}


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(st.sampled_from(sorted(KEYS)), st.integers(0, 10), max_size=5).flatmap(
    lambda chosen: st.fixed_dictionaries({k: KEYS[k] for k in chosen})))
def test_any_overrides_give_a_run_ready_config_or_one_clear_error(overrides):
    """Validation plus building the model (traced, not run) either succeeds or raises one of the
    errors the CLI turns into a single line, with a one-line message."""
    from effnet_jax.data import dataset_info
    from effnet_jax.sweeps import expand_members
    from effnet_jax.training.experiment import build_model

    items = [f"{key}={value}" for key, value in overrides.items()]
    try:
        config = apply_overrides(lock(default_config()), items)
        validate_config(config)
        expand_members(config)
        model = build_model(config)
        jax.eval_shape(model.init, jax.random.PRNGKey(0), jnp.zeros((1, *dataset_info(config.data.name).image_shape)))
    except CLI_ERRORS as error:
        assert str(error) and "\n" not in str(error), repr(error)


@settings(max_examples=40, deadline=None)
@given(st.tuples(st.integers(-3, 40), st.integers(-3, 40), st.integers(-3, 5)),
       st.sampled_from(["effnet", "mobilenet", "baseline", "shufflenet", "mobilenet_v2"]))
def test_any_input_shape_summarises_or_is_one_line(shape, model):
    import contextlib
    import io

    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = cli.main(["summary", model, "--input-shape", *map(str, shape)])
    assert code in (0, 2)
    assert (code == 0) == (err.getvalue() == "") and len(err.getvalue().strip().splitlines()) <= 1, err.getvalue()


def test_experiment_configs_still_load():
    assert load_config("experiments/configs/fashion_mnist.py").data.name == "fashion_mnist"


def test_version_comes_from_the_package_metadata(capsys):
    import importlib.metadata

    import effnet_jax

    with pytest.raises(SystemExit) as stop:
        cli.main(["--version"])
    assert stop.value.code == 0
    assert capsys.readouterr().out.strip() == f"effnet-jax {importlib.metadata.version('effnet-jax')}"
    assert effnet_jax.__version__ == importlib.metadata.version("effnet-jax")


def test_an_unknown_named_config_is_one_line_listing_the_known_ones(tmp_path, capsys):
    line = one_line_error(capsys, ["train", "--config", "fashion", "--workdir", str(tmp_path / "run")])
    assert "'fashion' is neither a config file nor a named config; named configs: " in line and "fashion_mnist" in line
    assert not (tmp_path / "run").exists()
