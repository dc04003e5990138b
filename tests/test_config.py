"""Configs: defaults, experiment files, overrides and their errors, the workdir comparison."""

import glob
import os

import pytest

from effnet_jax.config import apply_overrides, default_config, lock, semantic_differences, validate_config
from effnet_jax.sweeps import expand_members
from effnet_jax.training.experiment import config_from_dict, config_to_dict, load_config_file

CONFIGS = sorted(glob.glob(os.path.join(os.path.dirname(__file__), "..", "experiments", "configs", "*.py")))


@pytest.mark.parametrize("path", CONFIGS, ids=os.path.basename)
def test_every_experiment_config_loads_validates_and_documents_its_command(path):
    config = load_config_file(path)
    validate_config(config)
    expand_members(config)
    import importlib.util

    spec = importlib.util.spec_from_file_location("config_module", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert "effnet-jax " in module.__doc__ and os.path.basename(path) in module.__doc__


def test_overrides_parse_literals_and_reject_unknown_keys_and_types():
    config = lock(default_config())
    apply_overrides(config, ["train.epochs=3", "optimizer.learning_rate=1", "model.options.widths=(8, 16)",
                             "optimizer.step_boundaries=[0.3, 0.6]", "data.name=cifar10"])
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
