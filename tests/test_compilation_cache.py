"""The persistent compilation cache: where it goes, that a second process-like start loads
programs instead of compiling them, and that a corrupt entry is recompiled, never used."""

import glob
import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.experimental.compilation_cache import compilation_cache as jax_cache

from effnet_jax.compilation_cache import VARIABLE, cache_directory, default_directory, enable_compilation_cache
from effnet_jax.data.idx import DEBIAN_FASHION_MNIST_DIR, idx_files_present


def test_directory_choice():
    assert default_directory({"XDG_CACHE_HOME": "/x"}) == "/x/effnet_jax/xla"
    assert default_directory({}).endswith(os.path.join(".cache", "effnet_jax", "xla"))
    assert cache_directory({"XDG_CACHE_HOME": "/x"}, None) == "/x/effnet_jax/xla"
    assert cache_directory({VARIABLE: "/elsewhere"}, None) == "/elsewhere"
    for off in ("0", "off", "OFF", "false"):
        assert cache_directory({VARIABLE: off}, None) is None
    # JAX's own setting (e.g. JAX_COMPILATION_CACHE_DIR) wins: nothing is changed.
    assert cache_directory({VARIABLE: "/elsewhere"}, "/jax/own") is None


@pytest.fixture
def fresh_cache():
    """Restores JAX's cache settings (and forgets the cache) after the test."""
    keys = ("jax_compilation_cache_dir", "jax_compilation_cache_max_size", "jax_persistent_cache_min_compile_time_secs")
    before = {key: getattr(jax.config, key) for key in keys}
    jax_cache.reset_cache()
    yield
    for key, value in before.items():
        jax.config.update(key, value)
    jax_cache.reset_cache()
    jax.clear_caches()


def _hits(run):
    """(result of ``run()``, persistent-cache hits while it ran)."""
    hits = []
    listener = lambda event, **kwargs: hits.append(event) if event == "/jax/compilation_cache/cache_hits" else None
    jax.monitoring.register_event_listener(listener)
    try:
        return run(), len(hits)
    finally:
        jax.monitoring.unregister_event_listener(listener)


