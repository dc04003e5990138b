"""Host-side batching: validation carving, per-epoch shuffles, chunks of batches, prefetch.

Batches stay uint8 on the host and are gathered by index from in-memory arrays (the datasets
here are small); the train loop asks for *chunks* of ``K`` batches (``[K, B, ...]``) that one
compiled ``lax.scan`` consumes. Shuffles depend only on ``(seed, epoch)``, so a resumed run sees
exactly the batches an uninterrupted one would.
"""

from __future__ import annotations

import dataclasses
import queue
import threading
from typing import Iterator

import numpy as np

from effnet_jax.data.catalog import DatasetInfo
from effnet_jax.data.sources import ArraySplit
from effnet_jax.errors import ConfigError, DataError


@dataclasses.dataclass(frozen=True)
class DataSplits:
    """The train, validation (may be ``None``) and test arrays of one dataset."""

    info: DatasetInfo
    train: ArraySplit
    validation: ArraySplit | None
    test: ArraySplit


def carve_validation(train: ArraySplit, size: int, seed: int) -> tuple[ArraySplit, ArraySplit | None]:
    """Splits ``size`` random examples off ``train`` (same ones for every training seed)."""
    if size == 0:
        return train, None
    if size >= len(train):
        raise ConfigError(f"data.validation_size={size} leaves no training data ({len(train)} examples)")
    order = np.random.default_rng(seed).permutation(len(train))
    return train.take(np.sort(order[size:])), train.take(np.sort(order[:size]))


def subset(split: ArraySplit, size: int, seed: int) -> ArraySplit:
    """``size`` random examples of ``split`` in their original order (0 = all)."""
    if size == 0 or size >= len(split):
        return split
    return split.take(np.sort(np.random.default_rng(seed).permutation(len(split))[:size]))


def statistics_sample(split: ArraySplit, batch_size: int, count: int, seed: int) -> ArraySplit:
    """The ``K * B`` training examples (``K = min(count, len(split) // batch_size)``, at least
    one batch) that BatchNorm statistics are estimated on: the same ones every time."""
    k = max(1, min(count, len(split) // batch_size))
    order = np.random.default_rng(seed).permutation(len(split))
    return split.take(np.resize(order, k * batch_size))  # repeats only when the split is smaller than a batch


def statistics_batches(split: ArraySplit, batch_size: int, count: int, seed: int) -> np.ndarray:
    """``[K, B, H, W, C]`` images of ``statistics_sample``, for estimating BatchNorm statistics."""
    images = statistics_sample(split, batch_size, count, seed).images
    return images.reshape(-1, batch_size, *images.shape[1:])


def check_labels(split: ArraySplit, num_classes: int, name: str) -> None:
    """Raises if any label falls outside ``[0, num_classes)``."""
    if len(split) == 0:
        raise DataError(f"the {name} split is empty")
    low, high = int(split.labels.min()), int(split.labels.max())
    if low < 0 or high >= num_classes:
        raise ConfigError(
            f"{name} labels must be in [0, {num_classes}) for a {num_classes}-class model, "
            f"found labels from {low} to {high}"
        )


def epoch_order(seed: int, epoch: int, size: int) -> np.ndarray:
    """The shuffle of epoch ``epoch`` (a pure function of seed and epoch)."""
    return np.random.default_rng([seed, epoch]).permutation(size)


def steps_per_epoch(num_examples: int, batch_size: int) -> int:
    """Full batches per epoch (the last partial batch is left out of training, not of eval)."""
    steps = num_examples // batch_size
    if steps == 0:
        raise ConfigError(f"train.batch_size={batch_size} exceeds the {num_examples} training examples")
    return steps


def train_chunks(split: ArraySplit, batch_size: int, seed: int, epoch: int, start_step: int,
                 steps_per_dispatch: int) -> Iterator[dict[str, np.ndarray]]:
    """Chunks ``{'image': [K, B, H, W, C], 'label': [K, B]}`` of epoch ``epoch`` from step
    ``start_step`` (within the epoch) on; chunk boundaries are fixed multiples of ``K`` from the
    epoch start, so resumed runs compile and run the very same chunks."""
    steps = steps_per_epoch(len(split), batch_size)
    order = epoch_order(seed, epoch, len(split))[: steps * batch_size].reshape(steps, batch_size)
    first = (start_step // steps_per_dispatch) * steps_per_dispatch
    if first != start_step:
        raise ConfigError(f"start_step={start_step} is not a chunk boundary (multiples of {steps_per_dispatch})")
    for begin in range(first, steps, steps_per_dispatch):
        indices = order[begin: begin + steps_per_dispatch]
        yield {"image": split.images[indices], "label": split.labels[indices]}


def pad_chunk(chunk: dict[str, np.ndarray], length: int) -> dict[str, np.ndarray]:
    """``chunk`` grown to ``length`` steps by repeating its last batch (padding the compiled
    multi-step skips: it is told how many steps are real), so every chunk has one shape."""
    steps = chunk["label"].shape[0]
    if steps >= length:
        return chunk
    return {key: np.concatenate([x, np.repeat(x[-1:], length - steps, axis=0)]) for key, x in chunk.items()}


def eval_batches(split: ArraySplit, batch_size: int) -> dict[str, np.ndarray]:
    """All of ``split`` as ``[M, B, ...]`` batches; the last one padded, with ``mask`` 0 there."""
    n = len(split)
    batches = -(-n // batch_size)
    pad = batches * batch_size - n
    images = np.concatenate([split.images, np.zeros((pad, *split.images.shape[1:]), split.images.dtype)])
    labels = np.concatenate([split.labels, np.zeros((pad,), split.labels.dtype)])
    mask = np.concatenate([np.ones((n,), np.float32), np.zeros((pad,), np.float32)])
    return {
        "image": images.reshape(batches, batch_size, *split.images.shape[1:]),
        "label": labels.reshape(batches, batch_size),
        "mask": mask.reshape(batches, batch_size),
    }


def prefetch(iterator: Iterator, size: int = 2) -> Iterator:
    """Runs ``iterator`` in a background thread, ``size`` items ahead (e.g. device transfers)."""
    items: queue.Queue = queue.Queue(maxsize=size)
    done = object()

    def produce():
        try:
            for item in iterator:
                items.put(item)
        except BaseException as error:  # surfaced in the consumer
            items.put(error)
        items.put(done)

    threading.Thread(target=produce, daemon=True).start()
    while (item := items.get()) is not done:
        if isinstance(item, BaseException):
            raise item
        yield item
