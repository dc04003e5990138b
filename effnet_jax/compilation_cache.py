"""A persistent XLA compilation cache: a run's programs compile once per machine, not per run.

On a 2-core CPU the seed network's compiled train step takes ~10 s to compile, and the
BatchNorm-statistics pass, evaluation and initialisation a few seconds each: ~25 s before a
run's first epoch has trained, in every process, although the programs are the same each
time. JAX can store compiled programs on disk, keyed by the program, its compile options,
the devices and the jax/jaxlib versions, and load them in a later process in well under a
second.

The ``effnet-jax`` CLI turns the cache on (``enable_compilation_cache``) in
``$XDG_CACHE_HOME/effnet_jax/xla`` (``~/.cache/effnet_jax/xla``), at most
``MAX_CACHE_BYTES`` (least recently used entries go first), unless JAX's own
``jax_compilation_cache_dir`` is already set (e.g. ``JAX_COMPILATION_CACHE_DIR``, which then
wins). ``EFFNET_JAX_COMPILATION_CACHE`` names another directory, or ``0`` turns it off. A
research script calls ``effnet_jax.enable_compilation_cache()`` itself.

An entry that cannot be read back (a truncated or corrupt file) is not used: JAX logs a
warning and compiles the program afresh. One that cannot be written (a full disk) is skipped
silently: the next run compiles it again.

JAX writes an entry as two files, the program (``<key>-cache``) and then its last-use time
(``<key>-atime``), and its size limit reads every entry's time before each write: a process
killed between the two (``kill -9``, a preemption) left a program without its time, and every
later write in that directory failed, so the cache silently stopped keeping anything.
``enable_compilation_cache`` removes such incomplete entries (``remove_incomplete_entries``)
before JAX opens the directory.

Not for programs over several CPU devices (``JAX_NUM_CPU_DEVICES``, or ``jax.distributed`` on
CPU): with jax 0.10.2, such programs loaded from the cache hung in a collective (devices
waiting at different all-reduces until XLA aborted the process) or, across two processes,
computed a wrong test loss (21.1 for 2.73 after the same 4 steps); freshly compiled, never.
The library's device placements (``effnet_jax.parallel.mesh``) call
``keep_off_for_cpu_collectives`` before anything compiles, and ``enable_compilation_cache``
does nothing where JAX already runs on several CPU devices. Single-device CPU runs, GPUs and
TPUs keep the cache.
"""

from __future__ import annotations

import contextlib
import logging
import os
import warnings
from typing import Mapping

VARIABLE = "EFFNET_JAX_COMPILATION_CACHE"
MAX_CACHE_BYTES = 2 * 2**30
# The JAX release whose cached multi-CPU-device programs went wrong (see the module docstring);
# tests/test_jax_workarounds.py says when to check again whether keep_off_for_cpu_collectives can go.
CPU_COLLECTIVES_CACHE_BUG_SEEN_WITH = "0.10.2"
# A writer holds the cache's lock for one entry's write (milliseconds); longer is a stuck process.
LOCK_WAIT_S = 2.0
_log = logging.getLogger("effnet_jax")


def default_directory(environ: Mapping[str, str]) -> str:
    """``$XDG_CACHE_HOME/effnet_jax/xla``, or ``~/.cache/effnet_jax/xla``."""
    base = environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "effnet_jax", "xla")


def cache_directory(environ: Mapping[str, str], configured: str | None) -> str | None:
    """Where the cache should live: ``None`` where JAX already has one (``configured``) or
    ``EFFNET_JAX_COMPILATION_CACHE=0`` turns it off; else that variable's directory or the
    default."""
    choice = environ.get(VARIABLE, "").strip()
    if configured or choice.lower() in ("0", "off", "false", "no"):
        return None
    return choice or default_directory(environ)


CACHE_SUFFIX, ATIME_SUFFIX = "-cache", "-atime"  # jax._src.lru_cache's file names


VERIFIED_FILE = ".effnet_jax_verified.json"  # {key: [size, mtime_ns]} of entries found whole


def remove_incomplete_entries(directory: str) -> list[str]:
    """Deletes the programs in ``directory`` that have no last-use time beside them (their
    writer stopped between the two files; the program itself may be cut short) or that do not
    decompress (cut short or damaged), and returns their keys. Holds the cache's own lock file
    while it looks, as JAX does while writing.

    An entry found whole is recorded by size and modification time (``VERIFIED_FILE``) and not
    decompressed again until either changes: decompressing the whole cache at every process start
    cost ~1.3 s per 100 MB here (~26 s with a full 2 GB cache)."""
    import filelock

    with filelock.FileLock(os.path.join(directory, ".lockfile"), timeout=LOCK_WAIT_S):
        names = set(os.listdir(directory))
        verified = _read_verified(directory)
        keys = [name[: -len(CACHE_SUFFIX)] for name in names if name.endswith(CACHE_SUFFIX)]
        removed, whole = [], {}
        for key in keys:
            path = os.path.join(directory, key + CACHE_SUFFIX)
            stamp = _stamp(path)
            if key + ATIME_SUFFIX in names and stamp is not None and (verified.get(key) == stamp or _readable(path)):
                whole[key] = stamp
            elif stamp is not None:
                removed.append(key)
        for key in removed:
            for suffix in (CACHE_SUFFIX, ATIME_SUFFIX):
                with contextlib.suppress(FileNotFoundError):
                    os.remove(os.path.join(directory, key + suffix))
        if whole != verified:
            _write_verified(directory, whole)
    if removed:
        _log.info("compilation cache: removed %d incomplete or unreadable entries in %s", len(removed), directory)
    return removed


