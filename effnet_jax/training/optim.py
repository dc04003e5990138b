"""Optax optimizers and learning-rate schedules built from the config.

Every numeric hyperparameter (learning rate, betas, momentum, weight decay, clipping norm) is
injected with ``optax.inject_hyperparams``, so it lives as an array in the optimizer state and
``train_step`` can set it from its ``hparams`` argument: one compiled step serves any values,
and a sweep can ``vmap`` over them. The schedule is a fixed *shape* (a multiplier of the peak
learning rate, 1.0 at its peak), so schedules and swept learning rates compose.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import optax

from effnet_jax.errors import ConfigError

# Hyperparameters that live in the optimizer state (set per step from ``hparams``).
OPTIMIZER_HPARAMS = ("learning_rate", "b1", "b2", "eps", "momentum", "weight_decay", "grad_clip_norm")


def schedule_shape(config, total_steps: int, steps_per_epoch: int) -> Callable[[jax.Array], jax.Array]:
    """Learning-rate multiplier as a function of the step (peak = 1)."""
    opt = config.optimizer
    total = max(total_steps, 1)
    if opt.schedule == "constant":
        return optax.constant_schedule(1.0)
    if opt.schedule == "cosine":
        return optax.cosine_decay_schedule(1.0, total, alpha=opt.final_lr_fraction)
    if opt.schedule == "warmup_cosine":
        warmup = int(round(opt.warmup_epochs * steps_per_epoch))
        return optax.warmup_cosine_decay_schedule(
            0.0, 1.0, warmup_steps=min(warmup, total - 1), decay_steps=total, end_value=opt.final_lr_fraction
        )
    if opt.schedule == "step":
        boundaries = {int(round(b * total)): opt.step_factor for b in opt.step_boundaries}
        return optax.piecewise_constant_schedule(1.0, boundaries)
    raise ConfigError(f"optimizer.schedule {opt.schedule!r} is not one of the known schedules")


def _decay_mask(params):
    """Weight decay on kernels only (not on biases or BatchNorm scales)."""
    return jax.tree.map(lambda p: p.ndim > 1, params)


def make_optimizer(config, total_steps: int, steps_per_epoch: int) -> optax.GradientTransformation:
    """The configured optimizer, with every numeric hyperparameter injected.

    * ``adam``: weight decay as L2 added to the gradient (classic Adam, what Keras did);
    * ``adamw``: decoupled weight decay;
    * ``sgd``: momentum (Nesterov by option) with decoupled weight decay.
    Gradient clipping by global norm applies first when ``grad_clip_norm > 0``.
    """
    opt = config.optimizer
    shape = schedule_shape(config, total_steps, steps_per_epoch)
    name, nesterov, clip = opt.name, opt.nesterov, opt.grad_clip_norm > 0

    def build(learning_rate, b1, b2, eps, momentum, weight_decay, grad_clip_norm):
        parts = [optax.clip_by_global_norm(grad_clip_norm)] if clip else []
        if name == "adam":
            parts += [optax.add_decayed_weights(weight_decay, _decay_mask),
                      optax.scale_by_adam(b1=b1, b2=b2, eps=eps)]
        elif name == "adamw":
            parts += [optax.scale_by_adam(b1=b1, b2=b2, eps=eps),
                      optax.add_decayed_weights(weight_decay, _decay_mask)]
        elif name == "sgd":
            parts += [optax.add_decayed_weights(weight_decay, _decay_mask),
                      optax.trace(decay=momentum, nesterov=nesterov)]
        else:
            raise ConfigError(f"optimizer.name {name!r} is not one of adam, adamw, sgd")
        parts += [optax.scale_by_schedule(shape), optax.scale_by_learning_rate(learning_rate)]
        return optax.chain(*parts)

    return optax.inject_hyperparams(build)(**default_hparams(config, optimizer_only=True))


def default_hparams(config, dropout_rate: float = 0.0, optimizer_only: bool = False) -> dict[str, jax.Array]:
    """The run's hyperparameters as float32 scalars: the ``hparams`` of ``train_step``.

    ``dropout_rate`` is the model's (its preset may set one, e.g. GTSRB's 0.5). A rate of 0 is
    left out rather than passed as a traced 0, with which the compiled step would still draw a
    dropout mask every step (~1 ms of random bits per step at batch 128 on CPU).
    """
    opt = config.optimizer
    values = {
        "learning_rate": opt.learning_rate,
        "b1": opt.b1,
        "b2": opt.b2,
        "eps": opt.eps,
        "momentum": opt.momentum,
        "weight_decay": opt.weight_decay,
        "grad_clip_norm": opt.grad_clip_norm,
    }
    if not optimizer_only:
        values["label_smoothing"] = config.train.label_smoothing
        if dropout_rate:
            values["dropout_rate"] = dropout_rate
    return {key: jnp.asarray(value, jnp.float32) for key, value in values.items()}
