"""Named experiment configs, shipped with the package: ``--config NAME`` selects one.

Each module here defines ``get_config()`` and starts with a docstring holding the command that
runs it (as big_vision's configs do). ``experiments/configs/`` in a checkout imports these, so
there is one source whether the library is cloned or installed.
"""

from __future__ import annotations

import importlib
import pkgutil
from types import ModuleType


def named_configs() -> list[str]:
    """The names ``--config`` accepts besides a file path, sorted."""
    return sorted(info.name for info in pkgutil.iter_modules(__path__) if not info.name.startswith("_"))


def config_module(name: str) -> ModuleType:
    """The module of the named config.

    Raises:
      ValueError: no config of that name (naming the known ones).
    """
    if name not in named_configs():
        raise ValueError(f"config {name!r} is neither a config file nor a named config; "
                         f"named configs: {', '.join(named_configs())}")
    return importlib.import_module(f"{__name__}.{name}")
