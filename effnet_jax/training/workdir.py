"""One writer per workdir: an advisory lock the kernel drops when its process dies.

``workdir_lock(workdir)`` holds ``fcntl.flock`` on ``<workdir>/.lock`` for as long as a run or a
sweep writes there. A second process asking for it is refused at once (``WorkdirBusy``, naming
the holder's pid) before it writes anything; a holder killed with SIGKILL, or crashed, leaves no
stale lock, since the kernel releases ``flock`` locks with the process. A run refused before it
wrote anything in a workdir the lock created (bad data, say) leaves no workdir behind.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os

from effnet_jax.errors import NotWritable, WorkdirError

LOCK_FILE = ".lock"


class WorkdirBusy(WorkdirError):
    """Another live process is writing to this workdir."""


# The longest path a run writes under its workdir: a sweep member's Orbax checkpoint, e.g.
# chunks/chunk_000/checkpoints/latest/20.orbax-checkpoint-tmp/default/ocdbt.process_0/d/<32 hex>,
# or members/<model>_lr..._seed<n>/checkpoints/... (~230 characters), with room to spare.
LONGEST_INSIDE = 320


def check_path_length(workdir: str) -> None:
    """Refuses a workdir whose path leaves too little room for the files written under it:
    otherwise a run would train until its first checkpoint and fail there.

    Raises:
      WorkdirError: naming the path's length and the limit.
    """
    path = os.path.abspath(workdir)
    limit = os.pathconf("/", "PC_PATH_MAX") if hasattr(os, "pathconf") else 4096
    if len(os.fsencode(path)) + LONGEST_INSIDE > limit:
        raise WorkdirError(f"workdir path is {len(os.fsencode(path))} bytes long; the files a run writes under it "
                           f"need {LONGEST_INSIDE} more, within the system's {limit}: use a shorter path")


@contextlib.contextmanager
def workdir_lock(workdir: str, enabled: bool = True):
    """Holds ``workdir``'s lock (creating the directory) for the duration of the ``with``;
    ``enabled=False`` holds nothing (processes other than 0 of a multi-process run, which share
    process 0's workdir).

    Raises:
      WorkdirBusy: another process holds it.
      FileExistsError: ``workdir`` is a file. PermissionError: it cannot be created or written.
    """
    if not enabled:
        yield
        return
    check_path_length(workdir)
    if os.path.exists(workdir) and not os.path.isdir(workdir):
        raise WorkdirError(f"workdir {workdir!r} exists and is not a directory")
    created = not os.path.exists(workdir)
    try:
        os.makedirs(workdir, exist_ok=True)
        handle = open(os.path.join(workdir, LOCK_FILE), "a+")
    except OSError as error:
        raise NotWritable(f"workdir {workdir!r} is not writable: {error.strerror or error}") from None
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as error:
            if error.errno not in (errno.EWOULDBLOCK, errno.EACCES):
                raise
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            raise WorkdirBusy(f"workdir {workdir!r} is in use by process {holder}; wait for it to finish "
                              "or use another workdir") from None
        try:  # unbuffered: nothing is left to flush (and fail again) when the file closes
            os.ftruncate(handle.fileno(), 0)
            os.pwrite(handle.fileno(), str(os.getpid()).encode(), 0)
        except OSError as error:  # e.g. a full disk: say which file
            raise OSError(error.errno, error.strerror, handle.name) from None
        try:
            yield
        finally:
            os.ftruncate(handle.fileno(), 0)
            if created and os.listdir(workdir) == [LOCK_FILE]:  # refused before writing: leave nothing
                os.remove(handle.name)
                os.rmdir(workdir)
            fcntl.flock(handle, fcntl.LOCK_UN)
    finally:
        handle.close()
