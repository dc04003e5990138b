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

from effnet_jax.parallel.mesh import largest_divisor_at_most
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


def _grouped(train_step: Callable, members: int, group_size: int) -> Callable:
    """``train_step`` vmapped over members, applied ``group_size`` members at a time by
    ``lax.map``: the same results as one vmap over all members, but each group's working set
    stays small (on CPU, a population whose activations outgrow the cache runs slower than its
    members would one after another). A group of one maps the unbatched step itself."""
    if group_size >= members:
        return jax.vmap(train_step)
    if group_size == 1:
        return lambda *args: jax.lax.map(lambda a: train_step(*a), args)
    split = lambda x: x.reshape(members // group_size, group_size, *x.shape[1:])
    member_step = jax.vmap(train_step)

    def run(state, batch, hparams):
        out = jax.lax.map(lambda args: member_step(*args), jax.tree.map(split, (state, batch, hparams)))
        return jax.tree.map(lambda x: x.reshape(members, *x.shape[2:]), out)

    return run


def make_population_multi_step(train_step: Callable, per_member_batches: bool, group_size: int = 0) -> Callable:
    """``run(population, batches, hparams)``: ``lax.scan`` of the vmapped ``train_step`` over
    the steps of a chunk. ``batches`` is ``[K, B, ...]`` shared by all members, or
    ``[K, M, B, ...]`` with ``per_member_batches``; ``hparams`` leaves are ``[M]``. Metrics are
    summed over steps, per member (``[M]``). ``group_size`` (0 = all) vmaps that many members
    at a time, the groups advancing one after another inside the same program.

    Divergence: a member whose loss or parameters are not finite by the end of the chunk is
    marked diverged and returned as it was at the chunk's start (frozen there for good: later
    chunks restore it again); ``diverged_at`` is the first step whose loss was not finite.
    Checking once per chunk keeps the per-step program identical to the single run's.
    """
    def run(population: Population, batches, hparams):
        members = population.diverged.shape[0]
        size = members if group_size <= 0 else largest_divisor_at_most(members, group_size)
        step = _grouped(train_step, members, size)

        def body(carry, batch):
            state, first_bad = carry
            if not per_member_batches:
                # Shared images enter with a member axis of their own: with an unbatched input,
                # XLA computes the first layer's kernel gradient through a transposed copy of
                # the (large) output gradient; broadcasting the uint8 batch costs next to nothing.
                batch = jax.tree.map(lambda x: jnp.broadcast_to(x, (members, *x.shape)), batch)
            new_state, metrics = step(state, batch, hparams)
            bad = ~jnp.isfinite(metrics["loss_sum"])
            first_bad = jnp.where((first_bad < 0) & bad, state.step, first_bad)
            return (new_state, first_bad), metrics

        start = population.state
        none_bad = jnp.full((members,), -1, jnp.int32)
        (end, first_bad), metrics = jax.lax.scan(body, (start, none_bad), batches)
        finite = jax.vmap(lambda s: _all_finite(s.params))(end)
        newly = ~population.diverged & ((first_bad >= 0) | ~finite)
        diverged = population.diverged | newly
        diverged_at = jnp.where(newly, jnp.where(first_bad >= 0, first_bad, end.step - 1), population.diverged_at)
        keep = lambda old, new: jnp.where(diverged.reshape(-1, *([1] * (new.ndim - 1))), old, new)
        state = jax.tree.map(keep, start, end)
        return Population(state, diverged, diverged_at), sum_metrics(metrics)

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
