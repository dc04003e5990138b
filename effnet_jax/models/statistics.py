"""BatchNorm statistics of the current parameters ("precise BatchNorm", Wu & Johnson, 2021).

Evaluation normalises with the running averages, which trail the parameters by about
1 / (1 - momentum) steps: early in training, or after a fast change, they describe a network that
no longer exists, and test accuracy falls to chance although training accuracy is high (a plain
200-step loop on Fashion-MNIST: 85% on its training batches, 9.85% on test with the running
averages). Estimating each BatchNorm's statistics at the current parameters over a few training
batches before evaluating removes the lag; training never reads them, so nothing else changes.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp


def estimate_batch_stats(model, variables: dict[str, Any], batches: jax.Array, rng: jax.Array | None = None,
                         preprocess: Callable[[jax.Array], jax.Array] | None = None) -> dict[str, Any]:
    """``variables`` with each BatchNorm's ``batch_stats`` replaced by its batch statistics at the
    current parameters, averaged over ``batches``.

    Args:
      model: any Flax module whose ``apply(variables, x, train=True, mutable=["batch_stats"])``
        updates BatchNorm as ``m * running + (1 - m) * batch`` (this library's models and
        ``flax.linen.BatchNorm``, whatever ``m``).
      variables: ``{"params": ..., "batch_stats": ...}``.
      batches: ``[K, B, ...]``: K training batches, as the model's input (normalised as in training).
      rng: the ``dropout`` key for the training-mode passes (default ``PRNGKey(0)``).
      preprocess: applied to each batch inside the program (e.g. uint8 images to normalised
        floats), so ``batches`` may stay in their compact form.

    Returns:
      The variables to evaluate with. Jit it with the model static:
      ``jax.jit(estimate_batch_stats, static_argnums=0)``.

    How: a pass from zeroed statistics yields ``(1 - m) * batch``, and its derivative in the
    starting statistics is ``m`` itself: one forward-mode pass per batch gives both, whatever the
    momentum, and the program holds one copy of the network.
    """
    rng = jax.random.PRNGKey(0) if rng is None else rng
    running = variables["batch_stats"]

    def updated(start, batch):
        _, updates = model.apply({**variables, "batch_stats": start}, batch, train=True, mutable=["batch_stats"],
                                 rngs={"dropout": rng})
        return updates["batch_stats"]

    zeros = jax.tree.map(jnp.zeros_like, running)
    ones = jax.tree.map(jnp.ones_like, running)

    def accumulate(total, batch):
        batch = batch if preprocess is None else preprocess(batch)
        statistics, momentum = jax.jvp(lambda start: updated(start, batch), (zeros,), (ones,))
        return jax.tree.map(jnp.add, total, statistics), momentum

    total, momenta = jax.lax.scan(accumulate, zeros, batches)
    momentum = jax.tree.map(lambda per_batch: per_batch[0], momenta)
    count = batches.shape[0]

    def mean_statistic(total, momentum, running):
        keep = 1.0 - momentum  # a statistic no batch updates (keep 0) stays as it was
        return jnp.where(keep > 1e-6, total / (count * jnp.maximum(keep, 1e-6)), running)

    return {**variables, "batch_stats": jax.tree.map(mean_statistic, total, momentum, running)}
