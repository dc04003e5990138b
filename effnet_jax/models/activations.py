"""Activations by name or as functions, and what the fast kernels may assume of them.

A block's ``act`` field (Flax ResNet's name) takes any element-wise function, ``nn.gelu``,
``nn.relu``, ``functools.partial(nn.leaky_relu, negative_slope=0.1)`` or a function of your own,
or one of the names in ``ACTIVATIONS`` (what a JSON config can hold). The fused CPU kernels take
the activation's derivative from JAX, so any of them keeps the fast block.
"""

from __future__ import annotations

import functools
from typing import Callable

import flax.linen as nn
import jax.numpy as jnp

from effnet_jax.errors import ConfigError


def _identity(x):
    return x


NAMED: dict[str, Callable] = {
    "relu": nn.relu,
    "relu6": nn.relu6,
    "gelu": nn.gelu,
    "silu": nn.silu,
    "swish": nn.swish,
    "hard_swish": nn.hard_swish,
    "elu": nn.elu,
    "tanh": jnp.tanh,
    "linear": _identity,
}
ACTIVATIONS = ("leaky_relu", *NAMED)


@functools.lru_cache(maxsize=None)
def leaky_relu(slope: float) -> Callable:
    """LeakyReLU with ``slope`` (one function object per slope, so compiled code is reused)."""
    return functools.partial(nn.leaky_relu, negative_slope=float(slope))


def resolve(act: Callable | str | None, slope: float = 0.3) -> Callable:
    """The function ``act`` names: ``None`` or ``"leaky_relu"`` is LeakyReLU with ``slope`` (the
    paper's), a name from ``ACTIVATIONS`` its Flax function, a callable itself.

    Raises:
      ConfigError: an unknown name, or something neither a name nor callable.
    """
    if act is None or act == "leaky_relu":
        return leaky_relu(slope)
    if isinstance(act, str):
        if act not in NAMED:
            raise ConfigError(f"activation must be a function or one of {ACTIVATIONS}, got {act!r}")
        return NAMED[act]
    if not callable(act):
        raise ConfigError(f"activation must be a function or one of {ACTIVATIONS}, got {act!r}")
    return act
