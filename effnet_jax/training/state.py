"""The train state: one pytree holding everything a run carries from step to step."""

from __future__ import annotations

from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import optax


class TrainState(flax.struct.PyTreeNode):
    """Params, BatchNorm statistics, optimizer state, step counter and the run's base RNG key.

    The key of step ``s`` is ``fold_in(rng, s)``: a resumed run draws the same numbers as an
    uninterrupted one, and nothing needs splitting and carrying.
    """

    step: jax.Array
    params: Any
    batch_stats: Any
    opt_state: Any
    rng: jax.Array  # raw uint32[2] key (checkpointable as a plain array)


def init_train_state(model, tx: optax.GradientTransformation, key: jax.Array, sample: jax.Array) -> TrainState:
    """A fresh state: ``model.init`` on ``sample`` images (shape only matters), ``tx.init``.

    Pure in ``key``: ``jax.vmap(init_train_state, ...)`` makes a population.
    """
    init_key, run_key = jax.random.split(key)
    variables = model.init(init_key, sample, train=False)
    params = variables["params"]
    return TrainState(
        step=jnp.zeros((), jnp.int32),
        params=params,
        batch_stats=variables.get("batch_stats", {}),
        opt_state=tx.init(params),
        rng=run_key,
    )


# Initialisation runs once: compiling it without LLVM's optimisations is ~4x faster to compile
# (random-number kernels are large), and with XLA:CPU's older loop emitters instead of its fusion
# emitters ~1.6x faster again (the seed EffNet: 2.0-2.7 -> 0.9-1.5 s; every registered model:
# 23 -> 14 s); its results are bitwise the same.
_FAST_COMPILES = ({"xla_backend_optimization_level": 0, "xla_cpu_use_fusion_emitters": False},
                  {"xla_backend_optimization_level": 0})


def compile_once_run(lowered):
    """Compiles a program that runs once (initialisation) for compile speed, not run speed."""
    for options in _FAST_COMPILES:
        try:
            return lowered.compile(options)
        except Exception:  # A backend that does not take an option: try the next, then compile normally.
            continue
    return lowered.compile()


def create_train_state(model, tx: optax.GradientTransformation, key: jax.Array, sample: jax.Array,
                       sharding=None) -> TrainState:
    """``init_train_state`` compiled for compile speed rather than run speed (host entry point),
    placed with ``sharding`` (e.g. replicated over a mesh) when given."""
    lowered = jax.jit(init_train_state, static_argnums=(0, 1), out_shardings=sharding).lower(model, tx, key, sample)
    return compile_once_run(lowered)(key, sample)
