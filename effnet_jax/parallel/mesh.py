"""Device meshes and shardings: the ``data`` axis splits batches, ``population`` splits members.

Single-device runs need none of this (every function returns ``None`` then), and the steps
themselves never change: ``jit`` with these shardings partitions the same pure programs (a
sweep's population groups each run their members inside ``shard_map``: ``PopulationPlacement.
per_group``).
A placement over several CPU devices turns the persistent compilation cache off first
(``effnet_jax.compilation_cache``: such programs went wrong when loaded from it).
"""

from __future__ import annotations

import dataclasses

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from effnet_jax.compilation_cache import keep_off_for_cpu_collectives
from effnet_jax.errors import ConfigError

# The JAX release whose SPMD partitioner split vmapped (grouped) convolutions wrongly, hence
# ``PopulationPlacement.per_group``'s shard_map; tests/test_jax_workarounds.py says when to check again.
SPMD_GROUPED_CONVOLUTION_BUG_SEEN_WITH = "0.10.2"


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
        raise ConfigError(f"parallel.data_devices={count} exceeds the {available} devices available "
                          f"({jax.devices()[0].platform}, {jax.process_count()} process(es))")
    if count < available and jax.process_count() > 1:
        raise ConfigError("a multi-process run uses every device: leave parallel.data_devices at 0")
    for name, size in (("train.batch_size", batch_size), ("train.eval_batch_size", eval_batch_size)):
        if size % count:
            raise ConfigError(f"{name}={size} is not divisible by the {count} devices of the data axis; "
                              f"use a multiple of {count}")
    devices = jax.devices()[:count]
    keep_off_for_cpu_collectives(devices)
    return DataPlacement(Mesh(np.asarray(devices), ("data",)))


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
    """Shardings of a sweep over a ``(population, data)`` mesh.

    ``members`` real members run as ``padded`` members (a multiple of the ``population`` axis):
    the extra ones are copies of the last real member whose results are dropped. Members never
    interact, so padding changes nothing for the real ones.
    """

    mesh: Mesh
    members: int
    padded: int

    @property
    def population(self) -> NamedSharding:
        """Leading member axis split over ``population`` (states, hparams, metrics)."""
        return NamedSharding(self.mesh, P("population"))

    @property
    def replicated(self) -> NamedSharding:
        """A full copy on every device (checkpointed real members, before padding)."""
        return NamedSharding(self.mesh, P())

    @property
    def member_batches(self) -> NamedSharding:
        """Per-member batches ``[K, M, B, ...]``: members over ``population``, images over ``data``."""
        return NamedSharding(self.mesh, P(None, "population", "data"))

    @property
    def shared_batches(self) -> NamedSharding:
        """Shared batches ``[K, B, ...]`` (and eval sets): images over ``data``, the same on every
        population group."""
        return NamedSharding(self.mesh, P(None, "data"))

    @property
    def shape(self) -> dict[str, int]:
        """Axis sizes, e.g. ``{'population': 4, 'data': 2}``."""
        return dict(self.mesh.shape)

    def per_group(self, fn, in_specs, out_specs):
        """``fn`` run by each population group on its own members: ``shard_map`` manual over
        ``population`` only, so the ``data`` axis stays ``jit``'s (batches split, BatchNorm sums
        all-reduced). Specs name the ``population`` axis alone (``P('population')``: a leading
        member axis; ``P()``: the same on every group).

        Why not ``jit`` shardings alone: ``vmap`` turns a convolution whose input and kernel both
        carry the member axis into one grouped convolution (members as feature groups), and XLA's
        SPMD partitioner (JAX 0.10, Shardy and GSPMD alike) computes such a convolution wrongly
        when the groups are split over devices; ``tests/test_parallel.py`` shows it on 8 CPU
        devices. Inside ``shard_map`` each group's convolutions are whole, on its own device(s).
        (``check_vma=False``: nothing inside communicates over ``population``, and the step's
        ``lax.cond`` on the shared step count mixes group-varying and shared values.)
        """
        return jax.shard_map(fn, mesh=self.mesh, in_specs=in_specs, out_specs=out_specs,
                             axis_names={"population"}, check_vma=False)


def padded_member_count(members: int, shards: int) -> int:
    """The smallest multiple of ``shards`` that holds ``members``."""
    return -(-members // shards) * shards


def plan_population_mesh(members: int, devices: int, batch_sizes: tuple[int, ...],
                         shards: int = 0) -> tuple[int, int]:
    """``(population, data)`` axis sizes for ``members`` members on ``devices`` devices.

    Every device does the same work: each of the ``population`` groups holds
    ``ceil(members / population)`` members (padding the last group) and each of its ``data``
    devices a ``1/data`` slice of every batch. So the work per device is proportional to
    ``padded members / devices``, and the automatic choice (``shards=0``) takes the population
    size with the fewest padded members, and among those the largest (fewer devices per
    member: smaller gradient all-reduces). E.g. on 8 devices: 2 members -> 2 x 4, 5 -> 1 x 8
    (no padding; every device trains all 5 on 1/8 of each batch), 12 -> 4 x 2, 16 -> 8 x 1.
    ``shards`` > 0 fixes the population size (e.g. one member per device, padding the rest).

    Raises:
      ValueError: a ``shards`` that does not divide ``devices``, or batch sizes that the
        resulting data axis does not divide (naming what would work).
    """
    if members < 1 or devices < 1:
        raise ConfigError(f"need at least one member and one device, got {members} and {devices}")
    fits = lambda p: devices % p == 0 and all(b % (devices // p) == 0 for b in batch_sizes)
    if shards:
        if shards < 0 or devices % shards:
            divisors = [p for p in range(1, devices + 1) if devices % p == 0]
            raise ConfigError(f"parallel.population_shards={shards} must divide the {devices} devices of the "
                              f"sweep; use one of {divisors} (or 0 = automatic)")
        if not fits(shards):
            raise ConfigError(f"parallel.population_shards={shards} leaves a data axis of {devices // shards} "
                              f"devices, which does not divide train.batch_size/eval_batch_size {batch_sizes}")
        return shards, devices // shards
    candidates = [p for p in range(1, devices + 1) if fits(p)]  # p = devices always fits
    best = min(candidates, key=lambda p: (padded_member_count(members, p), -p))
    return best, devices // best


def population_placement(num_members: int, batch_size: int, eval_batch_size: int, shards: int = 0,
                         num_devices: int = 0) -> PopulationPlacement | None:
    """The sweep's mesh over the first ``num_devices`` devices (0 = all); ``None`` on one device.

    See ``plan_population_mesh`` for the axis sizes and the padding.

    Raises:
      ValueError: more devices asked for than exist, or a mesh that cannot work (see
        ``plan_population_mesh``), before anything compiles.
    """
    available = jax.devices()
    count = num_devices or len(available)
    if count > len(available):
        raise ConfigError(f"parallel.sweep_devices={count} exceeds the {len(available)} devices available "
                          f"({available[0].platform})")
    if count == 1:
        return None
    population, data = plan_population_mesh(num_members, count, (batch_size, eval_batch_size), shards)
    keep_off_for_cpu_collectives(available[:count])
    grid = np.asarray(available[:count]).reshape(population, data)
    return PopulationPlacement(Mesh(grid, ("population", "data")), num_members,
                               padded_member_count(num_members, population))
