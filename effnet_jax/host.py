"""Host-process settings for XLA:CPU: keep each call's scratch memory mapped between calls.

XLA:CPU allocates the scratch buffer of every compiled call (all the activations of a train
step: ~400 MB for the seed network at batch 128) with ``malloc`` and frees it when the call
ends. glibc serves allocations that large with a fresh ``mmap``, so every call page-faults its
whole scratch in again, 4 KiB at a time: ~100,000 faults and ~100 ms of kernel time per call on
our 2-core machine. glibc 2.35+ can back such mappings with transparent huge pages when started
with ``GLIBC_TUNABLES=glibc.malloc.hugetlb=1`` (512 times fewer faults, fewer TLB misses); on
that machine it makes inference ~1.4x and the train step ~1.3x faster at 10 steps per call
(~3% at the default 20, which already amortises the faults), and leaves PyTorch's speed
unchanged (see ``experiments/benchmarks/README.md``).

Importing ``effnet_jax`` changes none of this: a process opts in with one call,
``tune_cpu()`` (``effnet_jax.tune_cpu``), first thing in its entry script, as the ``effnet-jax``
command and the benchmarks do. A researcher's own script gets the first half of the cure without
a restart: ``tune_allocator`` tells glibc,
through ``mallopt``, to serve large blocks from its heap instead of fresh mappings
(``M_MMAP_MAX=0``) and to keep freed memory instead of returning it to the kernel
(``M_TRIM_THRESHOLD``), so the scratch is then allocated once and reused by every later call. The
process keeps its peak heap for its lifetime (it would map the same amount again at the next
step anyway). It also asks for one arena (``M_ARENA_MAX=1``), unless ``GLIBC_TUNABLES`` sets an
arena limit: XLA allocates the scratch from whichever thread runs the call, and glibc serves a
block that large from a thread's own arena with a fresh mapping whatever ``M_MMAP_MAX`` says,
faulted in again (4 KiB at a time without huge pages) at every call. Where it sets one arena it
also has the compiler's leftover heap holes sealed after each compile (``effnet_jax.heap``), so
that a process that compiled its programs steps as fast as one that loaded them.

With huge pages (below) those fresh mappings fault in 2 MiB at a time, and for a program that
runs many steps per call, as the CLI's does, one arena costs more than it saves: XLA's compiler
shares it with the running program, compiles slower (the seed network's train program 7.1 vs
5.0 s) and leaves it fragmented, so a process that compiled its programs trained ~20% slower
for the rest of its life than one that loaded them from the compilation cache. The CLI's step
(20 per call) ran 857 img/s with one arena against 924 with per-thread arenas, at 2.5 instead
of 1.0 GB peak memory; a plain script's single steps ran 829 against 717 img/s, one mapping
per step being too many (the runs of 2026-11-30, commit fd014fe and 2026-11-30, commit 65a88c4 in ``experiments/benchmarks/README.md``). So the
CLI restarts with ``glibc.malloc.arena_max`` set to ``MANY_STEPS_PER_CALL_ARENAS``, and
``tune_allocator`` leaves an arena limit set through ``GLIBC_TUNABLES`` alone.
``EFFNET_JAX_NO_ALLOCATOR_TUNING=1`` opts out of all of it.

The huge-page tunable is read only when a process starts, so ``restart_with_hugepages`` re-executes the
current program once with it set; the ``effnet-jax`` CLI does so first thing, and only where JAX
will compute on the CPU (``expected_backend``: on a GPU or TPU host the scratch memory lives on
the device). Set ``EFFNET_JAX_NO_HUGEPAGES=1`` to opt out, or set ``GLIBC_TUNABLES`` yourself.
"""

from __future__ import annotations

import os
import sys
from typing import Iterable, Mapping

HUGEPAGE_KEY = "glibc.malloc.hugetlb"
HUGEPAGE_TUNABLE = f"{HUGEPAGE_KEY}=1"
ARENA_MAX_KEY = "glibc.malloc.arena_max"
# The CLI's arena limit (20 steps per compiled call, huge pages): per-thread arenas, as measured.
MANY_STEPS_PER_CALL_ARENAS = 8
OPT_OUT_VARIABLE = "EFFNET_JAX_NO_HUGEPAGES"
MIN_GLIBC = (2, 35)  # the first glibc with the ``glibc.malloc.hugetlb`` tunable
THP_CONTROL = "/sys/kernel/mm/transparent_hugepage/enabled"


