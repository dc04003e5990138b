"""Huge pages for XLA:CPU's scratch memory: when the restart applies, and that it happens once."""

import json
import os
import subprocess
import sys

import pytest

from effnet_jax import host

ELIGIBLE = dict(glibc=(2, 36), thp_mode="madvise")


def test_environment_adds_the_tunable_and_keeps_the_rest():
    env = host.hugepage_environment({"PATH": "/bin"}, **ELIGIBLE)
    assert env == {"PATH": "/bin", "GLIBC_TUNABLES": host.HUGEPAGE_TUNABLE}
    env = host.hugepage_environment({"GLIBC_TUNABLES": "glibc.malloc.arena_max=2"}, **ELIGIBLE)
    assert env["GLIBC_TUNABLES"] == f"glibc.malloc.arena_max=2:{host.HUGEPAGE_TUNABLE}"


@pytest.mark.parametrize("environ,glibc,thp_mode", [
    ({"GLIBC_TUNABLES": "glibc.malloc.hugetlb=0"}, (2, 36), "madvise"),  # the user's choice stands
    ({host.OPT_OUT_VARIABLE: "1"}, (2, 36), "always"),
    ({}, (2, 34), "madvise"),  # glibc without the tunable
    ({}, None, "madvise"),  # not glibc
    ({}, (2, 36), "never"),
    ({}, (2, 36), None),  # no transparent huge pages
])
def test_environment_is_none_when_a_restart_would_change_nothing(environ, glibc, thp_mode):
    assert host.hugepage_environment(environ, glibc, thp_mode) is None


def test_transparent_hugepage_mode_reads_the_bracketed_word(tmp_path):
    control = tmp_path / "enabled"
    control.write_text("always [madvise] never\n")
    assert host.transparent_hugepage_mode(str(control)) == "madvise"
    assert host.transparent_hugepage_mode(str(tmp_path / "missing")) is None


