"""Named experiment configs, shipped with the package: ``--config NAME`` selects one.

Each module here defines ``get_config()`` and starts with a docstring holding the command that
runs it (as big_vision's configs do). ``experiments/configs/`` in a checkout imports these, so
there is one source whether the library is cloned or installed.
"""

from __future__ import annotations

import importlib
import os
import pkgutil
from types import ModuleType

import ml_collections

from effnet_jax.config import load_config, lock
from effnet_jax.errors import ConfigError


def named_configs() -> list[str]:
    """The names ``--config`` accepts besides a file path, sorted."""
    return sorted(info.name for info in pkgutil.iter_modules(__path__) if not info.name.startswith("_"))


def config_module(name: str) -> ModuleType:
    """The module of the named config.

    Raises:
      ValueError: no config of that name (naming the known ones).
    """
    if name not in named_configs():
        raise ConfigError(f"config {name!r} is neither a config file nor a named config; "
                          f"named configs: {', '.join(named_configs())}")
    return importlib.import_module(f"{__name__}.{name}")


def load(name_or_path: str) -> ml_collections.ConfigDict:
    """A locked config: a named one (``fashion_mnist``: ``named_configs()``), or a file as
    ``effnet_jax.config.load_config`` reads it (an experiment's ``.py``, a saved ``config.json``).

    Raises:
      FileNotFoundError: a path (a directory part, or a ``.py``/``.json`` ending) to no file.
      ValueError: an unknown name (listing the known ones), or a file that is no config.
    """
    if os.path.isfile(name_or_path) or _looks_like_path(name_or_path):
        return load_config(name_or_path)
    return lock(config_module(name_or_path).get_config())


def _looks_like_path(text: str) -> bool:
    """A directory part or a config file's ending: a path, never a named config."""
    return "/" in text or os.sep in text or text.endswith((".py", ".json"))