def _stamp(path: str) -> list[int] | None:
    try:
        status = os.stat(path)
    except OSError:  # gone meanwhile (JAX's own size limit evicted it)
        return None
    return [status.st_size, status.st_mtime_ns]


def _read_verified(directory: str) -> dict[str, list[int]]:
    """The recorded whole entries; empty when missing or unreadable (then every entry is
    checked again: bookkeeping only)."""
    from effnet_jax.errors import WorkdirError
    from effnet_jax.files import read_json

    try:
        verified = read_json(os.path.join(directory, VERIFIED_FILE), "the cache's checked entries")
    except WorkdirError:
        return {}
    return verified if isinstance(verified, dict) else {}


def _write_verified(directory: str, verified: dict[str, list[int]]) -> None:
    from effnet_jax.files import write_json

    with contextlib.suppress(OSError):  # a full disk: the next start checks the entries again
        write_json(os.path.join(directory, VERIFIED_FILE), verified)


def _readable(path: str) -> bool:
    """Whether the entry's compressed program decompresses. JAX itself only warns about an entry
    it cannot read, compiles afresh and keeps the entry (it never overwrites one), so a damaged
    entry would cost a warning and a compilation in every later run (``remove_incomplete_entries``
    checks each entry once, until it changes)."""
    try:
        from jax._src.compilation_cache import decompress_executable
    except ImportError:  # a JAX without it: trust the entry, as JAX does
        return True
    try:
        with open(path, "rb") as f:
            decompress_executable(f.read())
    except OSError:
        return True  # unreadable now (permissions, a race): JAX decides
    except Exception:  # zstd's or zlib's error: cut short or garbage
        return False
    return True


def enable_compilation_cache(directory: str | None = None) -> str | None:
    """Turns on JAX's persistent compilation cache in ``directory`` (default: see the module
    docstring) and returns the directory used, or ``None`` where it stays as it was (JAX
    already caches somewhere, the cache is turned off, or the directory cannot be created).
    Programs that compile in 0.5 s or more are stored, unless JAX's own
    ``JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS`` is set."""
    import jax
    from jax._src.xla_bridge import backends_are_initialized

    if backends_are_initialized() and keep_off_for_cpu_collectives(jax.devices()):
        return None
    if directory is None:
        directory = cache_directory(os.environ, jax.config.jax_compilation_cache_dir)
        if directory is None:
            return None
    try:
        os.makedirs(directory, exist_ok=True)
        remove_incomplete_entries(directory)
    except TimeoutError:  # filelock.Timeout (an OSError too): another process holds the lock for long
        # JAX waits up to 10 s for it at every program's lookup and store: slower than compiling.
        _log.warning("compilation cache off: %s is locked by another process", directory)
        return None
    except OSError as error:
        _log.warning("compilation cache off: cannot use %s (%s)", directory, error.strerror or error)
        return None
    if jax.config.jax_compilation_cache_dir != directory:
        from jax.experimental.compilation_cache import compilation_cache

        jax.config.update("jax_compilation_cache_dir", directory)
        compilation_cache.reset_cache()  # a cache opened elsewhere before is let go
    jax.config.update("jax_compilation_cache_max_size", MAX_CACHE_BYTES)
    # A program that could not be stored (full disk, a racing process) is only compiled again
    # next time: not worth JAX's multi-line warning on the command's stderr.
    warnings.filterwarnings("ignore", message="Error writing persistent compilation cache entry")
    if "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS" not in os.environ:  # JAX's own setting wins
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
    return directory


def keep_off_for_cpu_collectives(devices) -> bool:
    """Turns the persistent cache off for the rest of the process where a run's programs span
    ``devices``, several CPU devices (see the module docstring), and returns ``True``; else
    does nothing and returns ``False``. Call it before the run compiles anything."""
    import jax

    devices = list(devices)
    if devices[0].platform != "cpu" or (len(devices) == 1 and jax.process_count() == 1):
        return False
    if jax.config.jax_enable_compilation_cache:
        from jax.experimental.compilation_cache import compilation_cache

        jax.config.update("jax_enable_compilation_cache", False)
        compilation_cache.reset_cache()  # a cache already opened is let go
        _log.info("compilation cache off: programs over several CPU devices are not loaded from it")
    return True
