"""effnet-jax: EffNet (Freeman et al., ICIP 2018) and its comparison models in JAX/Flax."""

from effnet_jax.models import EffNet, EffNetBlock, create_model, list_models
from effnet_jax.summary import ModelSummary, summarize

__version__ = "0.1.0"

__all__ = [
    "EffNet",
    "EffNetBlock",
    "ModelSummary",
    "create_model",
    "list_models",
    "summarize",
]
