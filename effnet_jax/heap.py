"""Keeps the compiler's leftovers out of the running program's way, in a one-arena process.

With glibc limited to one malloc arena (``effnet_jax.host``: what ``import effnet_jax`` sets for
a plain script), XLA's compiler and the programs it compiled share one heap. A compile
allocates and frees hundreds of MB around the few objects it keeps (the executable, its
thunks), and leaves ~20,000 free blocks of every size scattered over the heap (~190 MB for
the seed network's train step). Every later step's ``malloc`` then sorts its freed blocks into
glibc's size-sorted bins among those holes, walking their lists one cache miss at a time, under
the arena's lock: in a profile of a plain script's steady single steps ``_int_malloc`` took
4.4% of the time against 0.5% in a process that loaded the same program from the compilation
cache, with 4x the context switches of threads waiting for that lock (the 2026-11-30, commit 814a9e3 run in
``experiments/benchmarks/README.md``).

``seal_free_blocks`` takes those holes out of the bins: it allocates blocks from them, largest
first, until what ``malloc`` would hand out next comes from the top of the heap, and keeps
them for the process's lifetime (returning their whole pages to the kernel with
``MADV_DONTNEED``). The running program's blocks then come from, and return to, the top of the
heap, as in a process that loaded its programs from the compilation cache.
``seal_after_each_compile`` runs it after every XLA compile that leaves 64 MB or more in holes,
through ``jax.monitoring`` (0.1-0.2 s after the train step's ~6 s compile), and keeps at most
1 GB per process;
``effnet_jax.host.tune_allocator`` installs it where it sets one arena. Measured with
``experiments/benchmarks/research_loop.py`` (32x32x3, batch 128, five runs): the library's
multi-step loop 805-991 against 574-821 img/s without it, at 1.35-1.5 instead of 1.85 GB peak
memory; a plain script's single steps faster in four runs of five (823-962 against 641-819
img/s; 781 against 881 in the other).
Processes with per-thread arenas (the CLI) do not need it: their programs allocate from their
own threads' arenas, away from the compiler's. ``EFFNET_JAX_NO_HEAP_SEAL=1`` opts out.
"""

from __future__ import annotations

import ctypes
import os
import threading

# Holes below this sit in glibc's exact-size small bins, found in O(1); only the size-sorted
# large bins (1 KiB and up) cost a walk.
MIN_SEALED_BYTES = 1024
# A compile that leaves less than this in holes (JAX's many small programs) is not worth sealing.
MIN_HOLES_TO_SEAL = 64 << 20
# At most this much sealed per process: one that compiles again and again (a notebook, a test
# suite) would otherwise keep every compile's holes.
MAX_SEALED_BYTES = 1 << 30
BACKEND_COMPILE_EVENT = "/jax/core/compile/backend_compile_duration"
OPT_OUT_VARIABLE = "EFFNET_JAX_NO_HEAP_SEAL"  # keep the holes reusable: less memory, slower steps
PAGE = 4096
MADV_DONTNEED = 4


class _MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]


_libc = None
_held: list[int] = []  # the sealed blocks: never freed
_lock = threading.RLock()  # compiles can finish on several threads at once
_installed = False
_sealed_total = 0


def _glibc():
    """glibc's functions through ctypes, or ``None`` where they are missing (not glibc, < 2.33)."""
    global _libc
    if _libc is None:
        try:
            libc = ctypes.CDLL(None)
            libc.mallinfo2.restype = _MallInfo2
            libc.sbrk.restype, libc.sbrk.argtypes = ctypes.c_void_p, [ctypes.c_ssize_t]
            libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
            libc.free.argtypes = [ctypes.c_void_p]
            libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
        except (OSError, AttributeError):
            libc = False
        _libc = libc
    return _libc or None


def free_hole_bytes() -> int | None:
    """Bytes free inside glibc's heap below its top chunk (holes), or ``None`` off glibc."""
    libc = _glibc()
    if libc is None:
        return None
    info = libc.mallinfo2()
    return info.fordblks - info.keepcost


def seal_free_blocks(min_bytes: int = MIN_SEALED_BYTES, budget: int | None = None, min_holes: int = 0) -> int:
    """Allocates and keeps the main arena's free blocks of at least ``min_bytes`` (largest
    first), so later allocations come from the top of the heap; returns the bytes sealed. Does
    nothing when the holes come to less than ``min_holes``. Never seals more than ``budget``
    bytes, nor more than the holes there were, so a heap it misreads (memory not from ``brk``,
    another thread freeing at the top meanwhile) costs at most that."""
    libc = _glibc()
    if libc is None:
        return 0
    with _lock:
        info = libc.mallinfo2()  # walks every free chunk: read once
        top_start = libc.sbrk(0) - info.keepcost  # the top chunk ends at the program break
        holes = info.fordblks - info.keepcost
        if holes < min_holes:
            return 0
        budget = holes if budget is None else min(budget, holes)
        size, sealed = 1 << max(budget.bit_length() - 1, 0), 0
        while size >= min_bytes:
            if sealed + size > budget:
                size //= 2
                continue
            block = libc.malloc(size)
            if block and block < top_start:  # carved from a hole: keep it
                _held.append(block)
                sealed += size
                start, end = -(-block // PAGE) * PAGE, (block + size) // PAGE * PAGE
                if end > start:
                    libc.madvise(start, end - start, MADV_DONTNEED)  # its whole pages back to the kernel
                continue
            if block:
                libc.free(block)  # from the top: back where it came from
            size //= 2
        return sealed


def seal_if_worth_it() -> int:
    """``seal_free_blocks`` when the holes come to ``MIN_HOLES_TO_SEAL`` or more and the
    process has sealed less than ``MAX_SEALED_BYTES`` so far; returns the bytes sealed."""
    global _sealed_total
    with _lock:  # the cap's check and its update together, or two compiles could both pass it
        if _sealed_total >= MAX_SEALED_BYTES:
            return 0
        sealed = seal_free_blocks(budget=MAX_SEALED_BYTES - _sealed_total, min_holes=MIN_HOLES_TO_SEAL)
        _sealed_total += sealed
        return sealed


def seal_after_each_compile() -> bool:
    """Registers ``seal_if_worth_it`` to run after every XLA compile (a ``jax.monitoring``
    listener); returns whether it is installed: not off glibc, nor with
    ``EFFNET_JAX_NO_HEAP_SEAL=1``. Idempotent."""
    global _installed
    if _installed:
        return True
    if os.environ.get(OPT_OUT_VARIABLE, "") not in ("", "0") or _glibc() is None:
        return False
    import jax.monitoring

    def on_event(event: str, duration: float, **kwargs) -> None:
        if event == BACKEND_COMPILE_EVENT:
            seal_if_worth_it()

    jax.monitoring.register_event_duration_secs_listener(on_event)
    _installed = True
    return True
