"""Code that works around a bug of a specific JAX release names that release; when the installed
JAX is another, these fail and say what to re-check, so a workaround goes once JAX fixes its bug.

``constraints.txt`` pins the JAX the suite passes with: bumping it makes these fail until each
workaround has been re-checked against the new release (then remove it, or update its release).
"""

import jax
import pytest

from effnet_jax.compilation_cache import CPU_COLLECTIVES_CACHE_BUG_SEEN_WITH
from effnet_jax.parallel.mesh import SPMD_GROUPED_CONVOLUTION_BUG_SEEN_WITH

WORKAROUNDS = {
    "compilation_cache.keep_off_for_cpu_collectives (the persistent cache stays off for programs over "
    "several CPU devices)": (CPU_COLLECTIVES_CACHE_BUG_SEEN_WITH,
                            "enable the cache there and run tests/test_parallel.py twice with it filled"),
    "PopulationPlacement.per_group (each population group's members inside shard_map)":
        (SPMD_GROUPED_CONVOLUTION_BUG_SEEN_WITH,
         "run the sweep with plain jit shardings and tests/test_parallel.py's eight-device sweep test"),
}


@pytest.mark.parametrize("workaround", WORKAROUNDS)
def test_each_workaround_was_written_for_the_installed_jax(workaround):
    release, how = WORKAROUNDS[workaround]
    if jax.__version__ != release:
        pytest.fail(f"{workaround} works around jax {release}, installed is {jax.__version__}: {how}; "
                    "remove the workaround if that passes, else set its release to this one")
