"""Shared test helpers: cheap random variables for any model (no init compilation)."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np


def random_variables(model, input_shape, seed: int = 0, **call_kwargs):
    """Variables shaped like ``model.init``'s, filled with well-scaled random numbers.

    Shapes come from ``jax.eval_shape`` (a trace, no compilation); kernels get a fan-in scaled
    normal, BatchNorm non-trivial scales, biases and running statistics, so every path of the
    network is exercised. ``call_kwargs`` go to ``model.init`` (e.g. ``train=False`` for a block).
    """
    shapes = jax.eval_shape(lambda key, x: model.init(key, x, **call_kwargs), jax.random.key(0),
                            jnp.zeros(input_shape, jnp.float32))
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


def latest_state(workdir, config):
    """The train state of ``workdir``'s latest checkpoint (shaped by ``config``'s model)."""
    import os

    from effnet_jax.training.checkpoints import Checkpoints
    from effnet_jax.training.experiment import build_run
    from effnet_jax.training.state import init_train_state

    run = build_run(config)
    target = jax.eval_shape(lambda: init_train_state(run.model, run.tx, jax.random.PRNGKey(0), run.sample))
    checkpoints = Checkpoints(os.path.join(workdir, "checkpoints"), read_only=True)
    state = checkpoints.restore_latest(target)
    checkpoints.close()
    return state


def tiny_mock_config(*overrides):
    """A tiny EffNet on mock CIFAR-10 (with the ``mock_data`` fixture): 44 train, 16 validation
    images, batches of 8, chunks of 2 steps, 2 epochs; ``overrides`` as on the command line."""
    from effnet_jax.config import apply_overrides, default_config, lock

    return apply_overrides(lock(default_config()), [
        "data.name=cifar10", "data.source=tfds", "data.validation_size=16",
        "model.options.widths=(4, 8, 8)", "model.options.bn_momentum=0.5",
        "train.epochs=2", "train.batch_size=8", "train.eval_batch_size=12", "train.steps_per_dispatch=2",
        "log.progress=False", *overrides,
    ])


def write_tiny_config_file(path, *assignments: str) -> str:
    """An experiment config file (``get_config()``) for a tiny EffNet on mock CIFAR-10, with
    extra ``assignments`` such as ``"c.train.epochs = 1"``; returns its path."""
    lines = ["c.data.name = 'cifar10'", "c.data.source = 'tfds'", "c.data.validation_size = 16",
             "c.model.options.widths = (4, 8, 8)", "c.log.progress = False", *assignments]
    body = "".join(f"    {line}\n" for line in lines)
    path.write_text("from effnet_jax.config import default_config\n\n\ndef get_config():\n"
                    f"    c = default_config()\n{body}    return c\n")
    return str(path)
