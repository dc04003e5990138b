"""Experiment configuration: defaults, config files, command-line overrides and validation.

A config is a locked ``ml_collections.ConfigDict``: assigning a key that does not exist raises,
so typos are caught before anything runs. Experiment configs (the named ones shipped in
``effnet_jax.configs``, or any ``.py`` file) define ``get_config()`` that starts from
``default_config()`` and changes what the experiment needs.
``model.options`` is the one open section: any option of the chosen model (checked against the
model's fields by ``validate_config``).
"""

from __future__ import annotations

import ast
import copy
import importlib.util
import json
import os
import sys
from typing import Any, Iterable

import ml_collections

from effnet_jax.errors import ConfigError, NotFound

OPTIMIZERS = ("adam", "adamw", "sgd")
SCHEDULES = ("constant", "cosine", "warmup_cosine", "step")
# Keys that do not change what is computed: a workdir may be resumed with other values (the
# layer implementations share variables and agree to rounding, so a run started on a TPU with
# "xla" may be finished on a CPU with "fast").
NON_SEMANTIC_PREFIXES = ("log.", "checkpoint.async_save", "train.eval_batch_size", "parallel.",
                         "model.options.implementation", "model.imports")


def default_config() -> ml_collections.ConfigDict:
    """All keys with their defaults: seed EffNet, Adam at the paper's 1e-3, no augmentation."""
    c = ml_collections.ConfigDict()
    c.seed = 0

    c.model = ml_collections.ConfigDict()
    c.model.name = "effnet"
    c.model.imports = ()  # modules that register an own model (``--import``), imported where it is built
    c.model.options = ml_collections.ConfigDict()  # any model option, e.g. dropout_rate, dtype

    c.data = ml_collections.ConfigDict()
    c.data.name = "fashion_mnist"
    c.data.data_dir = ""  # "" = the defaults: ~/effnet_jax_data ($EFFNET_JAX_DATA_DIR), ~/tensorflow_datasets
    c.data.source = "auto"  # auto | files (original files, numpy) | tfds | idx (Debian's Fashion-MNIST)
    c.data.idx_dir = "/usr/share/datasets/fashion-mnist"
    c.data.validation_size = 5000  # examples carved from train for validation (0 = none)
    c.data.split_seed = 0  # fixed across training seeds: every run validates on the same images
    c.data.shuffle_seed = -1  # seed of the batch order; -1 = the run's seed
    c.data.train_subset = 0  # use only this many training examples (0 = all); for quick runs
    c.data.test_subset = 0
    c.data.augment = False  # the paper used none
    c.data.crop_padding = 4
    c.data.flip = True

    c.train = ml_collections.ConfigDict()
    c.train.epochs = 5
    c.train.batch_size = 128
    c.train.eval_batch_size = 1000
    c.train.steps_per_dispatch = 20  # train steps run by one compiled lax.scan call
    c.train.label_smoothing = 0.0
    # Before each evaluation, BatchNorm statistics estimated on this many training batches at the
    # current parameters (precise BN); 0 = evaluate with the running averages (the seed's way).
    c.train.bn_statistics_batches = 32

    c.optimizer = ml_collections.ConfigDict()
    c.optimizer.name = "adam"
    c.optimizer.learning_rate = 1e-3
    c.optimizer.b1 = 0.9  # the paper reports 0.75
    c.optimizer.b2 = 0.999
    c.optimizer.eps = 1e-8
    c.optimizer.momentum = 0.9  # sgd
    c.optimizer.nesterov = True  # sgd
    c.optimizer.weight_decay = 0.0  # adam: L2 added to the gradient; adamw/sgd: decoupled
    c.optimizer.grad_clip_norm = 0.0  # 0 = no clipping
    c.optimizer.schedule = "constant"
    c.optimizer.warmup_epochs = 0.0
    c.optimizer.final_lr_fraction = 0.0  # cosine schedules end at this fraction of the peak
    c.optimizer.step_boundaries = (0.5, 0.75)  # step schedule: fractions of training
    c.optimizer.step_factor = 0.1

    c.checkpoint = ml_collections.ConfigDict()
    c.checkpoint.every_steps = 0  # 0 = at the end of every epoch
    c.checkpoint.keep = 2
    c.checkpoint.async_save = True

    c.sweep = ml_collections.ConfigDict()  # used by effnet-jax sweep (see effnet_jax.sweeps)
    c.sweep.seeds = (0,)
    c.sweep.grid = ml_collections.ConfigDict()  # hyperparameter -> tuple of values
    c.sweep.random = ml_collections.ConfigDict()  # hyperparameter -> (distribution, low, high)
    c.sweep.num_samples = 0  # random configurations drawn
    c.sweep.sample_seed = 0
    c.sweep.chunk_size = 0  # members per compiled program (0 = as many as fit in memory)
    c.sweep.group_size = 0  # members vmapped at once inside it (0 = automatic: cache-sized on CPU)
    c.sweep.per_member_shuffle = False  # False: every member trains on the same batches

    c.parallel = ml_collections.ConfigDict()
    c.parallel.data_devices = 0  # devices on the data axis (0 = all, across processes)
    c.parallel.sweep_devices = 0  # devices a sweep uses (0 = all)
    c.parallel.population_shards = 0  # sweep members split over this many device groups (0 = automatic)

    c.log = ml_collections.ConfigDict()
    c.log.progress = True
    c.log.tensorboard = True
    c.log.plot = True
    c.log.test_every_epoch = False  # also evaluate the test set at every epoch's end (a study's curves)
    return c


