"""The paper's Table-1 comparison networks: vanilla baseline, MobileNet and ShuffleNet.

Layer sequences follow Table 1 of the paper (CIFAR-10, widths (64, 128, 256)); the SVHN and
GTSRB presets scale the widths. To compare blocks and nothing else, every convolution here is
followed by the same post-processing as EffNet's (LeakyReLU, then BatchNorm). Plain Flax
(``nn.Conv``, depthwise through ``feature_group_count``, ``nn.BatchNorm``, ``nn.max_pool``),
like ``effnet.py``; on CPU ``effnet_jax.fast`` computes them on the same variables.
"""

from __future__ import annotations

from typing import ClassVar

import flax.linen as nn
import jax.numpy as jnp

from effnet_jax.errors import ConfigError
from effnet_jax.models.base import ImageClassifier, LayerOptions


def channel_shuffle(x, groups: int):
    """ShuffleNet's channel shuffle: ``[.., g * n]`` -> transpose to ``[.., n * g]``."""
    *lead, channels = x.shape
    x = x.reshape(*lead, groups, channels // groups)
    return jnp.swapaxes(x, -1, -2).reshape(*lead, channels)


class ConvPool(nn.Module):
    """3x3 convolution, LeakyReLU, BatchNorm, 2x2 max-pool: the baseline's layer and every stem."""

    features: int
    options: LayerOptions = LayerOptions()

    @nn.compact
    def __call__(self, x, train: bool):
        o = self.options
        act = o.activation("leaky_relu")
        x = o.conv(self.features, (3, 3), name="conv")(x)
        x = o.norm(train, name="conv_norm")(act(x))
        return nn.max_pool(x, (2, 2), strides=(2, 2))


class DepthwiseSeparable(nn.Module):
    """MobileNet's unit: depthwise 3x3 with stride 2, then a pointwise projection."""

    features: int
    options: LayerOptions = LayerOptions()

    @nn.compact
    def __call__(self, x, train: bool):
        o = self.options
        act = o.activation("leaky_relu")
        channels = x.shape[-1]
        x = o.conv(channels, (3, 3), (2, 2), groups=channels, name="depthwise")(x)
        x = o.norm(train, name="depthwise_norm")(act(x))
        x = o.conv(self.features, (1, 1), name="pointwise")(x)
        return o.norm(train, name="pointwise_norm")(act(x))


class ShuffleUnit(nn.Module):
    """ShuffleNet's strided unit: gc 1x1 -> shuffle -> depthwise 3x3 stride 2 -> gc 1x1."""

    features: int
    bottleneck_features: int
    groups: int = 4
    options: LayerOptions = LayerOptions()

    @nn.compact
    def __call__(self, x, train: bool):
        o = self.options
        act = o.activation("leaky_relu")
        inner, groups = self.bottleneck_features, self.groups
        if x.shape[-1] % groups or inner % groups or self.features % groups:
            raise ConfigError(f"ShuffleUnit with groups={groups} needs input, bottleneck and output channels "
                              f"divisible by it, got {x.shape[-1]} -> {inner} -> {self.features}")
        x = o.conv(inner, (1, 1), groups=groups, name="group_conv_in")(x)
        x = o.norm(train, name="group_conv_in_norm")(act(x))
        x = channel_shuffle(x, groups)
        x = o.conv(inner, (3, 3), (2, 2), groups=inner, name="depthwise")(x)
        x = o.norm(train, name="depthwise_norm")(act(x))
        x = o.conv(self.features, (1, 1), groups=groups, name="group_conv_out")(x)
        return o.norm(train, name="group_conv_out_norm")(act(x))


class Baseline(ImageClassifier):
    """Vanilla CNN: ``[3x3 conv + max-pool] x len(widths)`` and a linear classifier."""

    widths: tuple[int, ...] = (64, 128, 256)
    first_kernel_path: ClassVar[tuple[str, ...]] = ("layer_0", "conv", "kernel")

    @property
    def num_downsamplings(self) -> int:  # type: ignore[override]
        return len(self.widths)

    def features(self, x, train: bool):
        for i, width in enumerate(self.widths):
            x = ConvPool(width, options=self.options, name=f"layer_{i}")(x, train)
        return x


class MobileNet(ImageClassifier):
    """Table 1's MobileNet: 3x3 conv + max-pool stem, then depthwise-separable units (stride 2)."""

    widths: tuple[int, ...] = (64, 128, 256)
    first_kernel_path: ClassVar[tuple[str, ...]] = ("stem", "conv", "kernel")

    @property
    def num_downsamplings(self) -> int:  # type: ignore[override]
        return len(self.widths)

    def features(self, x, train: bool):
        x = ConvPool(self.widths[0], options=self.options, name="stem")(x, train)
        for i, width in enumerate(self.widths[1:]):
            x = DepthwiseSeparable(width, options=self.options, name=f"unit_{i}")(x, train)
        return x


class ShuffleNet(ImageClassifier):
    """Table 1's ShuffleNet: stem, then strided shuffle units with 4-group 1x1 convolutions.

    The bottleneck of a unit is a quarter of its output width, rounded up to a multiple of
    ``groups`` (so the SVHN/GTSRB presets stay valid): 32 and 64 for CIFAR-10, as Table 1.
    """

    widths: tuple[int, ...] = (64, 128, 256)
    groups: int = 4
    first_kernel_path: ClassVar[tuple[str, ...]] = ("stem", "conv", "kernel")

    def __post_init__(self):
        if self.groups <= 0:
            raise ConfigError(f"groups must be a positive integer, got {self.groups!r}")
        bad = [w for w in self.widths if w % self.groups]
        if bad:
            raise ConfigError(f"ShuffleNet widths must be divisible by groups={self.groups}, got {bad}")
        super().__post_init__()

    @property
    def num_downsamplings(self) -> int:  # type: ignore[override]
        return len(self.widths)

    def bottleneck(self, features: int) -> int:
        """A quarter of ``features``, rounded up to a multiple of ``groups``."""
        quarter = -(-features // 4)
        return -(-quarter // self.groups) * self.groups

    def features(self, x, train: bool):
        x = ConvPool(self.widths[0], options=self.options, name="stem")(x, train)
        for i, width in enumerate(self.widths[1:]):
            x = ShuffleUnit(
                width, self.bottleneck(width), self.groups, options=self.options, name=f"unit_{i}"
            )(x, train)
        return x
