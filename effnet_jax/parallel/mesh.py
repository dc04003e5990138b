"""Device meshes and shardings: the ``data`` axis splits batches, ``population`` splits members.

Single-device runs need none of this (every function returns ``None`` then), and the steps
themselves never change: ``jit`` with these shardings partitions the same pure programs.
"""

from __future__ import annotations

import dataclasses

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P


def largest_divisor_at_most(n: int, limit: int) -> int:
    """The largest ``d <= limit`` that divides ``n``."""
    return max(d for d in range(1, min(n, limit) + 1) if n % d == 0)


@dataclasses.dataclass(frozen=True)
class PopulationPlacement:
    """Shardings of a sweep over a ``(population, data)`` mesh."""

    mesh: Mesh

    @property
    def population(self) -> NamedSharding:
        """Leading member axis split over ``population`` (states, hparams, metrics)."""
        return NamedSharding(self.mesh, P("population"))

    @property
    def member_axis(self) -> NamedSharding:
        return self.population

    @property
    def member_batches(self) -> NamedSharding:
        """Per-member batches ``[K, M, B, ...]``: members over ``population``, images over ``data``."""
        return NamedSharding(self.mesh, P(None, "population", "data"))

    @property
    def replicated(self) -> NamedSharding:
        """Shared batches ``[K, B, ...]``: images over ``data``, the same on every population group."""
        return NamedSharding(self.mesh, P(None, "data"))


def population_placement(num_members: int, devices=None) -> PopulationPlacement | None:
    """A ``(population, data)`` mesh using every device: as many population groups as divide
    the member count, the remaining factor on ``data``. ``None`` on a single device."""
    devices = jax.devices() if devices is None else devices
    if len(devices) == 1:
        return None
    groups = largest_divisor_at_most(num_members, len(devices))
    while len(devices) % groups:
        groups -= 1
    grid = np.asarray(devices).reshape(groups, len(devices) // groups)
    return PopulationPlacement(Mesh(grid, ("population", "data")))
