"""The research API: a user's own model registered by name and trained through the library
(config, CLI, sweep, summary), and a trained workdir loaded back for inference in one call."""

import json
import logging

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import effnet_jax
from effnet_jax import cli
from effnet_jax.models import list_models
from helpers import tiny_mock_config, write_tiny_config_file

USER_MODULE = '''
import flax.linen as nn
import effnet_jax
from effnet_jax.models import ImageClassifier


@effnet_jax.register_model("tiny_user_net")
class TinyUserNet(ImageClassifier):
    """A researcher's own network: plain Flax layers, the library's head and options."""

    widths: tuple[int, ...] = (4, 8)

    def features(self, x, train):
        for i, width in enumerate(self.widths):
            x = nn.Conv(width, (3, 3), use_bias=False, name=f"conv_{i}")(x)
            x = nn.BatchNorm(use_running_average=not train, momentum=self.bn_momentum, name=f"bn_{i}")(x)
            x = nn.max_pool(nn.relu(x), (2, 2), (2, 2))
        return x
'''


@pytest.fixture(autouse=True)
def own_registry(monkeypatch):
    """Models registered by a test are gone after it (the registry is the module's dict)."""
    from effnet_jax.models import registry

    monkeypatch.setattr(registry, "MODELS", dict(registry.MODELS))


@pytest.fixture
def user_module(tmp_path):
    path = tmp_path / "user_models.py"
    path.write_text(USER_MODULE)
    return str(path)


def test_a_registered_model_trains_through_the_cli_and_loads_back(mock_data, tmp_path, user_module, capsys):
    config = write_tiny_config_file(tmp_path / "config.py", "c.model.name = 'tiny_user_net'",
                                    "c.model.options.widths = (4, 8)")
    workdir = str(tmp_path / "run")
    assert cli.main(["train", "--config", config, "--workdir", workdir, "--import", user_module,
                     "train.epochs=1", "train.batch_size=8", "train.eval_batch_size=12"]) == 0
    results = json.loads(capsys.readouterr().out)
    assert "tiny_user_net" in list_models()
    assert cli.main(["summary", "tiny_user_net", "--import", user_module, "--input-shape", "32", "32", "3"]) == 0
    assert "conv_1" in capsys.readouterr().out

    trained = effnet_jax.load(workdir)
    assert trained.checkpoint == "best" and trained.step == results["steps"]
    assert set(trained.variables) == {"params", "batch_stats"} and "conv_0" in trained.variables["params"]
    images = np.random.default_rng(0).integers(0, 256, (5, 32, 32, 3), dtype=np.uint8)
    logits = trained(images)
    assert logits.shape == (5, 10) and np.all(np.isfinite(logits))
    assert effnet_jax.load(workdir, checkpoint="latest").step == results["steps"]


def test_load_restores_the_exact_trained_variables(mock_data, tmp_path, caplog):
    from helpers import latest_state

    config = tiny_mock_config("train.epochs=1", "data.validation_size=0")
    workdir = str(tmp_path / "run")
    effnet_jax.train_and_evaluate(config, workdir)
    absl = logging.getLogger("absl")
    before = absl.level
    absl.setLevel(logging.INFO)  # as in a research script (the CLI quiets absl itself)
    try:
        with caplog.at_level("INFO"):
            trained = effnet_jax.load(workdir)  # no validation: no best checkpoint, the latest is used
        after = absl.level
    finally:
        absl.setLevel(before)
    assert not [r for r in caplog.records if "read only" in r.getMessage()]  # Orbax's notice, on every load
    assert after == logging.INFO  # put back as it was
    state = latest_state(workdir, config)
    assert trained.checkpoint == "latest"
    for a, b in zip(jax.tree.leaves(trained.variables), jax.tree.leaves({"params": state.params, "batch_stats": state.batch_stats})):
        np.testing.assert_array_equal(a, b)


def test_a_registered_model_sweeps(mock_data, tmp_path, user_module):
    cli.import_modules([user_module])
    config = tiny_mock_config("model.name=tiny_user_net", "model.options.widths=(4, 8)", "train.epochs=1",
                              "sweep.seeds=(0, 1)")
    rows = effnet_jax.sweep(config, str(tmp_path / "sweep"))
    assert [r["seed"] for r in rows] == [0, 1] and rows[0]["test_loss"] != rows[1]["test_loss"]


def test_load_and_import_errors_are_one_line(tmp_path, capsys):
    with pytest.raises(FileNotFoundError, match="holds no run"):
        effnet_jax.load(str(tmp_path))
    with pytest.raises(ValueError, match="checkpoint must be one of"):
        effnet_jax.load(str(tmp_path), checkpoint="final")
    assert cli.main(["summary", "effnet", "--import", str(tmp_path / "missing.py")]) == 2
    assert cli.main(["summary", "effnet", "--import", "no_such_module_anywhere"]) == 2
    assert cli.main(["summary", "no_such_model"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 3 and "no such file" in err[0] and "ModuleNotFoundError" in err[1]
    assert "unknown model 'no_such_model'; valid names: baseline" in err[2]


def test_register_model_refuses_a_taken_name_and_non_modules():
    with pytest.raises(ValueError, match="already registered to EffNet"):
        @effnet_jax.register_model("effnet")
        class Other(effnet_jax.ImageClassifier):
            pass
    with pytest.raises(ValueError, match="takes a flax.linen.Module class"):
        effnet_jax.register_model("plain")(dict)


def test_convert_is_reachable_from_the_package():
    assert callable(effnet_jax.convert.from_torch_seed)
    assert jnp.asarray(0).dtype  # the package import left jax usable
