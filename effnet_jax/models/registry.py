"""Find networks by name, with the paper's per-dataset width presets.

>>> model = create_model("effnet", dataset="gtsrb", dropout_rate=0.5)
>>> list_models()
['baseline', 'effnet', 'effnet_v2style', 'mob_imp', 'mobilenet', 'mobilenet_v2', 'shufflenet']
"""

from __future__ import annotations

import dataclasses
from typing import Any

import flax.linen as nn

from effnet_jax.errors import ConfigError, NotFound
from effnet_jax.models.base import ImageClassifier
from effnet_jax.models.comparison import Baseline, MobileNet, ShuffleNet
from effnet_jax.models.effnet import EffNet
from effnet_jax.models.inverted import EffNetV2Style, MobileNetV2, MobImp

MODELS: dict[str, type[ImageClassifier]] = {
    "baseline": Baseline,
    "mobilenet": MobileNet,
    "shufflenet": ShuffleNet,
    "effnet": EffNet,
    "effnet_v2style": EffNetV2Style,
    "mobilenet_v2": MobileNetV2,
    "mob_imp": MobImp,
}

# Widths of the paper's comparisons. CIFAR-10's are Table 1's; SVHN's and GTSRB's are inferred
# (they reproduce the paper's MobileNet and EffNet FLOPs exactly). The MNIST-likes use the seed.
DATASET_PRESETS: dict[str, dict[str, Any]] = {
    "cifar10": {"widths": (64, 128, 256), "num_classes": 10},
    "svhn": {"widths": (12, 24, 48), "num_classes": 10},
    "svhn_cropped": {"widths": (12, 24, 48), "num_classes": 10},
    "gtsrb": {"widths": (8, 16, 32), "num_classes": 43, "dropout_rate": 0.5},
    "mnist": {"widths": (64, 128, 256), "num_classes": 10},
    "fashion_mnist": {"widths": (64, 128, 256), "num_classes": 10},
}

# Input shape each preset's dataset delivers (for summaries).
DATASET_INPUT_SHAPES: dict[str, tuple[int, int, int]] = {
    "cifar10": (32, 32, 3),
    "svhn": (32, 32, 3),
    "svhn_cropped": (32, 32, 3),
    "gtsrb": (32, 32, 3),
    "mnist": (28, 28, 1),
    "fashion_mnist": (28, 28, 1),
}


def register_model(name: str):
    """Class decorator: makes a network available by ``name`` to ``create_model``, configs
    (``model.name``), sweeps, summaries and the CLI.

    The class is a Flax module taking the options the training code passes: the simplest is an
    ``ImageClassifier`` subclass that defines ``features(x, train)`` (the head, dropout, input
    checks and the shared options come with it)::

        @effnet_jax.register_model("effnet_se")
        class EffNetSE(ImageClassifier):
            widths: tuple[int, ...] = (64, 128, 256)
            def features(self, x, train): ...

    Dataset presets set only the options the class has (``widths``, ``num_classes``, ...).

    Raises:
      ValueError: ``name`` already names another class, or the class is no Flax module.
    """
    def register(cls):
        if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
            raise ConfigError(f"register_model({name!r}) takes a flax.linen.Module class, got {cls!r}")
        if name in MODELS and MODELS[name] is not cls and MODELS[name].__qualname__ != cls.__qualname__:
            raise ConfigError(f"model name {name!r} is already registered to {MODELS[name].__qualname__}")
        MODELS[name] = cls
        return cls

    if not isinstance(name, str) or not name:
        raise ConfigError(f"register_model takes a non-empty name, got {name!r}")
    return register


def list_models() -> list[str]:
    """Names accepted by ``create_model``, sorted."""
    return sorted(MODELS)


def model_options(name: str) -> list[str]:
    """Keyword arguments the named model accepts."""
    cls = _model_class(name)
    return sorted(f.name for f in dataclasses.fields(cls) if f.name not in ("parent", "name"))


def _model_class(name: str) -> type[ImageClassifier]:
    if name not in MODELS:
        raise ConfigError(f"unknown model {name!r}; valid names: {', '.join(list_models())} "
                          "(a model of your own: did you forget --import with the module that registers it?)")
    return MODELS[name]


def import_module(name: str, what: str = "--import") -> None:
    """Imports ``name``: a ``.py`` file (as ``effnet_jax_user_<stem>``) or a module on ``sys.path``,
    e.g. one that registers a model. ``what`` names where it came from in errors.

    Raises:
      NotFound: no such file. ConfigError: it cannot be imported (its error, in one line).
    """
    import importlib
    import importlib.util
    import os
    import sys

    try:
        if name.endswith(".py"):
            if not os.path.isfile(name):
                raise NotFound(f"{what} {name}: no such file")
            module_name = "effnet_jax_user_" + os.path.splitext(os.path.basename(name))[0]
            spec = importlib.util.spec_from_file_location(module_name, name)
            module = importlib.util.module_from_spec(spec)
            sys.modules[module_name] = module
            spec.loader.exec_module(module)
        else:
            importlib.import_module(name)
    except (ImportError, SyntaxError) as error:
        raise ConfigError(f"{what} {name}: {type(error).__name__}: {error}") from None


def ensure_registered(name: str, imports: tuple[str, ...] | list[str] = ()) -> None:
    """Imports ``imports`` (the modules a run recorded as registering its model, ``model.imports``)
    when ``name`` is not registered yet; a module given with ``--import`` again comes first.

    Raises:
      NotFound: a recorded module is no longer where the run found it. ConfigError: ``name`` is
      still unknown.
    """
    if name in MODELS:
        return
    for module in imports:
        import_module(module, what="model.imports (recorded in the workdir's config.json; put it back or pass "
                                   "--import with its new place):")
    _model_class(name)


def create_model(name: str, dataset: str | None = None, **overrides: Any) -> ImageClassifier:
    """Builds a registered network.

    Args:
      name: one of ``list_models()``.
      dataset: optional preset (``cifar10``, ``svhn``, ``gtsrb``, ...) setting widths, class
        count (and GTSRB's dropout of 0.5); ``None`` keeps the seed defaults.
      **overrides: any field of the model (``num_classes``, ``widths``, ``dtype``, ...), applied
        on top of the preset.

    Raises:
      ValueError: unknown name, dataset or option, naming the valid ones.
    """
    cls = _model_class(name)
    valid = model_options(name)
    settings: dict[str, Any] = {}
    if dataset is not None:
        if dataset not in DATASET_PRESETS:
            raise ConfigError(
                f"unknown dataset preset {dataset!r}; valid: {', '.join(sorted(DATASET_PRESETS))}"
            )
        settings.update({k: v for k, v in DATASET_PRESETS[dataset].items() if k in valid})
    unknown = sorted(set(overrides) - set(valid))
    if unknown:
        raise ConfigError(f"model {name!r} has no option(s) {unknown}; valid options: {valid}")
    settings.update(overrides)
    for key, value in settings.items():  # a module is hashed as a static argument: JSON lists become tuples
        if isinstance(value, list):
            settings[key] = tuple(value)
    return cls(**settings)
