"""EffNet (Freeman et al., ICIP 2018): the block and the network of the seed and the paper.

Block (``features`` out, ``bottleneck_features`` inside), NHWC, seed defaults::

    1x1 conv -> bottleneck      LeakyReLU(0.3) -> BN
    depthwise 1x3 (pad W)       LeakyReLU -> BN
    max-pool 2x1 (halves H)
    depthwise 3x1 (pad H)       LeakyReLU -> BN
    conv 1x2, stride (1, 2)     LeakyReLU -> BN     (halves W, -> features)

Documented variants where the references disagree:

* ``final_conv="seed"`` (PyTorch seed: kernel (1, 2), stride (1, 2), VALID) or ``"keras"``
  (Keras original: kernel (2, 1), stride (1, 2), SAME). Same parameter count; on odd widths
  VALID drops the last column while SAME keeps it (see ``EffNet`` for 28x28 inputs).
* ``pool_axis="height"`` (both code references: 2x1 pool, stride along W) or ``"width"`` (the
  paper's section 4.2: 1x2 pool, then the 2-tap conv strides along H).
* Bottleneck width ``max(features // 2, min_bottleneck_features)``: the paper's ch_out/2 with a
  minimum of 6 channels (matters only for small widths such as the GTSRB preset; the seed's
  widths are unaffected).
"""

from __future__ import annotations

from typing import ClassVar

import flax.linen as nn

from effnet_jax.models.base import ImageClassifier
from effnet_jax.models.layers import (
    DepthwiseConv,
    LayerOptions,
    MaxPool,
    PairConv,
    PointwiseConv,
)
from effnet_jax.models.norm import ActivationNorm

POOL_AXES = ("height", "width")
FINAL_CONVS = ("seed", "keras")


def _check_variant(pool_axis: str, final_conv: str) -> None:
    if pool_axis not in POOL_AXES:
        raise ValueError(f"pool_axis must be one of {POOL_AXES}, got {pool_axis!r}")
    if final_conv not in FINAL_CONVS:
        raise ValueError(f"final_conv must be one of {FINAL_CONVS}, got {final_conv!r}")


class EffNetBlock(nn.Module):
    """One EffNet block: bottleneck 1x1, separable depthwise 1x3 / pool / 3x1, 2-tap strided conv.

    Maps ``[N, H, W, C]`` to ``[N, H // 2, W // 2, features]`` (``ceil(W / 2)`` with the Keras
    final conv). Every convolution is followed by activation then BatchNorm, as in the seed.
    """

    features: int
    bottleneck_features: int
    pool_axis: str = "height"
    final_conv: str = "seed"
    options: LayerOptions = LayerOptions()

    def __post_init__(self):
        if self.features <= 0 or self.bottleneck_features <= 0:
            raise ValueError(
                "EffNetBlock widths must be positive, got features="
                f"{self.features}, bottleneck_features={self.bottleneck_features}"
            )
        _check_variant(self.pool_axis, self.final_conv)
        super().__post_init__()

    @nn.compact
    def __call__(self, x, train: bool):
        opts = self.options
        pool_height = self.pool_axis == "height"

        def post(y, name, pool=None):
            return ActivationNorm(options=opts, name=name)(y, train, pool)

        expand = PointwiseConv(self.bottleneck_features, options=opts, name="expand")
        x = post(expand(x, defer=True), "expand_norm")  # fused with its BN on a narrow input (the image)
        x = DepthwiseConv((1, 3), options=opts, name="depthwise_1x3")(x)
        pool = MaxPool((2, 1) if pool_height else (1, 2), opts.implementation, name="pool")
        x = post(x, "depthwise_1x3_norm", pool)  # BN and pool share one gradient pass
        x = DepthwiseConv((3, 1), options=opts, name="depthwise_3x1")(x)
        x = post(x, "depthwise_3x1_norm")
        x = PairConv(
            self.features,
            stride_axis=2 if pool_height else 1,
            variant=self.final_conv,
            options=opts,
            name="project",
        )(x)
        return post(x, "project_norm")


class EffNet(ImageClassifier):
    """The EffNet network: a stack of ``EffNetBlock`` and a linear classifier on the flat map.

    Defaults reproduce the seed: widths (64, 128, 256) with bottlenecks (32, 64, 128), 10
    classes, 151,146 trainable parameters. A 32x32 input gives a 4x4x256 = 4096-wide head.

    Other input sizes work as long as each side is at least 8: 28x28 (Fashion-MNIST) gives
    28 -> 14 -> 7 -> 3 on both axes with the seed's VALID conv (3x3x256 = 2304 features, the
    last column of the 7-wide map is dropped), and 3x4x256 = 3072 with ``final_conv="keras"``.
    """

    widths: tuple[int, ...] = (64, 128, 256)
    min_bottleneck_features: int = 6
    pool_axis: str = "height"
    final_conv: str = "seed"

    first_kernel_path: ClassVar[tuple[str, ...]] = ("block_0", "expand", "kernel")

    def __post_init__(self):
        _check_variant(self.pool_axis, self.final_conv)
        if self.min_bottleneck_features <= 0:
            raise ValueError(
                f"min_bottleneck_features must be positive, got {self.min_bottleneck_features!r}"
            )
        super().__post_init__()

    @property
    def num_downsamplings(self) -> int:  # type: ignore[override]
        return len(self.widths)

    def bottleneck(self, features: int) -> int:
        """Bottleneck width of a block with ``features`` outputs: ch_out / 2, at least the min."""
        return max(features // 2, self.min_bottleneck_features)

    def features(self, x, train: bool):
        for i, width in enumerate(self.widths):
            x = EffNetBlock(
                width,
                self.bottleneck(width),
                pool_axis=self.pool_axis,
                final_conv=self.final_conv,
                options=self.options,
                name=f"block_{i}",
            )(x, train)
        return x
