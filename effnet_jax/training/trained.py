"""``load(workdir)``: a trained run's model and variables, ready for inference, in one call.

Works on any workdir a run or a sweep wrote (``members/<name>`` too): it reads the run's
``config.json``, builds the same model and restores the checkpoint's parameters and BatchNorm
statistics. No data is loaded and nothing is written.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections

from effnet_jax.errors import ConfigError, NotFound

CHECKPOINTS = ("best", "latest")


@dataclasses.dataclass(frozen=True)
class TrainedModel:
    """A trained network: ``model.apply(variables, images)`` gives logits (eval mode).

    Calling it takes uint8 images ``[N, H, W, C]`` as the dataset stores them, normalises them
    as training did and returns logits: ``trained(images).argmax(-1)`` are predicted labels.

    Attributes:
      model: the Flax module (as the run's config built it).
      variables: ``{"params": ..., "batch_stats": ...}``.
      config: the run's config.
      step: the training step the checkpoint was saved at.
      checkpoint: ``"best"`` or ``"latest"`` (which one was restored).
    """

    model: Any
    variables: dict
    config: ml_collections.ConfigDict
    step: int
    checkpoint: str

    def __call__(self, images) -> jax.Array:
        from effnet_jax.data import dataset_info, make_preprocess

        preprocess = make_preprocess(dataset_info(self.config.data.name), dtype=self.model.dtype)
        return self.model.apply(self.variables, preprocess(jnp.asarray(images), jax.random.PRNGKey(0), False))


def load(workdir: str, checkpoint: str = "best") -> TrainedModel:
    """The model and variables of ``workdir``'s ``best`` (by validation accuracy; ``latest``
    where there is no best, e.g. a sweep member) or ``latest`` checkpoint.

    Raises:
      FileNotFoundError: ``workdir`` holds no run, or no checkpoint.
      ValueError: ``checkpoint`` is neither ``"best"`` nor ``"latest"``; a model name that is
        not registered (import the module that registers it first).
    """
    from effnet_jax.config import load_config
    from effnet_jax.data import dataset_info
    from effnet_jax.training.checkpoints import restore_for_use
    from effnet_jax.training.experiment import CONFIG_FILE, build_model
    from effnet_jax.training.optim import make_optimizer
    from effnet_jax.training.state import init_train_state

    if checkpoint not in CHECKPOINTS:
        raise ConfigError(f"checkpoint must be one of {CHECKPOINTS}, got {checkpoint!r}")
    config_path = os.path.join(workdir, CONFIG_FILE)
    if not os.path.exists(config_path):
        raise NotFound(f"{workdir!r} holds no run (no {CONFIG_FILE})")
    config = load_config(config_path)
    model = build_model(config)
    sample = jnp.zeros((1, *dataset_info(config.data.name).image_shape), jnp.float32)
    tx = make_optimizer(config, 1, 1)  # only the optimizer state's structure matters here
    target = jax.eval_shape(lambda: init_train_state(model, tx, jax.random.PRNGKey(0), sample))
    state, checkpoint = restore_for_use(os.path.join(workdir, "checkpoints"), target, checkpoint)
    variables = {"params": state.params, "batch_stats": state.batch_stats}
    return TrainedModel(model, variables, config, int(state.step), checkpoint)
