"""Typed errors: what a user can act on is one line from the CLI; anything else (a bug in a
researcher's own model code, in JAX, in the library) keeps its traceback with file and line."""

import inspect
import subprocess
import sys

import pytest

from effnet_jax import cli, errors

BAD_MODEL = '''import effnet_jax


@effnet_jax.register_model("reshaping_net")
class ReshapingNet(effnet_jax.ImageClassifier):
    def features(self, x, train):
        raise ValueError("cannot reshape array of size 3072 into shape (7,)")
'''


def test_every_error_is_an_effnet_jax_error_and_the_builtin_it_refines():
    classes = [c for _, c in inspect.getmembers(errors, inspect.isclass) if issubclass(c, Exception)]
    assert {c.__name__ for c in classes} >= {"ConfigError", "DataError", "WorkdirError", "NotFound", "NotWritable",
                                             "CheckpointError", "TrainingDiverged"}
    builtins = {errors.ConfigError: ValueError, errors.DataError: ValueError, errors.WorkdirError: FileExistsError,
                errors.NotFound: FileNotFoundError, errors.NotWritable: PermissionError,
                errors.CheckpointError: RuntimeError, errors.TrainingDiverged: RuntimeError}
    for cls, builtin in builtins.items():
        assert issubclass(cls, errors.EffNetJaxError) and issubclass(cls, builtin)


def test_a_typed_error_is_one_line_and_a_plain_value_error_is_not_swallowed(capsys):
    assert cli.report_error("train", errors.ConfigError("train.epochs: expected a positive integer, got 0")) == 2
    assert capsys.readouterr().err.strip() == "effnet-jax train: error: train.epochs: expected a positive integer, got 0"
    assert cli.report_error("train", ValueError("cannot reshape")) is None
    assert cli.report_error("train", TypeError("unsupported operand")) is None
    assert capsys.readouterr().err == ""


def test_an_own_models_value_error_keeps_its_file_and_line(tmp_path, monkeypatch):
    from effnet_jax.models import registry

    monkeypatch.setattr(registry, "MODELS", dict(registry.MODELS))  # the model registered here stays here
    module = tmp_path / "my_models.py"
    module.write_text(BAD_MODEL)
    with pytest.raises(ValueError, match="cannot reshape") as raised:
        cli.main(["summary", "reshaping_net", "--import", str(module)])
    assert not isinstance(raised.value, errors.EffNetJaxError)
    assert any(str(entry.path) == str(module) for entry in raised.traceback)
    done = subprocess.run([sys.executable, "-m", "effnet_jax.cli", "summary", "reshaping_net", "--import", str(module)],
                          capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert done.returncode == 1
    assert "Traceback" in done.stderr and f'File "{module}", line 7' in done.stderr
    assert "ValueError: cannot reshape array of size 3072" in done.stderr
