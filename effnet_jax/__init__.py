"""effnet-jax: EffNet (Freeman et al., ICIP 2018) and its comparison models in JAX/Flax.

The models and summaries import eagerly; ``train_and_evaluate``, ``evaluate_workdir`` and
``sweep`` load the training stack (Optax, Orbax, TFDS) on first use.
"""

from effnet_jax.models import EffNet, EffNetBlock, create_model, list_models
from effnet_jax.summary import ModelSummary, summarize

__version__ = "0.1.0"

_LAZY = {
    "train_and_evaluate": "effnet_jax.training",
    "evaluate_workdir": "effnet_jax.training",
    "sweep": "effnet_jax.sweeps",
}


def __getattr__(name):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'effnet_jax' has no attribute {name!r}")


__all__ = [
    "EffNet",
    "EffNetBlock",
    "ModelSummary",
    "create_model",
    "evaluate_workdir",
    "list_models",
    "summarize",
    "sweep",
    "train_and_evaluate",
]
