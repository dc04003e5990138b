"""Turn a config into the pieces of a run: checked workdir, data, model, optimizer, steps.

Shared by the single run (``loop``), the sweep and the ``eval`` command, so each builds a run
the same way. Every check here happens before anything is trained or written.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import tempfile
from typing import Any, Callable

import jax
import jax.numpy as jnp
import ml_collections

from effnet_jax.config import NON_SEMANTIC_PREFIXES, config_to_dict, semantic_differences, validate_config
from effnet_jax.data import (
    DataSplits,
    carve_validation,
    check_labels,
    dataset_info,
    load_split,
    make_preprocess,
    subset,
)
from effnet_jax.data.pipeline import steps_per_epoch
from effnet_jax.errors import NotWritable, WorkdirError
from effnet_jax.fast.seam import describe_kernels
from effnet_jax.files import read_json, write_json
from effnet_jax.models import DATASET_PRESETS, create_model
from effnet_jax.models.registry import ensure_registered
from effnet_jax.training.optim import make_optimizer
from effnet_jax.training.steps import make_estimate_batch_stats, make_eval_step, make_train_step

CONFIG_FILE = "config.json"
logger = logging.getLogger("effnet_jax")


def workdir_kind(workdir: str) -> str | None:
    """``"sweep"``, ``"train"`` or ``None`` (nothing trained there yet), from what the workdir
    holds: a sweep's ``chunks/`` (or results), a single run's ``checkpoints/`` (or summary)."""
    has = lambda name: os.path.exists(os.path.join(workdir, name))
    if has("chunks") or has("results.csv"):
        return "sweep"
    if has("checkpoints") or has("summary.md"):
        return "train"
    return None


def check_workdir(workdir: str, config: ml_collections.ConfigDict, sweep: bool = False) -> bool:
    """Checks ``workdir`` can hold this run; returns whether it already holds it (a resume).

    A single run ignores the ``sweep`` section; a sweep (``sweep=True``) compares it too.

    Raises:
      WorkdirError: it is a file; it holds the other kind of run (a sweep for ``train``, a
        single run for ``sweep``); it holds training but no readable ``config.json`` (so what
        it holds cannot be compared); or a run with a different config (listing the
        differences). Nothing in it is touched.
      NotWritable: it cannot be created or written.
    """
    if os.path.exists(workdir) and not os.path.isdir(workdir):
        raise WorkdirError(f"workdir {workdir!r} exists and is not a directory")
    kind, wanted = workdir_kind(workdir), "sweep" if sweep else "train"
    if kind is not None and kind != wanted:
        raise WorkdirError(f"workdir {workdir!r} holds a {'sweep' if kind == 'sweep' else 'single run'}; "
                           f"effnet-jax {wanted} needs a workdir of its own")
    saved_path = os.path.join(workdir, CONFIG_FILE)
    if os.path.exists(saved_path):
        saved = read_json(saved_path, "the workdir's config")
        if not isinstance(saved, dict):
            raise WorkdirError(f"the workdir's config {saved_path!r} is not a config; it is damaged")
        ignored = NON_SEMANTIC_PREFIXES if sweep else (*NON_SEMANTIC_PREFIXES, "sweep.")
        differences = semantic_differences(saved, config_to_dict(config), ignored=ignored)
        if differences:
            raise WorkdirError(
                f"workdir {workdir!r} holds a run with a different config; use another workdir, or "
                "the saved config (effnet-jax train --config <workdir>/config.json) to resume. "
                "Differences: " + "; ".join(differences)
            )
    elif kind is not None:
        raise WorkdirError(f"workdir {workdir!r} holds training but no {CONFIG_FILE}, so whether this config "
                           "matches it cannot be checked; restore that file, or use another workdir to start afresh")
    try:
        os.makedirs(workdir, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=workdir, prefix=".write-test-"):
            pass
    except OSError as error:
        raise NotWritable(f"workdir {workdir!r} is not writable: {error.strerror or error}") from error
    return os.path.exists(saved_path)


def write_config(workdir: str, config: ml_collections.ConfigDict) -> None:
    """Saves the resolved config as ``config.json`` (atomically)."""
    write_json(os.path.join(workdir, CONFIG_FILE), config_to_dict(config), indent=2, sort_keys=True)


def build_model(config: ml_collections.ConfigDict, dataset: str | None = None):
    """The configured model with the dataset's preset (dtype names like 'bfloat16' accepted)."""
    options = dict(config.model.options)
    for key in ("dtype", "param_dtype"):
        if isinstance(options.get(key), str):
            options[key] = jnp.dtype(options[key])
    name = dataset or config.data.name
    preset = name if name in DATASET_PRESETS else None
    ensure_registered(config.model.name, config.model.get("imports", ()))  # a run's own model: its module
    return create_model(config.model.name, dataset=preset, **options)


