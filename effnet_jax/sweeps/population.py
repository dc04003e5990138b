"""A population of models as one pytree with a leading member axis, advanced by ``vmap``.

Nothing here is special to sweeps except the divergence guard: the member step is the single
run's ``train_step``, vmapped over (state, hparams) and, by option, over batches. A member
whose loss or parameters become NaN/Inf is marked diverged and frozen (its state stops
changing); since members never interact, the others compute exactly what they would without
it.
"""

from __future__ import annotations

from typing import Callable

import flax.struct
import jax
import jax.numpy as jnp

from effnet_jax.training.state import TrainState, init_train_state
from effnet_jax.training.steps import sum_metrics


class Population(flax.struct.PyTreeNode):
    """Stacked train states plus, per member, whether and when it diverged."""

    state: TrainState  # every leaf has a leading member axis
    diverged: jax.Array  # bool [M]
    diverged_at: jax.Array  # int32 [M]: the step whose update was rejected (-1 = never)


def init_population(model, tx, keys: jax.Array, sample: jax.Array) -> Population:
    """One fresh state per key (``keys`` is ``[M, 2]``), none diverged."""
    state = jax.vmap(lambda key: init_train_state(model, tx, key, sample))(keys)
    members = keys.shape[0]
    return Population(state, jnp.zeros((members,), bool), jnp.full((members,), -1, jnp.int32))


def _all_finite(tree) -> jax.Array:
    leaves = [jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree) if jnp.issubdtype(x.dtype, jnp.floating)]
    return jnp.all(jnp.stack(leaves))


def guarded(train_step: Callable) -> Callable:
    """``train_step`` that rejects non-finite updates and freezes a member once it diverged."""

    def step(state: TrainState, diverged, diverged_at, batch, hparams):
        new_state, metrics = train_step(state, batch, hparams)
        bad = diverged | ~jnp.isfinite(metrics["loss_sum"]) | ~_all_finite(new_state.params)
        kept = jax.tree.map(lambda old, new: jnp.where(bad, old, new), state, new_state)
        diverged_at = jnp.where(bad & ~diverged, state.step, diverged_at)
        return kept, bad, diverged_at, metrics

    return step


def make_population_multi_step(train_step: Callable, per_member_batches: bool) -> Callable:
    """``run(population, batches, hparams)``: ``lax.scan`` over steps of the vmapped, guarded
    step. ``batches`` is ``[K, B, ...]`` shared by all members, or ``[K, M, B, ...]`` with
    ``per_member_batches``; ``hparams`` leaves are ``[M]``. Metrics are summed over steps,
    per member (``[M]``)."""
    member_step = jax.vmap(guarded(train_step), in_axes=(0, 0, 0, 0 if per_member_batches else None, 0))

    def one_step(population: Population, batch, hparams):
        state, diverged, diverged_at, metrics = member_step(
            population.state, population.diverged, population.diverged_at, batch, hparams)
        return Population(state, diverged, diverged_at), metrics

    def run(population: Population, batches, hparams):
        population, metrics = jax.lax.scan(lambda p, b: one_step(p, b, hparams), population, batches)
        return population, sum_metrics(metrics)

    return run


def make_population_evaluate(eval_step: Callable) -> Callable:
    """``evaluate(states, batches)``: every member on the same stacked eval batches; metrics
    summed over batches, per member."""
    member_eval = jax.vmap(eval_step, in_axes=(0, None))

    def evaluate(states, batches):
        return sum_metrics(jax.lax.map(lambda b: member_eval(states, b), batches))

    return evaluate


def member(tree, index: int):
    """Member ``index`` of a stacked pytree."""
    return jax.tree.map(lambda x: x[index], tree)
