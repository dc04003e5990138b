"""vmap-based sweeps: a population of models trained in one compiled program."""

from effnet_jax.sweeps.runner import sweep
from effnet_jax.sweeps.spec import SWEEPABLE, Member, expand_members, validate_sweep

__all__ = ["Member", "SWEEPABLE", "expand_members", "sweep", "validate_sweep"]
