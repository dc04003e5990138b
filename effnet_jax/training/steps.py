"""Pure train and eval steps, and their multi-step ``lax.scan`` forms.

``train_step(state, batch, hparams) -> (state, metrics)`` and ``eval_step(state, batch) ->
metrics`` know nothing of files, loops or devices: the single run jits them, a sweep vmaps
them, a multi-device run jits them with shardings.

Batches are dicts of ``image`` (uint8 ``[B, H, W, C]``), ``label`` (int ``[B]``) and, for
evaluation, ``mask`` (``[B]``, 0 for padding). Metrics are *sums* (``loss_sum``, ``correct``,
``count``) so that averages over uneven last batches and over many steps are exact.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import optax

from effnet_jax.models.statistics import estimate_batch_stats
from effnet_jax.training.optim import OPTIMIZER_HPARAMS
from effnet_jax.training.state import TrainState

Metrics = dict[str, jax.Array]


def cross_entropy(logits: jax.Array, labels: jax.Array, label_smoothing=0.0) -> jax.Array:
    """Per-example softmax cross entropy with (possibly traced) label smoothing."""
    num_classes = logits.shape[-1]
    targets = optax.smooth_labels(jax.nn.one_hot(labels, num_classes), label_smoothing)
    return optax.softmax_cross_entropy(logits, targets)


def classification_metrics(logits, labels, loss, weights) -> Metrics:
    """Weighted sums of loss and top-1 hits, and the example count."""
    correct = (jnp.argmax(logits, -1) == labels).astype(jnp.float32)
    return {
        "loss_sum": jnp.sum(loss * weights),
        "correct": jnp.sum(correct * weights),
        "count": jnp.sum(weights),
    }


def set_optimizer_hparams(opt_state, hparams: dict) -> object:
    """Writes the optimizer's entries of ``hparams`` into an ``inject_hyperparams`` state (any
    other optimizer state, e.g. a plain ``optax.adam``'s, is returned as it is)."""
    if not hasattr(opt_state, "hyperparams"):
        return opt_state
    injected = dict(opt_state.hyperparams)
    for key in OPTIMIZER_HPARAMS:
        if key in hparams and key in injected:
            injected[key] = jnp.asarray(hparams[key], injected[key].dtype)
    return opt_state._replace(hyperparams=injected)


def make_train_step(model, tx: optax.GradientTransformation, preprocess: Callable | None = None) -> Callable:
    """``train_step(state, batch, hparams) -> (state, metrics)`` for ``model`` and ``tx``.

    ``batch``: ``{"image", "label"}``; ``preprocess(images, key, train)`` turns its images into
    the model's input (default: they already are, e.g. normalised float images). ``hparams``:
    values for an ``optax.inject_hyperparams`` optimizer, ``dropout_rate`` and
    ``label_smoothing`` (``{}`` for none). ``make_multi_step`` runs it many steps per dispatch.
    """
    preprocess = preprocess or (lambda images, key, train: images)

    def train_step(state: TrainState, batch: dict, hparams: dict):
        key = jax.random.fold_in(state.rng, state.step)
        augment_key, dropout_key = jax.random.split(key)
        images = preprocess(batch["image"], augment_key, True)
        labels = batch["label"]

        def loss_fn(params):
            logits, updates = model.apply(
                {"params": params, "batch_stats": state.batch_stats},
                images,
                train=True,
                dropout_rate=hparams.get("dropout_rate"),
                mutable=["batch_stats"],
                rngs={"dropout": dropout_key},
            )
            loss = cross_entropy(logits, labels, hparams.get("label_smoothing", 0.0))
            return jnp.mean(loss), (logits, loss, updates["batch_stats"])

        grads, (logits, loss, batch_stats) = jax.grad(loss_fn, has_aux=True)(state.params)
        opt_state = set_optimizer_hparams(state.opt_state, hparams)
        updates, opt_state = tx.update(grads, opt_state, state.params)
        new_state = state.replace(
            step=state.step + 1,
            params=optax.apply_updates(state.params, updates),
            batch_stats=batch_stats,
            opt_state=opt_state,
        )
        weights = jnp.ones(labels.shape, jnp.float32)
        return new_state, classification_metrics(logits, labels, loss, weights)

    return train_step


