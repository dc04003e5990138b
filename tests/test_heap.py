"""Sealing the compiler's leftover heap holes in one-arena processes (effnet_jax.heap).

Each test runs in its own interpreter: sealing keeps blocks for the process's lifetime, and
what it finds depends on that process's heap.
"""

import os
import subprocess
import sys

import pytest

from effnet_jax import heap, host

pytestmark = pytest.mark.skipif(heap._glibc() is None or host.glibc_version() < (2, 33),
                                reason="needs glibc's mallinfo2")

# Punches 200 holes of HOLE bytes between live blocks as large, in the main arena's heap.
MAKE_HOLES = """
HOLE = {hole}
import ctypes
libc = ctypes.CDLL(None)
libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
libc.sbrk.restype, libc.sbrk.argtypes = ctypes.c_void_p, [ctypes.c_ssize_t]
pairs = [(libc.malloc(HOLE), libc.malloc(HOLE)) for _ in range(200)]
for hole, _ in pairs:
    libc.free(hole)
"""


def run(code: str, **env) -> str:
    environ = {k: v for k, v in os.environ.items()
               if k not in ("GLIBC_TUNABLES", host.ALLOCATOR_OPT_OUT_VARIABLE, heap.OPT_OUT_VARIABLE)}
    done = subprocess.run([sys.executable, "-c", code], env={**environ, "JAX_PLATFORMS": "cpu", **env},
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return done.stdout.split()


def test_sealing_takes_the_holes_and_later_blocks_come_from_the_top():
    code = "import effnet_jax\nfrom effnet_jax import heap\n" + MAKE_HOLES.format(hole=65536) + """
before = heap.free_hole_bytes()
sealed = heap.seal_free_blocks()
after = heap.free_hole_bytes()
info = heap._glibc().mallinfo2()
top_start = libc.sbrk(0) - info.keepcost
block = libc.malloc(65536)
print(before, sealed, after, int(block >= top_start))
"""
    before, sealed, after, from_top = map(int, run(code))
    assert before >= 200 * 65536
    assert 200 * 65536 <= sealed <= before  # every punched hole, never more than there was
    assert after <= before - sealed + 4096
    assert from_top == 1


def test_a_plain_script_seals_after_a_compile_that_leaves_large_holes():
    hole = 512 << 10  # 200 of them: 100 MB, over MIN_HOLES_TO_SEAL
    code = ("import effnet_jax, jax, jax.numpy as jnp\nfrom effnet_jax import heap\n"
            "effnet_jax.tune_cpu(many_steps_per_call=False)\n" + MAKE_HOLES.format(hole=hole) + """
before = heap.free_hole_bytes()
value = jax.jit(lambda x: (x * 2).sum())(jnp.arange(4.0))
print(int(heap._installed), before, heap.free_hole_bytes(), float(value))
""")
    installed, before, after, value = run(code)
    assert installed == "1" and value == "12.0"
    assert int(before) >= 200 * hole and int(after) <= int(before) - 0.9 * 200 * hole  # the compile makes a few small ones


def test_small_holes_are_left_alone_and_a_process_seals_at_most_its_cap():
    code = "import effnet_jax\nfrom effnet_jax import heap\n" + MAKE_HOLES.format(hole=65536) + """
small = heap.seal_if_worth_it()  # 12.5 MB of holes: under MIN_HOLES_TO_SEAL
heap.MIN_HOLES_TO_SEAL, heap.MAX_SEALED_BYTES = 1 << 20, 5 << 20
first, second = heap.seal_if_worth_it(), heap.seal_if_worth_it()
print(small, first, second, heap.free_hole_bytes())
"""
    small, first, second, left = map(int, run(code))
    assert small == 0
    assert 4 << 20 <= first <= 5 << 20 and second == 0  # the cap, then nothing more
    assert left >= 200 * 65536 - (5 << 20)


@pytest.mark.parametrize("env", [
    {"GLIBC_TUNABLES": f"{host.ARENA_MAX_KEY}=8"},  # the CLI's per-thread arenas: nothing to seal
    {heap.OPT_OUT_VARIABLE: "1"},
    {host.ALLOCATOR_OPT_OUT_VARIABLE: "1"},
])
def test_no_sealing_with_per_thread_arenas_or_opted_out(env):
    assert run("import effnet_jax; from effnet_jax import heap; print(int(heap._installed))", **env) == ["0"]
