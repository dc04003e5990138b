"""Device meshes and shardings: the ``data`` axis splits batches, ``population`` splits members.

Single-device runs need none of this (every function returns ``None`` then), and the steps
themselves never change: ``jit`` with these shardings partitions the same pure programs.
"""

from __future__ import annotations

import dataclasses

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P


@dataclasses.dataclass(frozen=True)
class DataPlacement:
    """Data parallelism over a 1-D ``data`` mesh: batches split, the train state replicated.

    BatchNorm statistics are means over the (sharded) batch axis, so XLA computes them over the
    global batch with an all-reduce: N devices compute what one device would on the same batch.
    """

    mesh: Mesh

    @property
    def replicated(self) -> NamedSharding:
        """The train state and metrics: a full copy on every device."""
        return NamedSharding(self.mesh, P())

    @property
    def batches(self) -> NamedSharding:
        """Stacked batches ``[K, B, ...]`` (train chunks, eval sets): ``B`` split over ``data``."""
        return NamedSharding(self.mesh, P(None, "data"))

    @property
    def size(self) -> int:
        """Devices on the data axis."""
        return self.mesh.devices.size

    def local_rows(self, global_shape: tuple[int, ...]) -> slice:
        """The rows of the batch axis (axis 1) whose data this process supplies."""
        index_map = self.batches.addressable_devices_indices_map(global_shape)
        starts = [index[1].start or 0 for index in index_map.values()]
        stops = [global_shape[1] if index[1].stop is None else index[1].stop for index in index_map.values()]
        return slice(min(starts), max(stops))

    def put(self, host_batches):
        """Global device arrays from this process's rows of stacked host batches.

        ``host_batches`` holds the full global batches (every process computes the same,
        deterministic order); only this process's rows are transferred.
        """

        def put_one(array):
            rows = self.local_rows(array.shape)
            return jax.make_array_from_process_local_data(self.batches, array[:, rows], array.shape)

        return jax.tree.map(put_one, host_batches)


def data_placement(batch_size: int, eval_batch_size: int, data_devices: int = 0) -> DataPlacement:
    """A ``data`` mesh over ``data_devices`` devices (0 = all, across every process).

    Raises:
      ValueError: more devices asked for than exist, a subset of devices in a multi-process
        job, or a batch size the device count does not divide; all before compiling.
    """
    available = jax.device_count()
    count = data_devices or available
    if count > available:
        raise ValueError(f"parallel.data_devices={count} exceeds the {available} devices available "
                         f"({jax.devices()[0].platform}, {jax.process_count()} process(es))")
    if count < available and jax.process_count() > 1:
        raise ValueError("a multi-process run uses every device: leave parallel.data_devices at 0")
    for name, size in (("train.batch_size", batch_size), ("train.eval_batch_size", eval_batch_size)):
        if size % count:
            raise ValueError(f"{name}={size} is not divisible by the {count} devices of the data axis; "
                             f"use a multiple of {count}")
    return DataPlacement(Mesh(np.asarray(jax.devices()[:count]), ("data",)))


def to_host(tree):
    """Host numpy copies of (replicated) device arrays, also in multi-process runs."""

    def fetch(array):
        if isinstance(array, jax.Array) and not array.is_fully_addressable:
            return np.asarray(array.addressable_data(0))
        return np.asarray(array)

    return jax.tree.map(fetch, tree)


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
    def member_batches(self) -> NamedSharding:
        """Per-member batches ``[K, M, B, ...]``: members over ``population``, images over ``data``."""
        return NamedSharding(self.mesh, P(None, "population", "data"))

    @property
    def shared_batches(self) -> NamedSharding:
        """Shared batches ``[K, B, ...]`` (and eval sets): images over ``data``, the same on every
        population group."""
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