def glibc_version() -> tuple[int, int] | None:
    """This process's glibc version, or ``None`` elsewhere (musl, macOS, Windows)."""
    try:
        name, version = os.confstr("CS_GNU_LIBC_VERSION").split()
        major, minor = version.split(".")[:2]
        return (int(major), int(minor)) if name == "glibc" else None
    except (AttributeError, ValueError, OSError):
        return None


def transparent_hugepage_mode(path: str = THP_CONTROL) -> str | None:
    """The kernel's transparent-huge-page mode (``always``, ``madvise`` or ``never``), if any."""
    try:
        with open(path) as control:
            text = control.read()
    except OSError:
        return None
    start, end = text.find("["), text.find("]")
    return text[start + 1:end] if 0 <= start < end else None


def expected_backend(environ: Mapping[str, str], accelerator_plugins: Iterable[str] | None = None) -> str:
    """The backend JAX will pick, told without starting JAX: the first of ``JAX_PLATFORMS`` if
    set, else ``"tpu"``/``"gpu"`` when an accelerator plugin is installed (libtpu, a CUDA or
    ROCm plugin), else ``"cpu"``."""
    platforms = environ.get("JAX_PLATFORMS", "").strip()
    if platforms:
        first = platforms.split(",")[0].strip().lower()
        return {"cuda": "gpu", "rocm": "gpu"}.get(first, first)
    plugins = installed_accelerator_plugins() if accelerator_plugins is None else list(accelerator_plugins)
    if any("tpu" in p for p in plugins):
        return "tpu"
    return "gpu" if plugins else "cpu"


def installed_accelerator_plugins() -> list[str]:
    """Names of the installed JAX accelerator plugins (PJRT plugin entry points and libtpu)."""
    import importlib.metadata
    import importlib.util

    names = [entry.name for entry in importlib.metadata.entry_points(group="jax_plugins")]
    if importlib.util.find_spec("libtpu") is not None:
        names.append("libtpu")
    return names


def hugepage_environment(
    environ: Mapping[str, str], glibc: tuple[int, int] | None, thp_mode: str | None, backend: str = "cpu",
    malloc_arenas: int | None = None,
) -> dict[str, str] | None:
    """The environment to restart with so that glibc uses huge pages, or ``None`` when a restart
    would change nothing: already set (any ``glibc.malloc.hugetlb`` value is respected), opted
    out, no glibc 2.35+, a kernel without transparent huge pages for ``madvise``, or a backend
    other than the CPU. With ``malloc_arenas`` (e.g. ``MANY_STEPS_PER_CALL_ARENAS``) it also
    sets glibc's arena limit, unless ``GLIBC_TUNABLES`` already does."""
    if backend != "cpu":
        return None
    tunables = environ.get("GLIBC_TUNABLES", "")
    if environ.get(OPT_OUT_VARIABLE, "") not in ("", "0") or glibc_tunable(environ, HUGEPAGE_KEY) is not None:
        return None
    if glibc is None or glibc < MIN_GLIBC or thp_mode not in ("always", "madvise"):
        return None
    added = [HUGEPAGE_TUNABLE]
    if malloc_arenas is not None and glibc_tunable(environ, ARENA_MAX_KEY) is None:
        added.append(f"{ARENA_MAX_KEY}={malloc_arenas}")
    return {**environ, "GLIBC_TUNABLES": ":".join([tunables, *added] if tunables else added)}


ALLOCATOR_OPT_OUT_VARIABLE = "EFFNET_JAX_NO_ALLOCATOR_TUNING"
# glibc's <malloc.h> parameter numbers.
M_TRIM_THRESHOLD, M_MMAP_MAX, M_ARENA_MAX = -1, -4, -8
ALLOCATOR_SETTINGS = ((M_MMAP_MAX, 0), (M_TRIM_THRESHOLD, 2**31 - 1))
ONE_ARENA = ((M_ARENA_MAX, 1),)  # unless the process set its limit: see the module docstring
_allocator_tuned = False


def glibc_tunable(environ: Mapping[str, str], key: str) -> str | None:
    """The value ``GLIBC_TUNABLES`` in ``environ`` gives glibc's tunable ``key``, or ``None``."""
    for tunable in environ.get("GLIBC_TUNABLES", "").split(":"):
        name, _, value = tunable.partition("=")
        if name.strip() == key:
            return value.strip()
    return None