OPEN_SECTIONS = (("model", "options"), ("sweep", "grid"), ("sweep", "random"))


def lock(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """Locks every key except the open sections (model options, sweep axes)."""
    config.lock()
    for section, key in OPEN_SECTIONS:
        if section in config:
            config[section][key].unlock()
    return config


def shuffle_seed(config: ml_collections.ConfigDict) -> int:
    """The seed of the batch order (``data.shuffle_seed``, or the run's seed if -1)."""
    return config.seed if config.data.shuffle_seed < 0 else config.data.shuffle_seed


def load_config(path: str) -> ml_collections.ConfigDict:
    """A locked config from a file: an experiment's ``.py`` (its ``get_config()``) or a saved
    ``config.json`` (a workdir's, a sweep's ``best_config.json``). ``effnet_jax.configs.load``
    also takes the names of the configs shipped with the package.

    Raises:
      FileNotFoundError: no such file. ValueError: no ``get_config()``, or JSON that is not a
      config.
    """
    if not os.path.isfile(path):
        raise NotFound(f"config file {path!r} does not exist")
    if path.endswith(".json"):
        try:
            with open(path) as f:
                data = json.load(f)
            missing = [f"{section}.name" for section in ("model", "data")
                       if not isinstance(data, dict) or not isinstance(data.get(section), dict)
                       or "name" not in data[section]]
            if missing:  # e.g. ``{}``: the defaults would be trained or evaluated instead, silently
                raise ConfigError(f"config file {path} is not an effnet-jax config: it has no {' or '.join(missing)}")
            return config_from_dict(data)
        except json.JSONDecodeError as error:
            raise ConfigError(f"config file {path}, line {error.lineno}: not valid JSON: {error.msg}") from None
        except UnicodeDecodeError as error:
            raise ConfigError(f"config file {path} is not text (byte {error.start}); it is damaged") from None
        except (KeyError, TypeError, AttributeError) as error:
            raise ConfigError(f"config file {path} is not an effnet-jax config ({type(error).__name__}: {error})") from None
    directory = os.path.dirname(os.path.abspath(path))
    if directory not in sys.path:  # a config may import modules beside it (e.g. a registered model)
        sys.path.append(directory)
    spec = importlib.util.spec_from_file_location("effnet_jax_experiment_config", path)
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except SyntaxError as error:
        raise ConfigError(f"config file {path}, line {error.lineno}: syntax error: {error.msg}") from None
    except Exception as error:  # the file's own code failed: say where, in one line
        raise ConfigError(f"config file {path} failed to load: {type(error).__name__}: {error}") from None
    if not hasattr(module, "get_config"):
        raise ConfigError(f"config file {path!r} defines no get_config()")
    try:
        return lock(module.get_config())
    except Exception as error:
        raise ConfigError(f"config file {path}: get_config() failed: {type(error).__name__}: {error}") from None


def config_to_dict(config: ml_collections.ConfigDict) -> dict:
    """The config as plain JSON-compatible data (tuples become lists)."""
    return json.loads(config.to_json_best_effort())


def config_from_dict(data: dict) -> ml_collections.ConfigDict:
    """A locked config from ``config_to_dict`` output (e.g. a workdir's ``config.json``)."""
    config = default_config()
    open_keys = {f"{section}.{key}" for section, key in OPEN_SECTIONS}

    def merge(node, values, path=""):
        for key, value in values.items():
            if f"{path}{key}" in open_keys:
                node[key] = ml_collections.ConfigDict(value)
            elif isinstance(value, dict):
                merge(node[key], value, f"{path}{key}.")
            else:
                current = node.get(key)
                node[key] = tuple(value) if isinstance(current, tuple) and isinstance(value, list) else value

    merge(config, data)
    return lock(config)


def parse_value(text: str) -> Any:
    """A command-line value: a Python literal (1e-3, (64, 128), True, None) or else a string."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def split_override(item: str) -> tuple[str, str]:
    """``(key, text)`` of one override: ``key.path=value``, also spelled as ml_collections'
    ``--config.key.path=value`` (or ``config.key.path=value``)."""
    if "=" not in item:
        raise ConfigError(f"override {item!r} is not of the form key=value")
    key, text = item.split("=", 1)
    key = key[2:] if key.startswith("--") else key
    key = key[len("config."):] if key.startswith("config.") else key
    return key, text


def check_overrides_unique(overrides: Iterable[str]) -> None:
    """Refuses a command line that gives one key twice: which value was meant cannot be known
    (``apply_overrides`` itself applies them in order, the last winning, as a script may want).

    Raises:
      ConfigError: naming the key.
    """
    given: set[str] = set()
    for item in overrides:
        key = split_override(item)[0]
        if key in given:
            raise ConfigError(f"config key {key!r} is given twice; give it once")
        given.add(key)


def apply_overrides(config: ml_collections.ConfigDict, overrides: Iterable[str]) -> ml_collections.ConfigDict:
    """A new config: ``config`` with ``key.path=value`` overrides applied (``config`` itself is
    left as it was). Unknown keys and wrong types raise ``ValueError``."""
    config = lock(copy.deepcopy(config))
    for item in overrides:
        key, text = split_override(item)
        *parents, leaf = key.split(".")
        node = config
        for part in parents:
            if part not in node:
                raise ConfigError(f"unknown config key {key!r}: no section {part!r}; valid: {sorted(node.keys())}")
            node = node[part]
        if not isinstance(node, ml_collections.ConfigDict):
            raise ConfigError(f"unknown config key {key!r}: {'.'.join(parents)} is not a section")
        if leaf not in node and tuple(parents) not in OPEN_SECTIONS:
            raise ConfigError(f"unknown config key {key!r}; valid keys here: {sorted(node.keys())}")
        value = parse_value(text)
        current = node.get(leaf)
        if isinstance(current, float) and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if isinstance(current, tuple) and isinstance(value, list):
            value = tuple(value)
        try:
            node[leaf] = value
        except TypeError as error:
            raise ConfigError(f"config key {key!r} expects {type(current).__name__}, got {text!r}") from error
    return config


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise ConfigError(message)


def _is_int(value) -> bool:
    """An integer, and not a bool (``True`` is an ``int`` to Python, never a batch size)."""
    return isinstance(value, int) and not isinstance(value, bool)


def validate_config(config: ml_collections.ConfigDict) -> None:
    """Checks every value that could fail later, naming the key, what it expects and what came."""
    from effnet_jax.data.catalog import dataset_info
    from effnet_jax.data.sources import SOURCES
    from effnet_jax.models import model_options
    from effnet_jax.models.registry import ensure_registered

    dataset_info(config.data.name)
    _require(config.data.source in SOURCES, f"data.source must be one of {SOURCES}, got {config.data.source!r}")
    ensure_registered(config.model.name, config.model.imports)  # unknown model names list the valid ones
    valid_options = model_options(config.model.name)
    unknown = sorted(set(config.model.options) - set(valid_options))
    _require(not unknown, f"model.options: model {config.model.name!r} has no option(s) {unknown}; "
                          f"valid options: {valid_options}")
    train, opt = config.train, config.optimizer
    for key in ("epochs", "batch_size", "eval_batch_size", "steps_per_dispatch"):
        value = train[key]
        _require(_is_int(value) and value > 0, f"train.{key} must be a positive integer, got {value!r}")
    _require(_is_int(train.bn_statistics_batches) and train.bn_statistics_batches >= 0,
             f"train.bn_statistics_batches must be an integer >= 0 (0 = running averages), "
             f"got {train.bn_statistics_batches!r}")
    for key in ("validation_size", "train_subset", "test_subset", "split_seed"):
        value = config.data[key]
        _require(_is_int(value) and value >= 0, f"data.{key} must be an integer >= 0, got {value!r}")
    _require(_is_int(config.seed) and 0 <= config.seed < 2**32, f"seed must be an integer in [0, 2**32), got {config.seed!r}")
    _require(_is_int(config.data.shuffle_seed) and -1 <= config.data.shuffle_seed < 2**32,
             f"data.shuffle_seed must be an integer in [0, 2**32) or -1 (= seed), got {config.data.shuffle_seed!r}")
    _require(0.0 <= train.label_smoothing < 1.0, f"train.label_smoothing must be in [0, 1), got {train.label_smoothing!r}")
    _require(opt.name in OPTIMIZERS, f"optimizer.name must be one of {OPTIMIZERS}, got {opt.name!r}")
    _require(opt.schedule in SCHEDULES, f"optimizer.schedule must be one of {SCHEDULES}, got {opt.schedule!r}")
    _require(opt.learning_rate > 0, f"optimizer.learning_rate must be > 0, got {opt.learning_rate!r}")
    _require(opt.weight_decay >= 0, f"optimizer.weight_decay must be >= 0, got {opt.weight_decay!r}")
    _require(opt.grad_clip_norm >= 0, f"optimizer.grad_clip_norm must be >= 0 (0 = off), got {opt.grad_clip_norm!r}")
    _require(0 <= opt.b1 < 1 and 0 <= opt.b2 < 1, f"optimizer.b1 and b2 must be in [0, 1), got {opt.b1!r}, {opt.b2!r}")
    _require(opt.warmup_epochs >= 0, f"optimizer.warmup_epochs must be >= 0, got {opt.warmup_epochs!r}")
    _require(all(0 < b < 1 for b in opt.step_boundaries),
             f"optimizer.step_boundaries must be fractions in (0, 1), got {opt.step_boundaries!r}")
    for key in ("data_devices", "sweep_devices", "population_shards"):
        value = config.parallel[key]
        _require(_is_int(value) and value >= 0, f"parallel.{key} must be an integer >= 0 (0 = automatic), got {value!r}")
    _require(_is_int(config.checkpoint.keep) and config.checkpoint.keep > 0,
             f"checkpoint.keep must be an integer > 0, got {config.checkpoint.keep!r}")
    _require(_is_int(config.checkpoint.every_steps) and config.checkpoint.every_steps >= 0,
             f"checkpoint.every_steps must be an integer >= 0, got {config.checkpoint.every_steps!r}")


def semantic_differences(saved: dict, current: dict, prefix: str = "",
                         ignored: tuple[str, ...] = NON_SEMANTIC_PREFIXES) -> list[str]:
    """Keys whose values differ between two config dicts, ignoring keys under ``ignored``."""
    keys = sorted(set(saved) | set(current))
    differences = []
    for key in keys:
        path = f"{prefix}{key}"
        if any(path.startswith(p) for p in ignored):
            continue
        a, b = saved.get(key, "<missing>"), current.get(key, "<missing>")
        if isinstance(a, dict) and isinstance(b, dict):
            differences += semantic_differences(a, b, path + ".", ignored)
        elif a != b:
            differences.append(f"{path}: {a!r} in the workdir, {b!r} now")
    return differences
