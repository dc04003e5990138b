"""Configs: defaults, experiment files, overrides and their errors, the workdir comparison."""

import glob
import os

import pytest

from effnet_jax import configs
from effnet_jax.config import (
    apply_overrides,
    config_from_dict,
    config_to_dict,
    default_config,
    load_config,
    lock,
    semantic_differences,
    validate_config,
)
from effnet_jax.configs import config_module, named_configs
from effnet_jax.sweeps import expand_members

CONFIGS = sorted(glob.glob(os.path.join(os.path.dirname(__file__), "..", "experiments", "configs", "*.py")))


@pytest.mark.parametrize("name", named_configs())
def test_every_named_config_loads_validates_and_documents_its_command(name):
    config = configs.load(name)
    validate_config(config)
    expand_members(config)
    assert f"--config {name} " in config_module(name).__doc__


def test_the_named_configs_hold_the_quickstart_the_sweep_and_each_papers_recipe():
    assert {"fashion_mnist", "sweep_fashion_mnist", "paper_cifar10", "paper_svhn", "paper_gtsrb"} <= set(named_configs())
    for dataset in ("cifar10", "svhn", "gtsrb"):
        assert configs.load(f"paper_{dataset}").data.name == {"svhn": "svhn_cropped"}.get(dataset, dataset)


@pytest.mark.parametrize("path", CONFIGS, ids=os.path.basename)
def test_a_checkouts_experiment_config_is_the_packaged_one(path):
    """One source: ``experiments/configs/NAME.py`` gives the same config as ``--config NAME``."""
    name = os.path.splitext(os.path.basename(path))[0]
    assert config_to_dict(configs.load(path)) == config_to_dict(configs.load(name))


def test_an_unknown_config_name_lists_the_known_ones_and_a_missing_path_is_named():
    with pytest.raises(ValueError, match="'fashion' is neither a config file nor a named config; named configs: "
                                         ".*fashion_mnist"):
        configs.load("fashion")
    with pytest.raises(FileNotFoundError, match="config file 'configs/fashion.py' does not exist"):
        configs.load("configs/fashion.py")


def test_overrides_parse_literals_and_reject_unknown_keys_and_types():
    original = lock(default_config())
    config = apply_overrides(original, ["train.epochs=3", "optimizer.learning_rate=1", "model.options.widths=(8, 16)",
                                        "optimizer.step_boundaries=[0.3, 0.6]", "data.name=cifar10"])
    assert original.train.epochs == 5 and "widths" not in original.model.options  # a new config; the old unchanged
    assert config.train.epochs == 3 and config.optimizer.learning_rate == 1.0
    assert config.model.options.widths == (8, 16) and config.optimizer.step_boundaries == (0.3, 0.6)
    with pytest.raises(ValueError, match="unknown config key 'train.epoch'; valid keys here"):
        apply_overrides(config, ["train.epoch=3"])
    with pytest.raises(ValueError, match="unknown config key 'trian.epochs': no section 'trian'"):
        apply_overrides(config, ["trian.epochs=3"])
    with pytest.raises(ValueError, match="config key 'train.epochs' expects int, got 'three'"):
        apply_overrides(config, ["train.epochs=three"])
    with pytest.raises(ValueError, match="not of the form key=value"):
        apply_overrides(config, ["train.epochs"])


def test_ml_collections_flag_spelling_is_accepted():
    config = apply_overrides(lock(default_config()), ["--config.train.epochs=2", "config.optimizer.b1=0.75"])
    assert config.train.epochs == 2 and config.optimizer.b1 == 0.75
    with pytest.raises(AttributeError):  # still locked
        config.train.epochz = 3


def test_one_loader_reads_python_files_and_saved_json(tmp_path):
    config = apply_overrides(load_config(CONFIGS[0]), ["train.epochs=7"])
    path = tmp_path / "config.json"
    path.write_text(__import__("json").dumps(config_to_dict(config)))
    again = load_config(str(path))
    assert config_to_dict(again) == config_to_dict(config) and again.train.epochs == 7
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_config(str(tmp_path / "missing.json"))


def test_locked_config_rejects_new_keys_in_code():
    config = lock(default_config())
    with pytest.raises(AttributeError):
        config.train.epochz = 3
    config.model.options.dropout_rate = 0.5  # the open section takes any model option


def test_config_round_trips_through_json():
    config = apply_overrides(lock(default_config()), ["sweep.grid.learning_rate=(1e-3, 3e-3)", "model.options.widths=(8, 16)"])
    again = config_from_dict(config_to_dict(config))
    assert config_to_dict(again) == config_to_dict(config)
    assert tuple(again.sweep.grid.learning_rate) == (1e-3, 3e-3)


def test_semantic_differences_ignore_logging_and_devices():
    a = config_to_dict(lock(default_config()))
    b = config_to_dict(apply_overrides(lock(default_config()), ["log.progress=False", "parallel.data_devices=8",
                                                                "train.epochs=9"]))
    assert semantic_differences(a, b) == ["train.epochs: 5 in the workdir, 9 now"]