def allocator_settings(environ: Mapping[str, str]) -> tuple[tuple[int, int], ...]:
    """The ``mallopt`` (parameter, value) pairs ``tune_allocator`` sets: the heap settings, plus
    one arena unless ``GLIBC_TUNABLES`` sets the arena limit itself (as the CLI's restart does)."""
    explicit = glibc_tunable(environ, ARENA_MAX_KEY) is not None
    return ALLOCATOR_SETTINGS if explicit else ALLOCATOR_SETTINGS + ONE_ARENA


def allocator_tuning_applies(environ: Mapping[str, str], glibc: tuple[int, int] | None, backend: str) -> bool:
    """Whether ``tune_allocator`` should act: glibc, JAX on the CPU, not opted out."""
    return glibc is not None and backend == "cpu" and environ.get(ALLOCATOR_OPT_OUT_VARIABLE, "") in ("", "0")


def tune_allocator() -> bool:
    """Sets glibc's ``mallopt`` parameters so XLA:CPU's per-call scratch memory is reused rather
    than mapped and page-faulted in again at every call (see the module docstring); returns
    whether they were set. Idempotent; does nothing off glibc, off the CPU backend, or with
    ``EFFNET_JAX_NO_ALLOCATOR_TUNING=1``."""
    global _allocator_tuned
    if _allocator_tuned:
        return True
    if not allocator_tuning_applies(os.environ, glibc_version(), expected_backend(os.environ)):
        return False
    import ctypes

    settings = allocator_settings(os.environ)
    try:
        libc = ctypes.CDLL(None)
        done = all(libc.mallopt(parameter, value) == 1 for parameter, value in settings)
    except (OSError, AttributeError):
        return False
    if done and ONE_ARENA[0] in settings:  # the compiler shares the programs' heap: effnet_jax.heap
        from effnet_jax import heap

        heap.seal_after_each_compile()
    _allocator_tuned = done
    return done


def tune_cpu(many_steps_per_call: bool = True) -> bool:
    """Tunes this process's glibc allocator for XLA:CPU, as the ``effnet-jax`` command runs; call it
    first thing in an entry script (before JAX starts). Returns whether the allocator was tuned.

    What it does (only where JAX will compute on the CPU, on glibc; see the module docstring):

    * ``many_steps_per_call=True`` (the library's multi-step loop, the CLI): re-executes the
      program once with glibc's huge pages and per-thread arenas (``restart_with_hugepages``),
      then keeps each call's scratch memory mapped (``tune_allocator``);
    * ``False`` (a plain loop of one jitted step per call): no restart; one malloc arena, the
      scratch kept mapped, and the compiler's leftover heap holes sealed (``effnet_jax.heap``).

    The cost is memory: the process keeps its peak heap for its lifetime (for the seed network
    at batch 128 a peak resident 1.0 GB untuned, up to 2.4-3.6 GB tuned).
    ``EFFNET_JAX_NO_HUGEPAGES=1``, ``EFFNET_JAX_NO_ALLOCATOR_TUNING=1`` and
    ``EFFNET_JAX_NO_HEAP_SEAL=1`` opt out of each part.
    """
    if many_steps_per_call:
        restart_with_hugepages(MANY_STEPS_PER_CALL_ARENAS)
    return tune_allocator()


def restart_with_hugepages(malloc_arenas: int | None = None) -> None:
    """Re-executes this program (same interpreter, same arguments) with huge pages for large
    allocations, when ``hugepage_environment`` says that changes something (a CPU backend
    only); otherwise returns. ``malloc_arenas`` also sets glibc's arena limit (the CLI passes
    ``MANY_STEPS_PER_CALL_ARENAS``; without it ``tune_allocator`` keeps one arena, better for
    one step per call).

    Call it first thing in a program's entry point, before any work (and before JAX starts):
    the process image is replaced, so nothing done earlier survives.
    """
    environment = hugepage_environment(os.environ, glibc_version(), transparent_hugepage_mode(),
                                       expected_backend(os.environ), malloc_arenas)
    if environment is None:
        return
    for stream in (sys.stdout, sys.stderr):  # ``None`` where the stream was closed (``>&-``)
        if stream is not None:
            stream.flush()
    os.execve(sys.executable, [sys.executable, *sys.orig_argv[1:]], environment)
