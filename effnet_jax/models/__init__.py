"""The model zoo: EffNet and the networks the paper compares it with, found by name."""

from effnet_jax.models.base import ImageClassifier
from effnet_jax.models.comparison import Baseline, MobileNet, ShuffleNet
from effnet_jax.models.effnet import EffNet, EffNetBlock
from effnet_jax.models.inverted import EffNetV2Style, MobileNetV2, MobImp
from effnet_jax.models.base import LayerOptions
from effnet_jax.models.registry import (
    DATASET_INPUT_SHAPES,
    DATASET_PRESETS,
    create_model,
    list_models,
    model_options,
    register_model,
)
from effnet_jax.models.statistics import estimate_batch_stats

__all__ = [
    "Baseline",
    "DATASET_INPUT_SHAPES",
    "DATASET_PRESETS",
    "EffNet",
    "EffNetBlock",
    "EffNetV2Style",
    "ImageClassifier",
    "LayerOptions",
    "MobImp",
    "MobileNet",
    "MobileNetV2",
    "ShuffleNet",
    "create_model",
    "estimate_batch_stats",
    "list_models",
    "model_options",
    "register_model",
]
