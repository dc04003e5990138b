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
from effnet_jax.training.steps import all_finite, scan_indexed, skip_after, sum_metrics


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


def _scan_steps(step: Callable, members: int, per_member_batches: bool):
    """``lax.scan`` of ``step`` through a chunk of batches; returns the end state, each member's
    first non-finite step (-1 if none) and per-step metrics. ``members`` is the size of the
    vmapped member axis of ``step`` (0: ``step`` is the unbatched single-model step). With
    ``steps`` only the first ``steps`` batches train (the rest pad a short chunk)."""

    def run(state, batches, hparams, steps=None):
        gated = skip_after(step, steps)

        def body(carry, xs):
            state, first_bad = carry
            batch, index = xs
            if not per_member_batches and members:
                # Shared images enter with a member axis of their own: with an unbatched input,
                # XLA computes the first layer's kernel gradient through a transposed copy of
                # the (large) output gradient; broadcasting the uint8 batch costs next to nothing.
                batch = jax.tree.map(lambda x: jnp.broadcast_to(x, (members, *x.shape)), batch)
            new_state, metrics = gated(state, batch, hparams, index)
            bad = ~jnp.isfinite(metrics["loss_sum"])
            first_bad = jnp.where((first_bad < 0) & bad, state.step, first_bad)
            return (new_state, first_bad), metrics

        none_bad = jnp.full(state.step.shape, -1, jnp.int32)
        (end, first_bad), metrics = scan_indexed(body, (state, none_bad), batches)
        return end, first_bad, metrics

    return run


def _train_groups(train_step: Callable, members: int, group_size: int, per_member_batches: bool) -> Callable:
    """All members through a chunk: one vmap over all of them, or (``group_size`` < members)
    groups of ``group_size`` vmapped members, each group running the whole chunk before the
    next starts (``lax.map``), so a group's working set stays in cache across its steps. Same
    results either way; on CPU a population whose activations outgrow the cache runs slower
    than its members would one after another. A group of one runs the unbatched step."""
    if group_size >= members > 1:
        return _scan_steps(jax.vmap(train_step), members, per_member_batches)
    group_size = min(group_size, members)
    groups = members // group_size
    if group_size == 1:
        run_member = _scan_steps(train_step, 0, per_member_batches)  # one unbatched member
    else:
        run_member = _scan_steps(jax.vmap(train_step), group_size, per_member_batches)

    def split_members(x):
        return x.reshape(groups, group_size, *x.shape[1:]) if group_size > 1 else x

    def run(state, batches, hparams, steps=None):
        if per_member_batches:  # [K, M, B, ...] -> [groups, K, group, B, ...]
            batches = jax.tree.map(
                lambda x: jnp.moveaxis(x.reshape(x.shape[0], groups, group_size, *x.shape[2:]), 1, 0)
                if group_size > 1 else jnp.moveaxis(x, 1, 0), batches)
            per_group = (jax.tree.map(split_members, state), batches, jax.tree.map(split_members, hparams))
            end, first_bad, metrics = jax.lax.map(lambda a: run_member(*a, steps), per_group)
        else:
            per_group = (jax.tree.map(split_members, state), jax.tree.map(split_members, hparams))
            end, first_bad, metrics = jax.lax.map(lambda a: run_member(a[0], batches, a[1], steps), per_group)
        merge = lambda x: x.reshape(members, *x.shape[2:]) if group_size > 1 else x
        metrics = jax.tree.map(lambda x: jnp.moveaxis(x, 0, 1), metrics)  # [K, groups, ...]
        metrics = jax.tree.map(lambda x: x.reshape(x.shape[0], members, *x.shape[3:]) if group_size > 1 else x, metrics)
        return jax.tree.map(merge, end), merge(first_bad), metrics

    return run


def make_population_multi_step(train_step: Callable, per_member_batches: bool, group_size: int = 0) -> Callable:
    """``run(population, batches, hparams, steps=None)``: the vmapped ``train_step`` through the
    steps of a chunk. ``batches`` is ``[K, B, ...]`` shared by all members, or ``[K, M, B, ...]``
    with ``per_member_batches``; ``hparams`` leaves are ``[M]``; ``steps`` as in
    ``training.steps.make_multi_step`` (the first ``steps`` batches train, the rest are padding).
    Metrics are summed over steps, per member (``[M]``). ``group_size`` (0 = all) vmaps that many
    members at a time, the groups running one after another inside the same program.

    Divergence: a member whose loss or parameters are not finite by the end of the chunk is
    marked diverged and returned as it was at the chunk's start (frozen there for good: later
    chunks restore it again); ``diverged_at`` is the first step whose loss was not finite.
    Checking once per chunk keeps the per-step program identical to the single run's.
    """
    def run(population: Population, batches, hparams, steps=None):
        members = population.diverged.shape[0]
        size = members if group_size <= 0 else largest_divisor_at_most(members, group_size)
        start = population.state
        train_groups = _train_groups(train_step, members, size, per_member_batches)
        end, first_bad, metrics = train_groups(start, batches, hparams, steps)
        finite = jax.vmap(lambda s: all_finite(s.params))(end)
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


def make_population_estimate(estimate_batch_stats: Callable) -> Callable:
    """``estimate(population, images)``: every member's BatchNorm statistics estimated on the
    same training images (``training.steps.make_estimate_batch_stats``); diverged members keep
    theirs."""
    member_estimate = jax.vmap(estimate_batch_stats, in_axes=(0, None))

    def estimate(population: Population, images) -> Population:
        estimated = member_estimate(population.state, images).batch_stats
        frozen = lambda old, new: jnp.where(population.diverged.reshape(-1, *([1] * (new.ndim - 1))), old, new)
        stats = jax.tree.map(frozen, population.state.batch_stats, estimated)
        return population.replace(state=population.state.replace(batch_stats=stats))

    return estimate


def member(tree, index: int):
    """Member ``index`` of a stacked pytree."""
    return jax.tree.map(lambda x: x[index], tree)
