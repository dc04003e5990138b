"""A workdir's files, written so that a crash never leaves half of one, read so that damage is
named.

* ``write_text`` / ``write_json``: a temporary file in the same directory, flushed and fsynced,
  then renamed over the target (and the directory fsynced): a reader sees the old file or the
  new one, never a torn one. The file gets the permissions the umask gives a new file.
* ``read_json``: the parsed file, or ``WorkdirError`` naming the file and what is wrong.
* ``read_records``: an append-only JSON-lines log. A torn last line (no newline at its end:
  what a crash or a full disk leaves mid-append) is dropped with one warning; any complete line
  that is not a record is ``WorkdirError`` naming the file and the line, since dropping it would
  lose a record silently.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
from typing import Any

from effnet_jax.errors import WorkdirError

logger = logging.getLogger("effnet_jax")


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _fsync_directory(directory: str) -> None:
    with contextlib.suppress(OSError):  # not every filesystem can open a directory for fsync
        handle = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(handle)
        finally:
            os.close(handle)


def write_text(path: str, text: str) -> None:
    """Replaces ``path`` with ``text`` atomically (nothing partial is left on any error)."""
    directory = os.path.dirname(os.path.abspath(path))
    handle, temporary = tempfile.mkstemp(dir=directory, prefix=f".{os.path.basename(path)}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(temporary, 0o666 & ~_umask())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(temporary)
        raise
    _fsync_directory(directory)


def write_json(path: str, value: Any, **dump_options) -> None:
    """``write_text`` of ``value`` as JSON (``dump_options`` go to ``json.dumps``)."""
    write_text(path, json.dumps(value, **dump_options) + "\n")


def read_json(path: str, what: str = "file") -> Any:
    """The JSON value in ``path``.

    Raises:
      WorkdirError: it cannot be read or is not JSON (naming the file, and ``what`` it is).
    """
    try:
        with open(path) as f:
            return json.load(f)
    except ValueError as error:
        raise WorkdirError(f"{what} {path!r} is not valid JSON ({error}); it is damaged") from None
    except OSError as error:
        raise WorkdirError(f"{what} {path!r} cannot be read: {error.strerror or error}") from None


def read_records(path: str) -> tuple[list[dict[str, Any]], bool]:
    """``(records, torn)``: every record of the JSON-lines file ``path`` (``[]`` if there is none)
    and whether a torn last line (no newline at its end: an append that did not finish) was
    dropped, which one warning says.

    Raises:
      WorkdirError: a complete line is not a JSON object (naming the file and the line).
    """
    if not os.path.exists(path):
        return [], False
    with open(path, "rb") as f:
        *complete, last = f.read().split(b"\n")  # ``last`` is empty when the file ends with a newline
    records = []
    for number, line in enumerate(complete, 1):
        if line.strip():
            record = _record(line)
            if record is None:
                raise WorkdirError(f"{path!r} line {number} is not a JSON record; the file is damaged "
                                   "(remove that line to keep the rest)")
            records.append(record)
    if not last.strip():
        return records, False
    logger.warning("%s: its last line (%d) is incomplete, cut by a crash or a full disk; it is dropped",
                   path, len(complete) + 1)
    return records, True


def _record(line: bytes) -> dict[str, Any] | None:
    try:
        record = json.loads(line)
    except ValueError:
        return None
    return record if isinstance(record, dict) else None
