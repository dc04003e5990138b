"""Sweep specifications: which hyperparameters vary, how, and the members they expand to.

A sweep is the ``sweep`` section of a config::

    config.sweep.seeds = (0, 1, 2, 3, 4)                      # the paper's 5 runs
    config.sweep.grid.learning_rate = (1e-3, 3e-3)            # grid axes (all combinations)
    config.sweep.random.weight_decay = ("log_uniform", 1e-5, 1e-3)
    config.sweep.num_samples = 4                              # random draws of the random axes

Members are ``grid x random samples x seeds``. Every swept name is one of ``SWEEPABLE``: a
number the train step takes in ``hparams`` (so one compiled program trains all members).
Everything is checked before anything compiles.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from typing import Any

import numpy as np

from effnet_jax.errors import ConfigError

# name -> (config key it overrides, lowest allowed, whether the lowest is allowed, highest or None)
SWEEPABLE: dict[str, tuple[str, float, bool, float | None]] = {
    "learning_rate": ("optimizer.learning_rate", 0.0, False, None),
    "b1": ("optimizer.b1", 0.0, True, 1.0),
    "b2": ("optimizer.b2", 0.0, True, 1.0),
    "eps": ("optimizer.eps", 0.0, False, None),
    "momentum": ("optimizer.momentum", 0.0, True, 1.0),
    "weight_decay": ("optimizer.weight_decay", 0.0, True, None),
    "grad_clip_norm": ("optimizer.grad_clip_norm", 0.0, False, None),
    "label_smoothing": ("train.label_smoothing", 0.0, True, 1.0),
    "dropout_rate": ("model.options.dropout_rate", 0.0, True, 1.0),
}
DISTRIBUTIONS = ("uniform", "log_uniform")


@dataclasses.dataclass(frozen=True)
class Member:
    """One model of the population: its hyperparameters, seed and configuration group."""

    index: int
    config_id: int  # members differing only in seed share it (for mean/std over seeds)
    seed: int
    hparams: dict[str, float]

    @property
    def name(self) -> str:
        """A short readable id, e.g. ``003_learning_rate=0.003_seed=1``."""
        values = "_".join(f"{k}={v:.3g}" for k, v in sorted(self.hparams.items()))
        return f"{self.index:03d}_{values + '_' if values else ''}seed={self.seed}"


def _check_value(name: str, value: Any, where: str) -> float:
    low, low_ok, high = SWEEPABLE[name][1], SWEEPABLE[name][2], SWEEPABLE[name][3]
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ConfigError(f"{where}: {name} values must be finite numbers, got {value!r}")
    if value < low or (value == low and not low_ok) or (high is not None and value >= high):
        bound = f"{'>=' if low_ok else '>'} {low}" + (f" and < {high}" if high is not None else "")
        raise ConfigError(f"{where}: {name} must be {bound}, got {value!r}")
    return float(value)


def _check_name(name: str, where: str) -> None:
    if name not in SWEEPABLE:
        raise ConfigError(f"{where}: unknown hyperparameter {name!r}; sweepable: {', '.join(sorted(SWEEPABLE))}")


def validate_sweep(config) -> None:
    """Raises a specific ``ValueError`` for any bad axis, value, distribution or seed list."""
    sweep = config.sweep
    seeds = tuple(sweep.seeds)
    if not seeds:
        raise ConfigError("sweep.seeds is empty: give at least one seed")
    if any(isinstance(s, bool) or not isinstance(s, int) or s < 0 for s in seeds):
        raise ConfigError(f"sweep.seeds must be non-negative integers, got {seeds!r}")
    if len(set(seeds)) != len(seeds):
        raise ConfigError(f"sweep.seeds has duplicates: {seeds!r}")
    for name, values in sweep.grid.items():
        where = f"sweep.grid.{name}"
        _check_name(name, where)
        if not isinstance(values, (tuple, list)) or not values:
            raise ConfigError(f"{where} is an empty axis: give a non-empty tuple of values, got {values!r}")
        for value in values:
            _check_value(name, value, where)
    for name, spec in sweep.random.items():
        where = f"sweep.random.{name}"
        _check_name(name, where)
        if name in sweep.grid:
            raise ConfigError(f"{where}: {name} is already a grid axis")
        if not isinstance(spec, (tuple, list)) or len(spec) != 3 or spec[0] not in DISTRIBUTIONS:
            raise ConfigError(f"{where} must be (distribution, low, high) with distribution in {DISTRIBUTIONS}, got {spec!r}")
        low, high = _check_value(name, spec[1], where), _check_value(name, spec[2], where)
        if not low < high:
            raise ConfigError(f"{where}: low must be < high, got {low!r} >= {high!r}")
        if spec[0] == "log_uniform" and low <= 0:
            raise ConfigError(f"{where}: log_uniform needs low > 0, got {low!r}")
    if sweep.random and sweep.num_samples <= 0:
        raise ConfigError(f"sweep.random has axes but sweep.num_samples is {sweep.num_samples}: set it > 0")
    if sweep.chunk_size < 0:
        raise ConfigError(f"sweep.chunk_size must be >= 0 (0 = automatic), got {sweep.chunk_size}")
    swept = set(sweep.grid) | set(sweep.random)
    if "grad_clip_norm" in swept and config.optimizer.grad_clip_norm <= 0:
        raise ConfigError("sweeping grad_clip_norm needs clipping on: set optimizer.grad_clip_norm > 0")
    if {"momentum"} & swept and config.optimizer.name != "sgd":
        raise ConfigError(f"momentum only affects optimizer.name='sgd', not {config.optimizer.name!r}")


def expand_members(config) -> list[Member]:
    """All members, grid-major then random samples then seeds (validated first)."""
    validate_sweep(config)
    sweep = config.sweep
    grid_names = sorted(sweep.grid)
    grid = [dict(zip(grid_names, values)) for values in itertools.product(*(sweep.grid[n] for n in grid_names))]
    rng = np.random.default_rng(sweep.sample_seed)
    samples: list[dict[str, float]] = [{}]
    if sweep.random:
        samples = []
        for _ in range(sweep.num_samples):
            draw = {}
            for name in sorted(sweep.random):
                kind, low, high = sweep.random[name]
                if kind == "uniform":
                    draw[name] = float(rng.uniform(low, high))
                else:
                    draw[name] = float(np.exp(rng.uniform(np.log(low), np.log(high))))
            samples.append(draw)
    members = []
    for config_id, (point, sample) in enumerate(itertools.product(grid, samples)):
        hparams = {k: float(v) for k, v in {**point, **sample}.items()}
        for seed in sweep.seeds:
            members.append(Member(len(members), config_id, int(seed), hparams))
    return members


def swept_names(config) -> list[str]:
    """The hyperparameters that vary in this sweep."""
    return sorted(set(config.sweep.grid) | set(config.sweep.random))
