"""EffNet (Freeman et al., ICIP 2018): the block and the network, in plain Flax.

The usual changes to the block are its fields, and every combination of them keeps the fused
CPU block: the activation ``act`` (any element-wise function or a name from
``activations.ACTIVATIONS``), the depthwise ``kernel_size`` (one odd size, or two: the 1xk and
the kx1), an optional squeeze-excite (``se_ratio``) and, on the network, the bottleneck width
(``bottleneck_ratio``). This file is also the one to edit for anything else: it is written with
``nn.Conv``, ``nn.BatchNorm``, ``nn.max_pool`` and the activation, in the block's order, and
knows nothing of how it is run. On CPU the network runs through ``effnet_jax.fast``
(``implementation="auto"``), which computes this exact block with hand-differentiated kernels on
the same variables; an edited ``__call__``, or a subclass, is not recognised there and runs
layer by layer instead (still with fast convolutions and BatchNorm), never as the old block, and
the log and results say so.

Block (``features`` out, ``bottleneck_features`` inside), NHWC, seed defaults::

    1x1 conv -> bottleneck          act -> BN           (act: LeakyReLU(0.3))
    depthwise 1xk (pad W)           act -> BN
    max-pool 2x1 (halves H)
    depthwise kx1 (pad H)           act -> BN
    [squeeze-excite]                                    (se_ratio > 0)
    conv 1x2, stride (1, 2)         act -> BN           (halves W, -> features)

Documented variants where the references disagree:

* ``final_conv="seed"`` (PyTorch seed: kernel (1, 2), stride (1, 2), VALID) or ``"keras"``
  (Keras original: kernel (2, 1), stride (1, 2), SAME). Same parameter count; on odd widths
  VALID drops the last column while SAME keeps it (see ``EffNet`` for 28x28 inputs).
* ``pool_axis="height"`` (both code references: 2x1 pool, stride along W) or ``"width"`` (the
  paper's section 4.2: 1x2 pool, then the 2-tap conv strides along H).
* Bottleneck width ``max(int(features * bottleneck_ratio), min_bottleneck_features)``: the
  paper's ch_out/2 with a minimum of 6 channels (matters only for small widths such as the GTSRB
  preset; the seed's widths are unaffected).

Squeeze-excite (Hu et al. 2018, as in MobileNetV3/EfficientNet, where the references put it:
after the depthwise convolutions, before the projection): the bottleneck's channel means, a
dense layer to ``max(1, round(bottleneck_features * se_ratio))`` with the block's activation, a
dense layer back and a sigmoid that scales each channel. Not in the paper; off by default.
"""

from __future__ import annotations

from functools import partial
from typing import Any, Callable, ClassVar

import flax.linen as nn
import jax.numpy as jnp

from effnet_jax.errors import ConfigError
from effnet_jax.fast.blocks import EFFNET_BLOCK_CALL, effnet_block
from effnet_jax.fast.seam import fused_on_cpu
from effnet_jax.models import activations
from effnet_jax.models.base import KERAS_INIT, ImageClassifier

POOL_AXES = ("height", "width")
FINAL_CONVS = ("seed", "keras")


def depthwise_kernel_sizes(kernel_size) -> tuple[int, int]:
    """``(k_row, k_column)``: the taps of the 1xk and the kx1 depthwise convolutions, from one
    odd size or a pair of them.

    Raises:
      ConfigError: anything but a positive odd integer or two of them.
    """
    sizes = tuple(kernel_size) if isinstance(kernel_size, (tuple, list)) else (kernel_size, kernel_size)
    if len(sizes) != 2 or any(isinstance(k, bool) or not isinstance(k, int) or k < 1 or k % 2 == 0 for k in sizes):
        raise ConfigError(f"kernel_size must be a positive odd integer or two of them, got {kernel_size!r}")
    return sizes


def _check_variant(pool_axis: str, final_conv: str, kernel_size=3, se_ratio: float = 0.0) -> None:
    if pool_axis not in POOL_AXES:
        raise ConfigError(f"pool_axis must be one of {POOL_AXES}, got {pool_axis!r}")
    if final_conv not in FINAL_CONVS:
        raise ConfigError(f"final_conv must be one of {FINAL_CONVS}, got {final_conv!r}")
    depthwise_kernel_sizes(kernel_size)
    if isinstance(se_ratio, bool) or not isinstance(se_ratio, (int, float)) or not 0.0 <= se_ratio <= 1.0:
        raise ConfigError(f"se_ratio must be a number in [0, 1] (0: no squeeze-excite), got {se_ratio!r}")