def load_data(config: ml_collections.ConfigDict) -> DataSplits:
    """Train/validation/test arrays as the config asks (subsets, validation carve-out)."""
    info = dataset_info(config.data.name)
    data_dir = config.data.data_dir or None
    train = load_split(info, "train", data_dir, config.data.source, config.data.idx_dir)
    test = load_split(info, "test", data_dir, config.data.source, config.data.idx_dir)
    train, validation = carve_validation(train, config.data.validation_size, config.data.split_seed)
    train = subset(train, config.data.train_subset, config.data.split_seed)
    test = subset(test, config.data.test_subset, config.data.split_seed)
    return DataSplits(info, train, validation, test)


@dataclasses.dataclass(frozen=True)
class Run:
    """Everything a run needs, built and checked from one config."""

    config: ml_collections.ConfigDict
    data: DataSplits
    model: Any
    tx: Any
    train_step: Callable
    eval_step: Callable
    estimate_batch_stats: Callable  # (state, images [K, B, ...]) -> state: see steps.make_estimate_batch_stats
    steps_per_epoch: int
    kernels: str = "xla"  # what computes the model here: effnet_jax.fast.seam.describe_kernels

    @property
    def total_steps(self) -> int:
        """Optimizer steps of the whole run."""
        return self.steps_per_epoch * self.config.train.epochs

    @property
    def implementation(self) -> str:
        """The layer implementation the model runs here (``"auto"`` resolved for this backend;
        ``"xla"`` for a plain Flax module, which runs its own code)."""
        return getattr(self.model, "resolved_implementation", "xla")

    def describe(self) -> dict[str, Any]:
        """Where and how this run computes: backend, device count, the implementation and which
        blocks run fused or layer by layer (``kernels``)."""
        return {"backend": jax.default_backend(), "devices": jax.device_count(),
                "implementation": self.implementation, "kernels": self.kernels}

    def statistics_sample(self):
        """The fixed training examples BatchNorm statistics are estimated on before evaluating
        (and the network's training accuracy measured on, in evaluation mode), or ``None`` when
        ``train.bn_statistics_batches`` is 0."""
        from effnet_jax.data.pipeline import statistics_sample

        cfg = self.config
        if not cfg.train.bn_statistics_batches:
            return None
        return statistics_sample(self.data.train, cfg.train.batch_size, cfg.train.bn_statistics_batches,
                                 cfg.data.split_seed)

    def statistics_images(self):
        """``statistics_sample``'s images as ``[K, B, H, W, C]`` uint8 batches, or ``None``."""
        from effnet_jax.data.pipeline import statistics_batches

        cfg = self.config
        if not cfg.train.bn_statistics_batches:
            return None
        return statistics_batches(self.data.train, cfg.train.batch_size, cfg.train.bn_statistics_batches,
                                  cfg.data.split_seed)

    @property
    def sample(self) -> jax.Array:
        """A one-image batch of the right shape, for ``init``."""
        return jnp.zeros((1, *self.data.info.image_shape), jnp.float32)


def build_run(config: ml_collections.ConfigDict, data: DataSplits | None = None) -> Run:
    """Validates the config, loads (or takes) the data, builds and checks model and steps."""
    validate_config(config)
    data = load_data(config) if data is None else data
    model = build_model(config)
    for name, split in (("train", data.train), ("validation", data.validation), ("test", data.test)):
        if split is not None:
            check_labels(split, model.num_classes, name)
    # Traces init once: an image too small or of the wrong rank fails here, before training.
    jax.eval_shape(model.init, jax.random.PRNGKey(0), jnp.zeros((1, *data.info.image_shape)))
    spe = steps_per_epoch(len(data.train), config.train.batch_size)
    tx = make_optimizer(config, spe * config.train.epochs, spe)
    compute_dtype = model.dtype
    train_preprocess = make_preprocess(
        data.info, config.data.augment, config.data.crop_padding, config.data.flip, compute_dtype)
    eval_preprocess = make_preprocess(data.info, dtype=compute_dtype)
    run = Run(
        config=config,
        data=data,
        model=model,
        tx=tx,
        train_step=make_train_step(model, tx, train_preprocess),
        eval_step=make_eval_step(model, eval_preprocess),
        estimate_batch_stats=make_estimate_batch_stats(model, eval_preprocess),
        steps_per_epoch=spe,
        kernels=describe_kernels(model, data.info.image_shape),
    )
    logger.info("%s on %s: %s implementation, %s (model.options.implementation=%r) on %d %s device(s)",
                config.model.name, config.data.name, run.implementation, run.kernels,
                getattr(model, "implementation", "xla"), jax.device_count(), jax.default_backend())
    return run
