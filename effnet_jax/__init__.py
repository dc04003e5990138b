"""effnet-jax: EffNet (Freeman et al., ICIP 2018) and its comparison models in JAX/Flax.

The models and summaries import eagerly; ``train_and_evaluate``, ``evaluate_workdir``, ``load``,
``sweep``, ``enable_compilation_cache`` and the submodules (``effnet_jax.convert``, ...) load on
first use.
"""

from effnet_jax import host as _host

_host.tune_allocator()  # before any XLA:CPU call allocates: see effnet_jax.host

from effnet_jax.models import EffNet, EffNetBlock, ImageClassifier, create_model, list_models, register_model  # noqa: E402
from effnet_jax.summary import ModelSummary, summarize  # noqa: E402

__version__ = "0.1.0"

_LAZY = {
    "train_and_evaluate": "effnet_jax.training",
    "evaluate_workdir": "effnet_jax.training",
    "load": "effnet_jax.training.trained",
    "enable_compilation_cache": "effnet_jax.compilation_cache",
    "sweep": "effnet_jax.sweeps",
}
_LAZY_MODULES = ("compilation_cache", "convert", "config", "data", "host", "paper", "parallel", "sweeps", "training")


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
    "evaluate_workdir",
    "list_models",
    "load",
    "register_model",
    "summarize",
    "sweep",
    "train_and_evaluate",
]