def test_restart_sets_the_tunable_once_and_keeps_the_arguments():
    code = ("import os, sys; from effnet_jax import host; print('start', flush=True); "
            "host.restart_with_hugepages(); print(sys.argv[1:], os.environ.get('GLIBC_TUNABLES'))")
    env = {k: v for k, v in os.environ.items() if k not in ("GLIBC_TUNABLES", host.OPT_OUT_VARIABLE)}
    done = subprocess.run([sys.executable, "-c", code, "a", "b"], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    applies = host.hugepage_environment(env, host.glibc_version(), host.transparent_hugepage_mode()) is not None
    tunables = host.HUGEPAGE_TUNABLE if applies else None
    expected = ("start\n" * (2 if applies else 1)) + f"['a', 'b'] {tunables}\n"
    assert done.stdout == expected


@pytest.mark.parametrize("environ, plugins, backend", [
    ({}, [], "cpu"),
    ({}, ["xla_cuda12"], "gpu"),
    ({}, ["libtpu"], "tpu"),
    ({"JAX_PLATFORMS": "cpu"}, ["xla_cuda12"], "cpu"),  # forced to the CPU on a GPU host
    ({"JAX_PLATFORMS": "cuda,cpu"}, [], "gpu"),
    ({"JAX_PLATFORMS": "tpu"}, [], "tpu"),
])
def test_expected_backend_without_starting_jax(environ, plugins, backend):
    assert host.expected_backend(environ, plugins) == backend


@pytest.mark.parametrize("backend", ["gpu", "tpu"])
def test_no_restart_on_accelerator_backends(backend):
    assert host.hugepage_environment({}, backend=backend, **ELIGIBLE) is None
    assert host.hugepage_environment({}, backend="cpu", **ELIGIBLE) is not None


def test_cli_does_not_restart_when_jax_is_told_to_use_an_accelerator():
    code = ("import sys; from effnet_jax import host; print('start', flush=True); "
            "host.restart_with_hugepages(); print('end')")
    env = {k: v for k, v in os.environ.items() if k not in ("GLIBC_TUNABLES", host.OPT_OUT_VARIABLE)}
    done = subprocess.run([sys.executable, "-c", code], env={**env, "JAX_PLATFORMS": "tpu"},
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout == "start\nend\n"


@pytest.mark.parametrize("environ, glibc, backend, applies", [
    ({}, (2, 36), "cpu", True),
    ({host.ALLOCATOR_OPT_OUT_VARIABLE: "1"}, (2, 36), "cpu", False),
    ({}, None, "cpu", False),  # not glibc (musl, macOS)
    ({}, (2, 36), "gpu", False),
    ({}, (2, 36), "tpu", False),
])
def test_allocator_tuning_applies_on_glibc_cpu_hosts_only(environ, glibc, backend, applies):
    assert host.allocator_tuning_applies(environ, glibc, backend) is applies


def run_import_probe(*args, **extra_env):
    env = {k: v for k, v in os.environ.items() if k not in (host.ALLOCATOR_OPT_OUT_VARIABLE, "GLIBC_TUNABLES")}
    done = subprocess.run([sys.executable, os.path.join(os.path.dirname(__file__), "import_probe.py"), *args],
                          env={**env, **extra_env}, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.splitlines()[-1]), env


def test_importing_the_library_changes_nothing_in_the_process():
    out, _ = run_import_probe()
    assert out == {"config_unchanged": True, "listeners_unchanged": True, "mapped_after_import": True}


def test_tune_cpu_is_the_one_explicit_call_that_tunes_a_plain_script():
    out, env = run_import_probe("tune")
    if not host.allocator_tuning_applies(env, host.glibc_version(), host.expected_backend(env)):
        pytest.skip("no glibc CPU host: tune_cpu does nothing here")
    assert out["tuned"] and not out["mapped_after_tuning"]  # XLA's scratch stays in the heap
    assert out["listeners_added"] == 1  # the heap sealing after each compile (one arena)
    out, _ = run_import_probe("tune", **{host.ALLOCATOR_OPT_OUT_VARIABLE: "1"})
    assert not out["tuned"] and out["mapped_after_tuning"] and out["listeners_added"] == 0


@pytest.mark.parametrize("tunables, value", [
    (None, None),
    ("", None),
    ("glibc.malloc.hugetlb=1", "1"),
    ("glibc.malloc.tcache_count=0:glibc.malloc.hugetlb=2", "2"),
    ("glibc.malloc.hugetlbx=1", None),
])
def test_glibc_tunable_reads_one_key(tunables, value):
    environ = {} if tunables is None else {"GLIBC_TUNABLES": tunables}
    assert host.glibc_tunable(environ, host.HUGEPAGE_KEY) == value


def test_one_arena_unless_the_process_set_its_arena_limit():
    for environ in ({}, {"GLIBC_TUNABLES": host.HUGEPAGE_TUNABLE}):  # huge pages alone: one arena still
        assert dict(host.allocator_settings(environ))[host.M_ARENA_MAX] == 1
    explicit = dict(host.allocator_settings({"GLIBC_TUNABLES": f"{host.HUGEPAGE_TUNABLE}:{host.ARENA_MAX_KEY}=8"}))
    assert host.M_ARENA_MAX not in explicit
    for environ in ({}, {"GLIBC_TUNABLES": f"{host.ARENA_MAX_KEY}=8"}):  # the heap keeps the scratch either way
        settings = dict(host.allocator_settings(environ))
        assert settings[host.M_MMAP_MAX] == 0 and settings[host.M_TRIM_THRESHOLD] == 2**31 - 1


def test_environment_sets_the_arena_limit_only_when_asked_and_unset():
    assert host.hugepage_environment({}, malloc_arenas=8, **ELIGIBLE)["GLIBC_TUNABLES"] == (
        f"{host.HUGEPAGE_TUNABLE}:{host.ARENA_MAX_KEY}=8")
    assert host.hugepage_environment({}, **ELIGIBLE)["GLIBC_TUNABLES"] == host.HUGEPAGE_TUNABLE
    mine = {"GLIBC_TUNABLES": f"{host.ARENA_MAX_KEY}=2"}  # the user's limit stands
    assert host.hugepage_environment(mine, malloc_arenas=8, **ELIGIBLE)["GLIBC_TUNABLES"] == (
        f"{host.ARENA_MAX_KEY}=2:{host.HUGEPAGE_TUNABLE}")


def test_cli_restarts_with_the_arena_limit_and_keeps_per_thread_arenas():
    code = ("import os, sys; from effnet_jax import cli, host; "
            "print(os.environ.get('GLIBC_TUNABLES'), host.allocator_settings(os.environ) == host.ALLOCATOR_SETTINGS, "
            "flush=True); sys.argv = ['effnet-jax', '--help']; cli.main()")
    env = {k: v for k, v in os.environ.items() if k not in ("GLIBC_TUNABLES", host.OPT_OUT_VARIABLE)}
    if host.hugepage_environment(env, host.glibc_version(), host.transparent_hugepage_mode()) is None:
        pytest.skip("no huge pages for malloc on this host: the CLI does not restart")
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    before, after = done.stdout.splitlines()[:2]  # the process as started, then as the CLI restarted it
    assert before == "None False"
    assert after == f"{host.HUGEPAGE_TUNABLE}:{host.ARENA_MAX_KEY}={host.MANY_STEPS_PER_CALL_ARENAS} True"