def test_programs_are_loaded_back_and_corrupt_entries_recompiled(fresh_cache, tmp_path):
    directory = str(tmp_path / "xla")
    assert enable_compilation_cache(directory) == directory
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)  # cache even this small program
    x = jnp.arange(16.0).reshape(4, 4)
    program = lambda: np.asarray(jax.jit(lambda a: jnp.tanh(a) @ a.T + 1.0)(x))
    expected, hits = _hits(program)
    assert hits == 0 and glob.glob(os.path.join(directory, "*-cache"))
    jax.clear_caches()  # as a new process would start: nothing compiled in memory
    again, hits = _hits(program)
    assert hits >= 1
    np.testing.assert_array_equal(again, expected)
    for path in glob.glob(os.path.join(directory, "*-cache")):  # every entry damaged
        data = bytearray(open(path, "rb").read())
        data[len(data) // 2:] = bytes(len(data) - len(data) // 2)
        open(path, "wb").write(bytes(data))
    jax.clear_caches()
    with pytest.warns(UserWarning, match="Error reading persistent compilation cache entry"):
        recompiled, hits = _hits(program)
    assert hits == 0
    np.testing.assert_array_equal(recompiled, expected)


def test_an_entry_left_half_written_is_removed_and_the_cache_keeps_working(fresh_cache, tmp_path):
    """JAX writes a program, then its last-use time, and reads every entry's time before each
    write: a process killed between the two used to stop every later write in the directory."""
    directory = str(tmp_path / "xla")
    enable_compilation_cache(directory)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    x = jnp.arange(16.0).reshape(4, 4)
    first = lambda: np.asarray(jax.jit(lambda a: jnp.tanh(a) @ a.T + 1.0)(x))
    expected = first()
    entries = glob.glob(os.path.join(directory, "*-cache"))
    assert entries
    for entry in entries:  # killed between the two writes, the program cut short
        os.remove(entry[: -len("-cache")] + "-atime")
        with open(entry, "r+b") as f:
            f.truncate(10)
    jax_cache.reset_cache()  # a new process starting
    jax.clear_caches()
    assert enable_compilation_cache(directory) == directory
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    assert not any(os.path.exists(entry) for entry in entries)  # incomplete entries removed
    second = lambda: np.asarray(jax.jit(lambda a: jnp.sin(a) @ a + 2.0)(x))
    second()
    assert len(glob.glob(os.path.join(directory, "*-cache"))) >= 1  # new programs are kept again
    np.testing.assert_array_equal(first(), expected)
    jax.clear_caches()
    again, hits = _hits(first)
    assert hits >= 1
    np.testing.assert_array_equal(again, expected)


def test_an_uncreatable_directory_leaves_the_cache_off(fresh_cache, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    assert enable_compilation_cache(str(blocker / "xla")) is None
    assert jax.config.jax_compilation_cache_dir != str(blocker / "xla")


@pytest.mark.slow
@pytest.mark.skipif(not idx_files_present(DEBIAN_FASHION_MNIST_DIR),
                    reason="Debian's dataset-fashion-mnist is not installed (make data installs it)")
def test_the_cli_keeps_its_programs_for_the_next_run(tmp_path):
    # Two CLI processes, same config: the first fills the cache, the second compiles nothing new
    # (loads every program) and computes the same result. Every program is stored: with the CLI's
    # threshold (0.5 s of compiling) one that compiles in about that time is stored by one run only.
    environment = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache"),
                   "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0"}
    environment.pop("JAX_COMPILATION_CACHE_DIR", None)
    environment.pop(VARIABLE, None)
    directory = default_directory(environment)

    def train(workdir):
        done = subprocess.run(
            [sys.executable, "-m", "effnet_jax.cli", "train", "--config", "experiments/configs/fashion_mnist.py",
             "--workdir", str(tmp_path / workdir), "data.train_subset=640", "data.validation_size=128",
             "data.test_subset=256", "train.epochs=1", "log.progress=False", "log.plot=False"],
            env=environment, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr[-2000:]
        return json.loads(done.stdout[done.stdout.index("{"):])

    first = train("first")
    entries = sorted(glob.glob(os.path.join(directory, "*-cache")))
    assert any(os.path.basename(e).startswith("jit_run-") for e in entries), entries  # the train step
    second = train("second")
    assert sorted(glob.glob(os.path.join(directory, "*-cache"))) == entries
    assert second["test_accuracy"] == first["test_accuracy"] and second["train_loss"] == first["train_loss"]


SEVERAL_CPU_DEVICES = """
import os, sys, jax, jax.numpy as jnp
from effnet_jax.compilation_cache import enable_compilation_cache
from effnet_jax.parallel.mesh import data_placement, population_placement
directory = sys.argv[1]
assert enable_compilation_cache(directory) == directory
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
data_placement(8, 8, data_devices=1)  # one device: the cache stays on
jax.jit(lambda a: jnp.tanh(a) @ a.T)(jnp.ones((4, 4))).block_until_ready()
stored = len(os.listdir(directory))
{placement}
jax.jit(lambda a: jnp.sin(a) @ a.T)(jnp.ones((4, 4))).block_until_ready()  # a new program: not stored
print("RESULT", stored, len(os.listdir(directory)), jax.config.jax_enable_compilation_cache,
      enable_compilation_cache(directory))
"""


@pytest.mark.parametrize("placement", ["data_placement(8, 8)", "population_placement(4, 8, 8)"])
def test_placements_over_several_cpu_devices_turn_the_cache_off(tmp_path, placement):
    """Programs over several CPU devices went wrong when loaded from the cache (a collective
    hung; two processes computed a wrong test loss): such placements turn it off first, and
    enabling it again on such a backend does nothing."""
    directory = str(tmp_path / "xla")
    env = {**os.environ, "JAX_NUM_CPU_DEVICES": "2", "JAX_PLATFORMS": "cpu"}
    done = subprocess.run([sys.executable, "-c", SEVERAL_CPU_DEVICES.format(placement=placement), directory],
                          env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    stored, after, enabled, enabled_again = done.stdout.split("RESULT ")[1].split()
    assert int(stored) >= 2  # the one-device program (and its time) went in ...
    assert after == stored and enabled == "False" and enabled_again == "None"  # ... nothing after


def test_entries_are_decompressed_once_until_they_change(tmp_path, monkeypatch):
    """A process start checks only entries it has not found whole before (by size and time):
    decompressing the whole cache at every start grew with the cache (~1.3 s per 100 MB)."""
    from effnet_jax import compilation_cache

    directory = tmp_path / "xla"
    directory.mkdir()
    from jax._src.compilation_cache import compress_executable

    for key in ("a", "b"):
        (directory / f"{key}-cache").write_bytes(compress_executable(b"program " + key.encode() * 100))
        (directory / f"{key}-atime").write_bytes(b"0")
    checked = []
    readable = compilation_cache._readable
    monkeypatch.setattr(compilation_cache, "_readable", lambda path: checked.append(os.path.basename(path)) or readable(path))
    assert compilation_cache.remove_incomplete_entries(str(directory)) == []
    assert sorted(checked) == ["a-cache", "b-cache"]
    checked.clear()
    assert compilation_cache.remove_incomplete_entries(str(directory)) == [] and checked == []  # nothing new
    (directory / "b-cache").write_bytes(b"garbage, not a program")  # changed since: checked again, removed
    assert compilation_cache.remove_incomplete_entries(str(directory)) == ["b"] and checked == ["b-cache"]
    assert sorted(os.listdir(directory)) == [".effnet_jax_verified.json", ".lockfile", "a-atime", "a-cache"]
    (directory / ".effnet_jax_verified.json").write_text("{damaged")  # bookkeeping only: all checked again
    checked.clear()
    assert compilation_cache.remove_incomplete_entries(str(directory)) == [] and checked == ["a-cache"]
