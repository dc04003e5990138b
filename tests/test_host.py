"""Huge pages for XLA:CPU's scratch memory: when the restart applies, and that it happens once."""

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


def test_importing_the_library_tunes_the_allocator_in_a_plain_script():
    code = "import effnet_jax.host as h, effnet_jax; print(h._allocator_tuned)"
    env = {k: v for k, v in os.environ.items() if k != host.ALLOCATOR_OPT_OUT_VARIABLE}
    expected = host.allocator_tuning_applies(env, host.glibc_version(), host.expected_backend(env))
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == str(expected)
    done = subprocess.run([sys.executable, "-c", code], env={**env, host.ALLOCATOR_OPT_OUT_VARIABLE: "1"},
                          capture_output=True, text=True, timeout=120)
    assert done.stdout.strip() == "False"


@pytest.mark.parametrize("tunables, enabled", [
    (None, False),
    ("", False),
    ("glibc.malloc.hugetlb=1", True),
    ("glibc.malloc.tcache_count=0:glibc.malloc.hugetlb=2", True),
    ("glibc.malloc.hugetlb=0", False),
    ("glibc.malloc.hugetlbx=1", False),
])
def test_hugepages_enabled_reads_glibc_tunables(tunables, enabled):
    environ = {} if tunables is None else {"GLIBC_TUNABLES": tunables}
    assert host.hugepages_enabled(environ) is enabled


def test_one_arena_only_without_huge_pages():
    without = dict(host.allocator_settings({}))
    with_hugepages = dict(host.allocator_settings({"GLIBC_TUNABLES": host.HUGEPAGE_TUNABLE}))
    assert without[host.M_ARENA_MAX] == 1 and host.M_ARENA_MAX not in with_hugepages
    for settings in (without, with_hugepages):  # the heap keeps the scratch memory either way
        assert settings[host.M_MMAP_MAX] == 0 and settings[host.M_TRIM_THRESHOLD] == 2**31 - 1
