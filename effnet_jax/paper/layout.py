"""The layout of a reproduction's workdir, read by both ``reproduce`` (which writes it) and
``report`` (which reads it)::

    reproduce.json          table, dataset, epochs, seeds, overrides, every command run
    <row>/                  one sweep workdir per row (results.csv once the row is finished)
    <row>/wall_time.json    seconds spent on the row, per invocation, and on what machine
"""

from __future__ import annotations

import csv
import json
import logging
import os
from typing import Any, NamedTuple

from effnet_jax.errors import NotFound, WorkdirError
from effnet_jax.files import read_json

MANIFEST = "reproduce.json"
WALL_TIME = "wall_time.json"
FINISHED = "results.csv"
logger = logging.getLogger("effnet_jax")


def read_results(directory: str, seeds: int) -> list[dict[str, str]] | None:
    """The row's ``results.csv`` rows (one per seed), or ``None`` while the row is unfinished.
    A damaged file (unreadable, a row cut short, not one row per seed) counts as unfinished, so
    the row's sweep runs again: it finds its chunks finished and writes the file anew."""
    path = os.path.join(directory, FINISHED)
    if not os.path.exists(path):
        return None
    try:
        with open(path, newline="") as f:
            reader = csv.DictReader(f)
            rows = list(reader)
            columns = reader.fieldnames or []
    except (OSError, UnicodeDecodeError, csv.Error):
        rows, columns = [], []
    intact = (len(rows) == seeds and {"seed", "diverged", "test_accuracy"} <= set(columns)
              and all(None not in row.values() and None not in row for row in rows))
    if not intact:
        logger.warning("%s is damaged (expected %d complete rows); the row is finished again", path, seeds)
        return None
    return rows


def row_finished(directory: str, seeds: int) -> bool:
    """Whether the row's sweep has written intact results (every seed trained and evaluated)."""
    return read_results(directory, seeds) is not None


class Timing(NamedTuple):
    """A row's time: wall seconds over every invocation, the process CPU seconds (``None`` when an
    invocation did not record them), and the machines it ran on."""
    seconds: float | None
    cpu_seconds: float | None
    machines: list[str]


def read_timing(directory: str) -> Timing:
    """A row's ``Timing`` (``wall_time.json``); empty when not recorded, or damaged (bookkeeping
    only: a report leaves it out, with a warning).

    Wall time counts whatever shared the machine (or stopped the process) meanwhile; CPU time is
    the row's own cost."""
    path = os.path.join(directory, WALL_TIME)
    if not os.path.exists(path):
        return Timing(None, None, [])
    try:
        timing = read_json(path, "a row's wall times")
        invocations = timing["invocations"]
        cpu = [i.get("cpu_seconds") for i in invocations]
        return Timing(float(timing["seconds"]), None if None in cpu else round(sum(cpu), 1), sorted(
            {f"{i['cpu']} ({i['cpu_cores']} cores), {i['backend']} x{i['devices']}" for i in invocations}))
    except (WorkdirError, KeyError, TypeError, ValueError) as error:
        logger.warning("%s: %s; the row's wall time is left out", path, error)
        return Timing(None, None, [])


def read_manifest(workdir: str) -> dict[str, Any]:
    """The ``reproduce.json`` of ``workdir``.

    Raises:
      FileNotFoundError: the workdir holds no reproduction.
    """
    path = os.path.join(workdir, MANIFEST)
    if not os.path.exists(path):
        raise NotFound(f"{workdir!r} holds no reproduction ({MANIFEST} is missing): "
                       "run effnet-jax reproduce --table ... --workdir there first")
    try:
        with open(path) as f:
            manifest = json.load(f)
        if not isinstance(manifest, dict) or not {"table", "dataset", "epochs", "seeds"} <= set(manifest):
            raise ValueError("not a reproduction manifest")
    except (OSError, ValueError) as error:
        raise WorkdirError(f"{path!r} is damaged ({error}); restore it, or use another workdir") from None
    return manifest
