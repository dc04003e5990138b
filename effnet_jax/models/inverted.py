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
Plain Flax, like ``effnet.py``; on CPU ``effnet_jax.fast`` computes them on the same variables.
"""

from __future__ import annotations

from typing import ClassVar

import flax.linen as nn

from effnet_jax.errors import ConfigError
from effnet_jax.models.base import ImageClassifier, LayerOptions


class Stem(nn.Module):
    """3x3 conv, BatchNorm, activation, 2x2 max-pool."""

    features: int
    activation: str
    options: LayerOptions = LayerOptions()

    @nn.compact
    def __call__(self, x, train: bool):
        o = self.options
        x = o.conv(self.features, (3, 3), name="conv")(x)
        x = o.activation(self.activation)(o.norm(train, name="conv_norm")(x))
        return nn.max_pool(x, (2, 2), strides=(2, 2))


class InvertedBottleneck(nn.Module):
    """MobileNetV2 block halving H and W by a strided depthwise conv or by a max-pool after it."""

    features: int
    expansion: int
    activation: str = "relu6"
    downsample: str = "stride"
    options: LayerOptions = LayerOptions()

    @nn.compact
    def __call__(self, x, train: bool):
        if self.downsample not in ("stride", "pool"):
            raise ConfigError(f"downsample must be 'stride' or 'pool', got {self.downsample!r}")
        o = self.options
        act = o.activation(self.activation)
        hidden = x.shape[-1] * self.expansion
        strides = (2, 2) if self.downsample == "stride" else (1, 1)
        x = o.conv(hidden, (1, 1), name="expand")(x)
        x = act(o.norm(train, name="expand_norm")(x))
        x = o.conv(hidden, (3, 3), strides, groups=hidden, name="depthwise")(x)
        x = act(o.norm(train, name="depthwise_norm")(x))
        if self.downsample == "pool":
            x = nn.max_pool(x, (2, 2), strides=(2, 2))
        x = o.conv(self.features, (1, 1), name="project")(x)
        return o.norm(train, name="project_norm")(x)  # linear bottleneck: no activation


class EffNetV2Block(nn.Module):
    """The paper's section-6 EffNet block (see the module docstring)."""

    features: int
    expansion: int
    options: LayerOptions = LayerOptions()

    @nn.compact
    def __call__(self, x, train: bool):
        o = self.options
        leaky, relu = o.activation("leaky_relu"), o.activation("relu")
        hidden = max(1, (x.shape[-1] * self.expansion) // 2)
        x = o.conv(hidden, (1, 1), name="expand")(x)
        x = leaky(o.norm(train, name="expand_norm")(x))
        x = o.conv(2 * hidden, (1, 3), groups=hidden, name="depthwise_1x3")(x)  # multiplier 2
        x = relu(o.norm(train, name="depthwise_1x3_norm")(x))
        x = nn.max_pool(x, (2, 1), strides=(2, 1))
        x = o.conv(2 * hidden, (3, 1), groups=2 * hidden, name="depthwise_3x1")(x)
        x = relu(o.norm(train, name="depthwise_3x1_norm")(x))
        x = o.conv(self.features, (1, 2), (1, 2), padding="VALID", name="project")(x)
        return leaky(o.norm(train, name="project_norm")(x))


class _ExpandedNetwork(ImageClassifier):
    """Shared trunk of the section-6 models: stem, then one block per remaining width."""

    widths: tuple[int, ...] = (64, 128, 256)
    expansion: int = 6
    first_kernel_path: ClassVar[tuple[str, ...]] = ("stem", "conv", "kernel")
    stem_activation: ClassVar[str] = "relu6"

    def __post_init__(self):
        if not isinstance(self.expansion, int) or self.expansion <= 0:
            raise ConfigError(f"expansion must be a positive integer, got {self.expansion!r}")
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
