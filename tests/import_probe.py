"""Run by tests/test_host.py in a fresh interpreter: what ``import effnet_jax`` (and building a
model) changes in the process (JAX's config, jax.monitoring listeners, glibc's allocator: whether
a 64 MiB ``malloc`` gets its own mapping), then, with ``tune``, what ``effnet_jax.tune_cpu`` does."""

import ctypes, json, sys
import jax
from jax._src import monitoring

class MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]

libc = ctypes.CDLL(None)
libc.mallinfo2.restype = MallInfo2
libc.malloc.restype = ctypes.c_void_p
libc.malloc.argtypes = [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]

def listeners():
    return {name: len(value) for name, value in vars(monitoring).items()
            if name.endswith("_listeners") and isinstance(value, list)}

def big_malloc_is_mapped():
    before = libc.mallinfo2().hblkhd
    block = libc.malloc(64 * 2**20)
    mapped = libc.mallinfo2().hblkhd - before >= 64 * 2**20
    libc.free(block)
    return mapped

config_before, listeners_before = dict(jax.config.values), listeners()
import effnet_jax
effnet_jax.EffNet().init(jax.random.key(0), jax.numpy.zeros((1, 32, 32, 3)))
out = {"config_unchanged": dict(jax.config.values) == config_before,
       "listeners_unchanged": listeners() == listeners_before, "mapped_after_import": big_malloc_is_mapped()}
if sys.argv[1:] == ["tune"]:
    out["tuned"] = effnet_jax.tune_cpu(many_steps_per_call=False)
    out["mapped_after_tuning"] = big_malloc_is_mapped()
    out["listeners_added"] = sum(listeners().values()) - sum(listeners_before.values())
print(json.dumps(out))
