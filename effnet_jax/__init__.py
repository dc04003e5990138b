"""effnet-jax: EffNet (Freeman et al., ICIP 2018) and its comparison models in JAX/Flax.

The models and summaries import eagerly; ``train_and_evaluate``, ``evaluate_workdir``, ``load``,
``sweep``, ``enable_compilation_cache``, ``tune_cpu`` and the submodules (``effnet_jax.convert``,
...) load on first use. Importing the package changes nothing in the process (no allocator
settings, JAX options or listeners): process tuning is the entry script's call,
``effnet_jax.tune_cpu()``.
"""

from effnet_jax.models import (
    EffNet,
    EffNetBlock,
    ImageClassifier,
    create_model,
    estimate_batch_stats,
    list_models,
    register_model,
)
from effnet_jax.summary import ModelSummary, summarize

def _package_version() -> str:
    """The installed distribution's version (``pyproject.toml`` is its one source)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("effnet-jax")
    except PackageNotFoundError:  # imported from a source tree that was never installed
        return "0+unknown"


__version__ = _package_version()

_LAZY = {
    "train_and_evaluate": "effnet_jax.training",
    "evaluate_workdir": "effnet_jax.training",
    "load": "effnet_jax.training.trained",
    "enable_compilation_cache": "effnet_jax.compilation_cache",
    "sweep": "effnet_jax.sweeps",
    "tune_cpu": "effnet_jax.host",
}
_LAZY_MODULES = ("compilation_cache", "configs", "convert", "config", "data", "host", "paper", "parallel", "sweeps", "training")


def __getattr__(name):
    import importlib

    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    if name in _LAZY_MODULES:  # effnet_jax.convert etc. without importing them up front
        return importlib.import_module(f"effnet_jax.{name}")
    raise AttributeError(f"module 'effnet_jax' has no attribute {name!r}")


__all__ = [
    "EffNet",
    "EffNetBlock",
    "ImageClassifier",
    "ModelSummary",
    "create_model",
    "enable_compilation_cache",
    "estimate_batch_stats",
    "evaluate_workdir",
    "list_models",
    "load",
    "register_model",
    "summarize",
    "sweep",
    "train_and_evaluate",
    "tune_cpu",
]