class SqueezeExcite(nn.Module):
    """Squeeze-excite: channel means -> dense ``reduced`` -> ``act`` -> dense -> sigmoid, times
    the input (Hu et al. 2018; timm's ``SqueezeExcite``)."""

    reduced: int
    act: Callable
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x):
        dense = partial(nn.Dense, dtype=self.dtype, param_dtype=self.param_dtype)
        s = jnp.mean(x, axis=(1, 2))
        s = self.act(dense(self.reduced, name="reduce")(s))
        s = nn.sigmoid(dense(x.shape[-1], name="expand")(s))
        return x * s[:, None, None, :]


def final_conv_geometry(pool_axis: str, final_conv: str) -> tuple[tuple[int, int], tuple[int, int], str]:
    """Kernel, strides and padding of the block's last conv, which halves the axis the pool
    did not: the seed's 2-tap VALID conv along that axis, or Keras' 2-tap SAME conv across it."""
    stride = (1, 2) if pool_axis == "height" else (2, 1)
    if final_conv == "seed":
        return stride, stride, "VALID"
    return stride[::-1], stride, "SAME"


# On CPU (``implementation="auto"`` or ``"fast"``) this exact block runs as one fused function
# with hand-written gradients, ``effnet_jax.fast.blocks.effnet_block``, on its own variables; the
# declaration holds while ``__call__`` keeps the syntax tree the kernel computes, so an edited
# ``__call__`` (or a subclass) runs layer by layer instead, as written. ``implementation="xla"``
# runs this ``__call__`` as written everywhere (where a breakpoint in it fires).
@fused_on_cpu(effnet_block, computes=EFFNET_BLOCK_CALL)
class EffNetBlock(nn.Module):
    """One EffNet block: bottleneck 1x1, separable depthwise 1xk / pool / kx1, 2-tap strided conv.

    Maps ``[N, H, W, C]`` to ``[N, H // 2, W // 2, features]`` (``ceil(W / 2)`` with the Keras
    final conv). Every convolution is followed by the activation, then BatchNorm, as in the seed.

    Attributes:
      features, bottleneck_features: output and inner widths.
      kernel_size: taps of the two depthwise convolutions (the paper's 3), or ``(k_row, k_column)``
        for the 1xk and the kx1.
      pool_axis, final_conv: see the module docstring.
      act: the activation after every convolution: an element-wise function (``nn.gelu``,
        ``nn.relu``, your own) or a name from ``activations.ACTIVATIONS``; ``None``: LeakyReLU
        with ``activation_slope`` (the seed's).
      activation_slope: LeakyReLU negative slope when ``act`` is ``None`` (0 gives ReLU).
      se_ratio: squeeze-excite width as a fraction of ``bottleneck_features``; 0: none.
      bn_momentum, bn_epsilon: ``nn.BatchNorm``'s (Flax convention).
      dtype, param_dtype: compute and parameter dtypes.
    """

    features: int
    bottleneck_features: int
    kernel_size: int | tuple[int, int] = 3
    pool_axis: str = "height"
    final_conv: str = "seed"
    act: Callable | str | None = None
    activation_slope: float = 0.3
    se_ratio: float = 0.0
    bn_momentum: float = 0.99
    bn_epsilon: float = 1e-5
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    def __post_init__(self):
        if self.features <= 0 or self.bottleneck_features <= 0:
            raise ConfigError(
                "EffNetBlock widths must be positive, got features="
                f"{self.features}, bottleneck_features={self.bottleneck_features}"
            )
        _check_variant(self.pool_axis, self.final_conv, self.kernel_size, self.se_ratio)
        self.activation_fn  # an unknown activation name is refused here
        super().__post_init__()

    @property
    def activation_fn(self) -> Callable:
        """The activation function ``act`` stands for."""
        return activations.resolve(self.act, self.activation_slope)

    @property
    def kernel_sizes(self) -> tuple[int, int]:
        """Taps of the 1xk and the kx1 depthwise convolutions."""
        return depthwise_kernel_sizes(self.kernel_size)

    @property
    def se_features(self) -> int:
        """Width of the squeeze-excite's inner layer (0: no squeeze-excite)."""
        return max(1, round(self.bottleneck_features * self.se_ratio)) if self.se_ratio > 0 else 0

    @property
    def final_conv_layout(self) -> tuple[tuple[int, int], tuple[int, int], str]:
        """Kernel, strides and padding of the last convolution (``final_conv_geometry``)."""
        return final_conv_geometry(self.pool_axis, self.final_conv)

    @nn.compact
    def __call__(self, x, train: bool):
        conv = partial(nn.Conv, use_bias=False, kernel_init=KERAS_INIT, dtype=self.dtype,
                       param_dtype=self.param_dtype)
        norm = partial(nn.BatchNorm, use_running_average=not train, momentum=self.bn_momentum,
                       epsilon=self.bn_epsilon, dtype=self.dtype, param_dtype=self.param_dtype)
        act = self.activation_fn
        (k_row, k_column), inner = self.kernel_sizes, self.bottleneck_features
        pool = (2, 1) if self.pool_axis == "height" else (1, 2)
        kernel, strides, padding = self.final_conv_layout

        x = conv(inner, (1, 1), name="expand")(x)
        x = norm(name="expand_norm")(act(x))
        x = conv(inner, (1, k_row), feature_group_count=inner, name=f"depthwise_1x{k_row}")(x)
        x = norm(name=f"depthwise_1x{k_row}_norm")(act(x))
        x = nn.max_pool(x, pool, strides=pool)
        x = conv(inner, (k_column, 1), feature_group_count=inner, name=f"depthwise_{k_column}x1")(x)
        x = norm(name=f"depthwise_{k_column}x1_norm")(act(x))
        if self.se_features:
            x = SqueezeExcite(self.se_features, act, self.dtype, self.param_dtype, name="squeeze_excite")(x)
        x = conv(self.features, kernel, strides, padding=padding, name="project")(x)
        return norm(name="project_norm")(act(x))


