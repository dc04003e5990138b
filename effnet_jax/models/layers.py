"""Primitive layers of the model zoo, written in the form that runs fast on CPU and accelerators.

XLA on CPU runs grouped (depthwise) convolutions roughly ten times slower than the same
arithmetic written as a few shifted multiply-adds, and a 2-tap convolution whose stride equals
its kernel is just a reshape and a matrix product. Every layer here therefore has two
implementations selected by ``implementation``:

* ``"fast"``: shifted multiply-adds, reshapes and matmuls (the CPU's fast path);
* ``"xla"``: the plain ``lax.conv_general_dilated`` formulation, exactly what ``flax.linen.Conv``
  computes. Tests assert both agree to 1e-5;
* ``"auto"`` (the networks' default): ``"fast"`` on CPU, ``"xla"`` on GPU and TPU (see
  ``resolve_implementation``).

Parameters are stored in the same shapes ``flax.linen.Conv`` would use (kernels ``HWIO``, with
``I = in_features / groups``), so both implementations share one set of variables.

Each layer also reports its analytic cost through ``macs(input_shape, output_shape)``
(multiply-accumulates for one example); the summary turns those into FLOPs (2 x MACs).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

from effnet_jax.fast import kernels

Dtype = Any
IMPLEMENTATIONS = ("fast", "xla")
IMPLEMENTATION_CHOICES = ("auto", *IMPLEMENTATIONS)


def resolve_implementation(implementation: str, backend: str | None = None) -> str:
    """The implementation ``"auto"`` stands for on ``backend`` (default: JAX's default backend).

    CPU gets ``"fast"``: its shift-add depthwise convolutions and fused BatchNorm VJPs train
    ~2x faster than PyTorch eager on CPU, where XLA's grouped convolutions are ~10x slower
    (``experiments/benchmarks/vs_pytorch.py``). GPU and TPU get ``"xla"``: the plain
    convolutions that their convolution emitters are built for; the fast forms were tuned on
    a CPU and have not been shown faster there (``experiments/benchmarks/accelerator.py``
    measures both). ``"fast"`` and ``"xla"`` are returned as they are.
    """
    if implementation not in IMPLEMENTATION_CHOICES:
        raise ValueError(f"implementation must be one of {IMPLEMENTATION_CHOICES}, got {implementation!r}")
    if implementation != "auto":
        return implementation
    backend = backend or jax.default_backend()
    return "fast" if backend == "cpu" else "xla"
DEFAULT_KERNEL_INIT = nn.initializers.glorot_uniform()  # Keras' default, as in the original.


@dataclasses.dataclass(frozen=True)
class LayerOptions:
    """Settings every layer of a network shares (activation, BatchNorm, dtypes, implementation).

    Attributes:
      activation_slope: negative slope of the LeakyReLU (0.3 in the seed; 0.0 gives ReLU).
      bn_momentum: BatchNorm running-average momentum in the Flax/Keras convention
        (``running = momentum * running + (1 - momentum) * batch``).
      bn_epsilon: BatchNorm epsilon.
      dtype: computation dtype (e.g. ``jnp.bfloat16`` on accelerators).
      param_dtype: parameter dtype (keep ``float32`` for mixed precision).
      implementation: ``"fast"`` or ``"xla"`` (see module docstring; ``"auto"`` is resolved by
        the network before it reaches the layers).
    """

    activation_slope: float = 0.3
    bn_momentum: float = 0.99
    bn_epsilon: float = 1e-5
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32
    implementation: str = "fast"

    def __post_init__(self):
        if self.implementation not in IMPLEMENTATIONS:
            raise ValueError(
                f"implementation must be one of {IMPLEMENTATION_CHOICES}, got {self.implementation!r}"
            )
        if not 0.0 <= self.bn_momentum < 1.0:
            raise ValueError(f"bn_momentum must be in [0, 1), got {self.bn_momentum}")
        if self.bn_epsilon <= 0:
            raise ValueError(f"bn_epsilon must be > 0, got {self.bn_epsilon}")


def same_padding(
    spatial: Sequence[int], kernel: Sequence[int], strides: Sequence[int]
) -> tuple[tuple[int, int], ...]:
    """TensorFlow/Flax 'SAME' padding (extra pixel after) for each spatial axis."""
    return tuple(lax.padtype_to_pads(tuple(spatial), tuple(kernel), tuple(strides), "SAME"))


def _conv_xla(x, kernel, strides, padding, groups=1):
    return lax.conv_general_dilated(
        x,
        kernel,
        window_strides=tuple(strides),
        padding=tuple(padding),
        dimension_numbers=("NHWC", "HWIO", "NHWC"),
        feature_group_count=groups,
    )


def _per_example(shape: Sequence[int]) -> int:
    return int(math.prod(shape[1:]))


class Conv(nn.Module):
    """A dense k x k convolution (no bias) with 'SAME' padding, as in the stems of the baselines.

    Dense convolutions are already efficient in XLA on every backend, so both implementations
    call ``lax.conv_general_dilated``.
    """

    features: int
    kernel_size: tuple[int, int] = (3, 3)
    strides: tuple[int, int] = (1, 1)
    options: LayerOptions = LayerOptions()

    @nn.compact
    def __call__(self, x):
        kernel = self.param(
            "kernel",
            DEFAULT_KERNEL_INIT,
            (*self.kernel_size, x.shape[-1], self.features),
            self.options.param_dtype,
        )
        x, kernel = nn.dtypes.promote_dtype(x, kernel, dtype=self.options.dtype)
        pads = same_padding(x.shape[1:3], self.kernel_size, self.strides)
        return _conv_xla(x, kernel, self.strides, pads)

    def macs(self, input_shape, output_shape) -> int:
        """Multiply-accumulates for one example."""
        kh, kw = self.kernel_size
        return _per_example(output_shape) * kh * kw * input_shape[-1]


class PointwiseConv(nn.Module):
    """A 1x1 convolution (no bias), optionally grouped as in ShuffleNet's ``gc4`` layers.

    Fast form: a matrix product over the channel axis (a batched one per group).
    """

    features: int
    groups: int = 1
    options: LayerOptions = LayerOptions()

    @nn.compact
    def __call__(self, x):
        in_features = x.shape[-1]
        if in_features % self.groups or self.features % self.groups:
            raise ValueError(
                f"PointwiseConv with groups={self.groups} needs input and output channels "
                f"divisible by it, got {in_features} -> {self.features}"
            )
        kernel = self.param(
            "kernel",
            DEFAULT_KERNEL_INIT,
            (1, 1, in_features // self.groups, self.features),
            self.options.param_dtype,
        )
        x, kernel = nn.dtypes.promote_dtype(x, kernel, dtype=self.options.dtype)
        if self.options.implementation == "xla":
            return _conv_xla(x, kernel, (1, 1), ((0, 0), (0, 0)), self.groups)
        if self.groups == 1:
            return kernels.matmul_channels(x, kernel[0, 0])
        g = self.groups
        per_group_in, per_group_out = in_features // g, self.features // g
        xg = x.reshape(*x.shape[:-1], g, per_group_in)
        kg = kernel[0, 0].reshape(per_group_in, g, per_group_out)
        y = jnp.einsum("...gi,igo->...go", xg, kg)
        return y.reshape(*x.shape[:-1], self.features)

    def macs(self, input_shape, output_shape) -> int:
        """Multiply-accumulates for one example."""
        return _per_example(output_shape) * (input_shape[-1] // self.groups)


class DepthwiseConv(nn.Module):
    """A depthwise convolution (one filter per channel, optional multiplier), 'SAME' padding.

    Fast form: ``kh * kw`` shifted, strided slices of the padded input, each scaled by one row
    of the kernel and summed (see ``kernels.depthwise_shift_add``).
    """

    kernel_size: tuple[int, int] = (3, 3)
    strides: tuple[int, int] = (1, 1)
    depth_multiplier: int = 1
    options: LayerOptions = LayerOptions()

    @nn.compact
    def __call__(self, x):
        channels = x.shape[-1]
        out_channels = channels * self.depth_multiplier
        kernel = self.param(
            "kernel",
            DEFAULT_KERNEL_INIT,
            (*self.kernel_size, 1, out_channels),
            self.options.param_dtype,
        )
        x, kernel = nn.dtypes.promote_dtype(x, kernel, dtype=self.options.dtype)
        pads = same_padding(x.shape[1:3], self.kernel_size, self.strides)
        if self.options.implementation == "xla":
            return _conv_xla(x, kernel, self.strides, pads, groups=channels)
        if self.depth_multiplier > 1:
            # Grouped-conv convention: output channel o reads input channel o // multiplier.
            x = jnp.repeat(x, self.depth_multiplier, axis=-1)
        return kernels.depthwise_shift_add(x, kernel[:, :, 0, :], self.strides, pads)

    def macs(self, input_shape, output_shape) -> int:
        """Multiply-accumulates for one example."""
        kh, kw = self.kernel_size
        return _per_example(output_shape) * kh * kw


class PairConv(nn.Module):
    """EffNet's last block layer: a 2-tap convolution that halves one spatial axis.

    ``variant="seed"``: kernel 2 along ``stride_axis``, stride 2 there, 'VALID' (the PyTorch
    seed's ``(1, 2)`` kernel with ``(1, 2)`` stride). Fast form: a reshape plus one matmul.

    ``variant="keras"``: kernel 2 along the *other* axis, stride 2 along ``stride_axis``, 'SAME'
    (the Keras original's ``(2, 1)`` kernel with ``(1, 2)`` stride). Fast form: subsample,
    concatenate each row with its successor, one matmul.

    ``stride_axis`` is 2 (width) for the seed; 1 (height) for the paper's section-4.2 reading,
    where the max-pool runs along the width instead.
    """

    features: int
    stride_axis: int = 2
    variant: str = "seed"
    options: LayerOptions = LayerOptions()

    def _geometry(self):
        other_axis = 3 - self.stride_axis
        tap_axis = self.stride_axis if self.variant == "seed" else other_axis
        kernel_hw = [1, 1]
        kernel_hw[tap_axis - 1] = 2
        strides = [1, 1]
        strides[self.stride_axis - 1] = 2
        return tuple(kernel_hw), tuple(strides), tap_axis

    @nn.compact
    def __call__(self, x):
        if self.variant not in ("seed", "keras"):
            raise ValueError(f"PairConv variant must be 'seed' or 'keras', got {self.variant!r}")
        if self.stride_axis not in (1, 2):
            raise ValueError(f"PairConv stride_axis must be 1 or 2, got {self.stride_axis}")
        kernel_hw, strides, tap_axis = self._geometry()
        kernel = self.param(
            "kernel",
            DEFAULT_KERNEL_INIT,
            (*kernel_hw, x.shape[-1], self.features),
            self.options.param_dtype,
        )
        x, kernel = nn.dtypes.promote_dtype(x, kernel, dtype=self.options.dtype)
        if self.variant == "seed":
            pads = ((0, 0), (0, 0))
        else:
            pads = same_padding(x.shape[1:3], kernel_hw, strides)
        if self.options.implementation == "xla":
            return _conv_xla(x, kernel, strides, pads)
        taps = kernel.reshape(2, x.shape[-1], self.features)
        if self.variant == "seed":
            return kernels.pair_conv_valid(x, taps, self.stride_axis)
        return kernels.pair_conv_same(x, taps, self.stride_axis, tap_axis)

    def macs(self, input_shape, output_shape) -> int:
        """Multiply-accumulates for one example."""
        return _per_example(output_shape) * 2 * input_shape[-1]


class MaxPool(nn.Module):
    """Non-overlapping max-pool ('VALID', stride = window): 2x1, 1x2 or 2x2.

    Fast form: pairwise maxima of strided slices, whose gradient is a cheap select.
    """

    window: tuple[int, int] = (2, 2)
    implementation: str = "fast"

    @nn.compact
    def __call__(self, x):
        if self.implementation == "xla":
            return nn.max_pool(x, self.window, strides=self.window, padding="VALID")
        return kernels.max_pool(x, self.window)

    def macs(self, input_shape, output_shape) -> int:
        """Pooling does no multiply-accumulates (the paper counts conv and FC layers only)."""
        return 0


class Dense(nn.Dense):
    """``flax.linen.Dense`` with Keras' initialiser and an analytic cost."""

    kernel_init: Any = DEFAULT_KERNEL_INIT

    def macs(self, input_shape, output_shape) -> int:
        """Multiply-accumulates for one example."""
        return int(input_shape[-1]) * int(output_shape[-1])
