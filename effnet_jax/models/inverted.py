"""The paper's section-6 models: MobileNetV2-style blocks at expansion t, and EffNet's answer.

All three share a stem (3x3 conv + 2x2 max-pool, as the paper's first layer) and one block per
remaining width, each halving height and width, with BatchNorm before the activation (the
MobileNetV2 convention):

* ``mobilenet_v2``: 1x1 expand to ``C*t`` (ReLU6) -> depthwise 3x3 stride 2 (ReLU6) -> linear
  1x1 projection.
* ``mob_imp``: the paper's improved MobileNetV2: max-pool instead of the strided depthwise
  conv (the depthwise runs at full resolution) and LeakyReLU, t = 6.
* ``effnet_v2style``: 1x1 expand to ``floor(C*t/2)`` (LeakyReLU) -> depthwise 1x3 with
  multiplier 2 (ReLU) -> max-pool 2x1 -> depthwise 3x1 (ReLU) -> 2-tap conv stride (1, 2) to
  the output width (LeakyReLU: the paper puts leaky ReLU on every pointwise layer).

With widths (12, 24, 48) these reproduce the paper's SVHN FLOPs exactly; see the summary.
"""

from __future__ import annotations

from typing import ClassVar

import flax.linen as nn

from effnet_jax.models.base import ImageClassifier
from effnet_jax.models.layers import (
    Conv,
    DepthwiseConv,
    LayerOptions,
    MaxPool,
    PairConv,
    PointwiseConv,
)
from effnet_jax.models.norm import ActivationNorm


class Stem(nn.Module):
    """3x3 conv, BN + activation, 2x2 max-pool."""

    features: int
    activation: str
    options: LayerOptions = LayerOptions()

    @nn.compact
    def __call__(self, x, train: bool):
        x = Conv(self.features, (3, 3), options=self.options, name="conv")(x)
        x = ActivationNorm(self.activation, "bn_act", self.options, name="conv_norm")(x, train)
        return MaxPool((2, 2), self.options.implementation, name="pool")(x)


class InvertedBottleneck(nn.Module):
    """MobileNetV2 block halving H and W by a strided depthwise conv or by a max-pool after it."""

    features: int
    expansion: int
    activation: str = "relu6"
    downsample: str = "stride"
    options: LayerOptions = LayerOptions()

    @nn.compact
    def __call__(self, x, train: bool):
        opts = self.options
        hidden = x.shape[-1] * self.expansion
        x = PointwiseConv(hidden, options=opts, name="expand")(x)
        x = ActivationNorm(self.activation, "bn_act", opts, name="expand_norm")(x, train)
        strides = (2, 2) if self.downsample == "stride" else (1, 1)
        x = DepthwiseConv((3, 3), strides, options=opts, name="depthwise")(x)
        x = ActivationNorm(self.activation, "bn_act", opts, name="depthwise_norm")(x, train)
        if self.downsample == "pool":
            x = MaxPool((2, 2), opts.implementation, name="pool")(x)
        x = PointwiseConv(self.features, options=opts, name="project")(x)
        return ActivationNorm("linear", "bn_act", opts, name="project_norm")(x, train)


class EffNetV2Block(nn.Module):
    """The paper's section-6 EffNet block (see the module docstring)."""

    features: int
    expansion: int
    options: LayerOptions = LayerOptions()

    @nn.compact
    def __call__(self, x, train: bool):
        opts = self.options
        hidden = max(1, (x.shape[-1] * self.expansion) // 2)
        x = PointwiseConv(hidden, options=opts, name="expand")(x)
        x = ActivationNorm("leaky_relu", "bn_act", opts, name="expand_norm")(x, train)
        x = DepthwiseConv((1, 3), depth_multiplier=2, options=opts, name="depthwise_1x3")(x)
        x = ActivationNorm("relu", "bn_act", opts, name="depthwise_1x3_norm")(x, train)
        x = MaxPool((2, 1), opts.implementation, name="pool")(x)
        x = DepthwiseConv((3, 1), options=opts, name="depthwise_3x1")(x)
        x = ActivationNorm("relu", "bn_act", opts, name="depthwise_3x1_norm")(x, train)
        x = PairConv(self.features, options=opts, name="project")(x)
        return ActivationNorm("leaky_relu", "bn_act", opts, name="project_norm")(x, train)


class _ExpandedNetwork(ImageClassifier):
    """Shared trunk of the section-6 models: stem, then one block per remaining width."""

    widths: tuple[int, ...] = (64, 128, 256)
    expansion: int = 6
    first_kernel_path: ClassVar[tuple[str, ...]] = ("stem", "conv", "kernel")
    stem_activation: ClassVar[str] = "relu6"

    def __post_init__(self):
        if not isinstance(self.expansion, int) or self.expansion <= 0:
            raise ValueError(f"expansion must be a positive integer, got {self.expansion!r}")
        super().__post_init__()

    @property
    def num_downsamplings(self) -> int:  # type: ignore[override]
        return len(self.widths)

    def block(self, width: int, index: int) -> nn.Module:
        """The block producing ``width`` channels at position ``index``."""
        raise NotImplementedError

    def features(self, x, train: bool):
        x = Stem(self.widths[0], self.stem_activation, self.options, name="stem")(x, train)
        for i, width in enumerate(self.widths[1:]):
            x = self.block(width, i)(x, train)
        return x


class MobileNetV2(_ExpandedNetwork):
    """MobileNetV2 at expansion ``t`` (2, 4 or 6 in the paper), ReLU6, strided depthwise."""

    def block(self, width, index):
        return InvertedBottleneck(
            width, self.expansion, "relu6", "stride", self.options, name=f"block_{index}"
        )


class MobImp(_ExpandedNetwork):
    """The paper's ``mob_imp``: MobileNetV2 (t=6) with max-pooling and LeakyReLU."""

    stem_activation: ClassVar[str] = "leaky_relu"

    def block(self, width, index):
        return InvertedBottleneck(
            width, self.expansion, "leaky_relu", "pool", self.options, name=f"block_{index}"
        )


class EffNetV2Style(_ExpandedNetwork):
    """The paper's section-6 EffNet at expansion ``t``, compared with MobileNetV2."""

    stem_activation: ClassVar[str] = "leaky_relu"

    def block(self, width, index):
        return EffNetV2Block(width, self.expansion, self.options, name=f"block_{index}")