class EffNet(ImageClassifier):
    """The EffNet network: a stack of ``EffNetBlock`` and a linear classifier on the flat map.

    Defaults reproduce the seed: widths (64, 128, 256) with bottlenecks (32, 64, 128), 10
    classes, 151,146 trainable parameters. A 32x32 input gives a 4x4x256 = 4096-wide head.

    The block's usual changes are fields here too (``act``, ``kernel_size``, ``se_ratio``,
    ``bottleneck_ratio``: see the module docstring), and keep the fused CPU block, e.g.
    ``EffNet(act=nn.gelu, se_ratio=0.25)``. ``block`` is the block class, so a network of your
    own blocks is ``EffNet(block=MyBlock)`` (a subclass of ``EffNetBlock`` taking the same fields;
    it runs layer by layer on CPU, which the log and results name).

    Other input sizes work as long as each side is at least 8: 28x28 (Fashion-MNIST) gives
    28 -> 14 -> 7 -> 3 on both axes with the seed's VALID conv (3x3x256 = 2304 features, the
    last column of the 7-wide map is dropped), and 3x4x256 = 3072 with ``final_conv="keras"``.
    """

    widths: tuple[int, ...] = (64, 128, 256)
    bottleneck_ratio: float = 0.5
    min_bottleneck_features: int = 6
    kernel_size: int | tuple[int, int] = 3
    pool_axis: str = "height"
    final_conv: str = "seed"
    act: Callable | str | None = None
    se_ratio: float = 0.0
    block: Any = EffNetBlock  # the block class (Flax ResNet's ``block_cls``): an EffNetBlock subclass of yours

    first_kernel_path: ClassVar[tuple[str, ...]] = ("block_0", "expand", "kernel")

    def __post_init__(self):
        _check_variant(self.pool_axis, self.final_conv, self.kernel_size, self.se_ratio)
        activations.resolve(self.act, self.activation_slope)
        if self.min_bottleneck_features <= 0:
            raise ConfigError(
                f"min_bottleneck_features must be positive, got {self.min_bottleneck_features!r}"
            )
        if isinstance(self.bottleneck_ratio, bool) or not isinstance(self.bottleneck_ratio, (int, float)) \
                or self.bottleneck_ratio <= 0:
            raise ConfigError(f"bottleneck_ratio must be a positive number, got {self.bottleneck_ratio!r}")
        super().__post_init__()

    @property
    def num_downsamplings(self) -> int:  # type: ignore[override]
        return len(self.widths)

    def bottleneck(self, features: int) -> int:
        """Bottleneck width of a block with ``features`` outputs: ``features * bottleneck_ratio``
        (the paper's ch_out / 2), at least ``min_bottleneck_features``."""
        return max(int(features * self.bottleneck_ratio), self.min_bottleneck_features)

    def features(self, x, train: bool):
        for i, width in enumerate(self.widths):
            x = self.block(
                width,
                self.bottleneck(width),
                kernel_size=depthwise_kernel_sizes(self.kernel_size),
                pool_axis=self.pool_axis,
                final_conv=self.final_conv,
                act=self.act,
                activation_slope=self.activation_slope,
                se_ratio=self.se_ratio,
                bn_momentum=self.bn_momentum,
                bn_epsilon=self.bn_epsilon,
                dtype=self.dtype,
                param_dtype=self.param_dtype,
                name=f"block_{i}",
            )(x, train)
        return x
