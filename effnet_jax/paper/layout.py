"""The layout of a reproduction's workdir, read by both ``reproduce`` (which writes it) and
``report`` (which reads it)::

    reproduce.json          table, dataset, epochs, seeds, overrides, every command run
    <row>/                  one sweep workdir per row (results.csv once the row is finished)
    <row>/wall_time.json    seconds spent on the row, per invocation, and on what machine
"""

from __future__ import annotations

import json
import os
from typing import Any

from effnet_jax.errors import NotFound

MANIFEST = "reproduce.json"
WALL_TIME = "wall_time.json"
FINISHED = "results.csv"


def row_finished(directory: str) -> bool:
    """Whether the row's sweep has written its results (every seed trained and evaluated)."""
    return os.path.exists(os.path.join(directory, FINISHED))


def read_manifest(workdir: str) -> dict[str, Any]:
    """The ``reproduce.json`` of ``workdir``.

    Raises:
      FileNotFoundError: the workdir holds no reproduction.
    """
    path = os.path.join(workdir, MANIFEST)
    if not os.path.exists(path):
        raise NotFound(f"{workdir!r} holds no reproduction ({MANIFEST} is missing): "
                       "run effnet-jax reproduce --table ... --workdir there first")
    with open(path) as f:
        return json.load(f)