def make_eval_step(model, preprocess: Callable) -> Callable:
    """``eval_step(state, batch) -> metrics`` (running BatchNorm statistics, masked padding)."""

    def eval_step(state: TrainState, batch: dict) -> Metrics:
        images = preprocess(batch["image"], None, False)
        logits = model.apply({"params": state.params, "batch_stats": state.batch_stats}, images, train=False)
        loss = cross_entropy(logits, batch["label"])
        return classification_metrics(logits, batch["label"], loss, batch["mask"].astype(jnp.float32))

    return eval_step


def make_estimate_batch_stats(model, preprocess: Callable) -> Callable:
    """``estimate(state, images) -> state`` whose ``batch_stats`` are each BatchNorm's batch
    statistics at the current parameters, averaged over ``images`` (``[K, B, H, W, C]`` uint8
    training batches): ``effnet_jax.estimate_batch_stats`` on the train state, the images
    normalised as for evaluation."""

    def estimate(state: TrainState, images: jax.Array) -> TrainState:
        variables = estimate_batch_stats(model, {"params": state.params, "batch_stats": state.batch_stats}, images,
                                         preprocess=lambda batch: preprocess(batch, None, False))
        return state.replace(batch_stats=variables["batch_stats"])

    return estimate


def sum_metrics(metrics: Metrics) -> Metrics:
    """Sums stacked per-step metrics over their leading axis."""
    return jax.tree.map(lambda m: jnp.sum(m, axis=0), metrics)


def skip_after(step: Callable, count) -> Callable:
    """``step(state, batch, hparams, index)`` that runs ``step`` for ``index < count`` and
    leaves the state unchanged (zero metrics) after: how a chunk padded to a fixed length
    runs its ``count`` real steps in the same compiled program as a full chunk. ``count=None``:
    every step runs (``index`` is ignored)."""
    if count is None:
        return lambda state, batch, hparams, index: step(state, batch, hparams)
    # Traced once: the metrics' shapes (for the skipped branch) and the branch itself come from
    # the same trace (jit's cache), not from a second trace of the whole train step.
    traced_once = jax.jit(step)

    def gated(state, batch, hparams, index):
        shapes = traced_once.eval_shape(state, batch, hparams)[1]
        skipped = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)
        return jax.lax.cond(index < count, lambda: traced_once(state, batch, hparams), lambda: (state, skipped))

    return gated


def scan_indexed(body: Callable, carry, batches):
    """``lax.scan`` of ``body(carry, (batch, index))`` over ``batches``' leading axis."""
    length = jax.tree.leaves(batches)[0].shape[0]
    return jax.lax.scan(body, carry, (batches, jnp.arange(length)))


def make_multi_step(train_step: Callable) -> Callable:
    """``run(state, batches, hparams, steps=None)``: ``train_step`` over ``batches``' leading
    axis by ``lax.scan`` (one dispatch for many steps); returns the state and summed metrics,
    plus ``first_nonfinite``: the first step of the chunk whose loss was NaN/Inf (-1 if none).

    ``steps`` (a traced int, optional): run only the first ``steps`` batches, the rest being
    padding. The training loop pads an epoch's short last chunk so that every chunk runs one
    compiled program (one compile per run instead of two)."""

    def run(state, batches, hparams, steps=None):
        start = state.step
        gated = skip_after(train_step, steps)
        state, metrics = scan_indexed(lambda s, xs: gated(s, xs[0], hparams, xs[1]), state, batches)
        bad = ~jnp.isfinite(metrics["loss_sum"])
        summed = sum_metrics(metrics)
        summed["first_nonfinite"] = jnp.where(jnp.any(bad), start + jnp.argmax(bad), -1).astype(jnp.int32)
        return state, summed

    return run


def all_finite(tree) -> jax.Array:
    """Whether every floating-point leaf of ``tree`` is finite (a scalar bool)."""
    leaves = [jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree) if jnp.issubdtype(x.dtype, jnp.floating)]
    return jnp.all(jnp.stack(leaves)) if leaves else jnp.asarray(True)


def make_evaluate(eval_step: Callable) -> Callable:
    """``evaluate(state, batches)``: ``eval_step`` over stacked batches, metrics summed."""

    def evaluate(state, batches):
        return sum_metrics(jax.lax.map(lambda b: eval_step(state, b), batches))

    return evaluate


def averages(metrics: Metrics) -> dict[str, float]:
    """Host-side ``loss`` and ``accuracy`` from summed metrics."""
    count = max(float(metrics["count"]), 1.0)
    return {"loss": float(metrics["loss_sum"]) / count, "accuracy": float(metrics["correct"]) / count}
