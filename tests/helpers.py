"""Shared test helpers: cheap random variables for any model (no init compilation)."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np


def random_variables(model, input_shape, seed: int = 0):
    """Variables shaped like ``model.init``'s, filled with well-scaled random numbers.

    Shapes come from ``jax.eval_shape`` (a trace, no compilation); kernels get a fan-in scaled
    normal, BatchNorm non-trivial scales, biases and running statistics, so every path of the
    network is exercised.
    """
    shapes = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros(input_shape, jnp.float32))
    rng = np.random.default_rng(seed)

    def fill(path, leaf):
        name = path[-1].key
        if name == "kernel":
            fan_in = math.prod(leaf.shape[:-1])
            value = rng.normal(0, 1 / math.sqrt(fan_in), leaf.shape)
        elif name == "scale":
            value = 1 + 0.2 * rng.normal(size=leaf.shape)
        elif name in ("bias", "mean"):
            value = 0.2 * rng.normal(size=leaf.shape)
        elif name == "var":
            value = 0.5 + rng.random(leaf.shape)
        else:
            raise KeyError(f"unexpected variable {path}")
        return jnp.asarray(value, leaf.dtype)

    return jax.tree_util.tree_map_with_path(fill, shapes)
