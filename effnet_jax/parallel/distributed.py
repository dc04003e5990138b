"""Multi-host start-up with ``jax.distributed``: explicit flags or the cluster's environment."""

from __future__ import annotations

import jax

from effnet_jax.errors import ConfigError


def check_distributed_args(coordinator: str | None, num_processes: int | None, process_id: int | None) -> bool:
    """Validates explicit multi-host settings; returns whether they were given at all.

    Raises:
      ValueError: some but not all given, a process id out of range, or a malformed address.
    """
    given = [value is not None for value in (coordinator, num_processes, process_id)]
    if not any(given):
        return False
    if not all(given):
        raise ConfigError("--coordinator, --num-processes and --process-id must be given together")
    host, _, port = coordinator.rpartition(":")
    if not host or not port.isdigit():
        raise ConfigError(f"--coordinator must be HOST:PORT, got {coordinator!r}")
    if num_processes < 1:
        raise ConfigError(f"--num-processes must be >= 1, got {num_processes}")
    if not 0 <= process_id < num_processes:
        raise ConfigError(f"--process-id must be in [0, {num_processes}), got {process_id}")
    return True


def initialize_from_args(args) -> None:
    """Calls ``jax.distributed.initialize`` as the CLI flags ask (no-op for a single process).

    ``--auto-distributed`` lets JAX read the cluster's environment (TPU pods, SLURM, ...).
    """
    if getattr(args, "auto_distributed", False):
        jax.distributed.initialize()
        return
    coordinator = getattr(args, "coordinator", None)
    num_processes = getattr(args, "num_processes", None)
    process_id = getattr(args, "process_id", None)
    if check_distributed_args(coordinator, num_processes, process_id):
        jax.distributed.initialize(coordinator_address=coordinator, num_processes=num_processes,
                                   process_id=process_id)


def leave() -> None:
    """Leaves the distributed system through its shutdown barrier, if this process joined one.

    Called by the CLI when a run has finished (its checkpoints written and closed), so every
    process meets the barrier while the interpreter and the coordination service are still whole.
    JAX's own exit hook would shut down only after clearing its backends, during interpreter
    teardown; process 0 hosts the coordination service, and a peer still tearing down when it
    leaves is aborted ("Shutdown barrier has failed"). A run that fails raises before this and
    leaves through JAX's exit hook, as before. No-op for a single process.
    """
    if jax.distributed.is_initialized():
        jax.distributed.shutdown()
