"""A workdir remembers the module that registered its model (``--import``, recorded as
``model.imports``): ``eval``, a resume and ``effnet_jax.load`` work without repeating it, and a
moved module or a forgotten ``--import`` is one line saying so."""

import json
import shutil

import pytest

import effnet_jax
from effnet_jax import cli
from effnet_jax.models.registry import MODELS
from helpers import write_tiny_config_file

OWN_MODEL = '''
import flax.linen as nn
import effnet_jax


@effnet_jax.register_model("recorded_net")
class RecordedNet(effnet_jax.ImageClassifier):
    widths: tuple = (4, 8)

    def features(self, x, train):
        for width in self.widths:
            x = nn.Conv(width, (3, 3), use_bias=False)(x)
            x = nn.max_pool(nn.relu(x), (2, 2), (2, 2))
        return x
'''


@pytest.fixture
def trained_with_import(mock_data, tmp_path, capsys):
    module = tmp_path / "my_models.py"
    module.write_text(OWN_MODEL)
    config = write_tiny_config_file(tmp_path / "tiny.py", "c.train.epochs = 1", "c.train.batch_size = 8",
                                    "c.train.eval_batch_size = 12", "c.model.name = 'recorded_net'",
                                    "c.model.options.widths = (4, 8)")
    workdir = tmp_path / "run"
    assert cli.main(["train", "--config", config, "--workdir", str(workdir), "--import", str(module)]) == 0
    capsys.readouterr()
    MODELS.pop("recorded_net")  # as in a new process: nothing registers it until the module is imported
    yield config, workdir, module
    MODELS.pop("recorded_net", None)


def test_eval_load_and_resume_import_the_recorded_module(trained_with_import, capsys):
    config, workdir, module = trained_with_import
    assert json.loads((workdir / "config.json").read_text())["model"]["imports"] == [str(module)]
    assert cli.main(["eval", "--workdir", str(workdir)]) == 0
    assert json.loads(capsys.readouterr().out)["test_accuracy"] >= 0
    MODELS.pop("recorded_net")
    assert effnet_jax.load(str(workdir)).model.__class__.__name__ == "RecordedNet"
    MODELS.pop("recorded_net")
    assert cli.main(["train", "--config", config, "--workdir", str(workdir)]) == 0  # the same command, no --import
    assert json.loads(capsys.readouterr().out)["steps"] == 5


def test_a_moved_module_is_one_line_naming_it(trained_with_import, capsys):
    _, workdir, module = trained_with_import
    shutil.move(module, module.with_name("moved.py"))
    assert cli.main(["eval", "--workdir", str(workdir)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"{module}: no such file" in err[0] and "--import with its new place" in err[0]
    assert cli.main(["eval", "--workdir", str(workdir), "--import", str(module.with_name("moved.py"))]) == 0


def test_an_unknown_model_asks_whether_an_import_was_forgotten(mock_data, tmp_path, capsys):
    config = write_tiny_config_file(tmp_path / "tiny.py", "c.model.name = 'never_registered'")
    assert cli.main(["train", "--config", config, "--workdir", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert "unknown model 'never_registered'" in err and "did you forget --import" in err
    assert not (tmp_path / "run").exists()
