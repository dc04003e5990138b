"""Pure array functions behind the fast layer implementations.

Each function here is the fast form of a plain Flax layer (``seam`` and ``blocks`` apply them
to the reference modules' variables): written with slices, reshapes, matmuls and element-wise
ops that XLA on CPU runs and differentiates far faster than its grouped convolutions.
"""

from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp
from jax import lax

from effnet_jax.fast import fused


def depthwise_shift_add(x, kernel, strides: Sequence[int], pads) -> jax.Array:
    """Depthwise convolution as a sum of shifted, strided slices.

    Args:
      x: ``[N, H, W, C]`` input.
      kernel: ``[kh, kw, C]`` one filter per channel.
      strides: ``(sh, sw)``.
      pads: ``((top, bottom), (left, right))`` zero padding.

    Returns:
      ``[N, Ho, Wo, C]``, identical to ``lax.conv_general_dilated`` with
      ``feature_group_count=C``.
    """
    kh, kw, _ = kernel.shape
    sh, sw = strides
    symmetric = all(tuple(p) == ((k - 1) // 2, (k - 1) // 2) for p, k in zip(pads, (kh, kw)))
    if (sh, sw) == (1, 1) and kh % 2 and kw % 2 and symmetric:
        return fused.depthwise_same(x, kernel, tuple(tuple(p) for p in pads))
    xp = jnp.pad(x, ((0, 0), tuple(pads[0]), tuple(pads[1]), (0, 0)))
    n, hp, wp, c = xp.shape
    ho, wo = (hp - kh) // sh + 1, (wp - kw) // sw + 1
    out = None
    for i in range(kh):
        for j in range(kw):
            window = lax.slice(
                xp,
                (0, i, j, 0),
                (n, i + (ho - 1) * sh + 1, j + (wo - 1) * sw + 1, c),
                (1, sh, sw, 1),
            )
            term = window * kernel[i, j]
            out = term if out is None else out + term
    return out


def _strided(x, axis: int, start: int, length: int, step: int = 2):
    """``x`` sliced to ``start, start + step, ...`` (``length`` items) along ``axis``."""
    limit = list(x.shape)
    limit[axis] = start + step * (length - 1) + 1
    begin = [0] * x.ndim
    begin[axis] = start
    stride = [1] * x.ndim
    stride[axis] = step
    return lax.slice(x, begin, limit, stride)


def pair_conv_valid(x, taps, stride_axis: int) -> jax.Array:
    """2-tap convolution with stride 2 along ``stride_axis`` and 'VALID' padding.

    Args:
      x: ``[N, H, W, Cin]``.
      taps: ``[2, Cin, Cout]``, the kernel's two taps along ``stride_axis``.
      stride_axis: 1 (height) or 2 (width).

    Along the width this is a free reshape ``[N, H, W/2, 2*Cin]`` and one matmul; along the
    height, two matmuls of the even and odd rows. An odd trailing row/column is dropped, as
    'VALID' does.
    """
    half = x.shape[stride_axis] // 2
    cin, cout = taps.shape[1:]
    if stride_axis == 2:
        x = x[:, :, : 2 * half]
        n, h = x.shape[:2]
        return matmul_channels(x.reshape(n, h, half, 2 * cin), taps.reshape(2 * cin, cout))
    even = _strided(x, 1, 0, half)
    odd = _strided(x, 1, 1, half)
    return matmul_channels(even, taps[0]) + matmul_channels(odd, taps[1])


def pair_conv_same(x, taps, stride_axis: int, tap_axis: int) -> jax.Array:
    """Keras' 2-tap convolution: kernel along ``tap_axis``, stride 2 along ``stride_axis``, 'SAME'.

    'SAME' with a 2-tap kernel and stride 1 pads one zero after; with a 1-tap kernel and stride
    2 it keeps positions ``0, 2, 4, ...``. So the output at ``p`` is
    ``taps[0] @ x[p] + taps[1] @ x[p + 1 along tap_axis]`` on the subsampled grid.
    """
    length = (x.shape[stride_axis] + 1) // 2
    sub = _strided(x, stride_axis, 0, length)
    pad = [(0, 0)] * 4
    pad[tap_axis] = (0, 1)
    shifted = jnp.pad(lax.slice_in_dim(sub, 1, sub.shape[tap_axis], axis=tap_axis), pad)
    cin, cout = taps.shape[1:]
    stacked = jnp.concatenate([sub, shifted], axis=-1)
    return matmul_channels(stacked, taps.reshape(2 * cin, cout))


def matmul_channels(x, kernel) -> jax.Array:
    """``x @ kernel`` over the last axis, as one 2-D matmul (whose transposes XLA runs well)."""
    return jnp.dot(x.reshape(-1, x.shape[-1]), kernel).reshape(*x.shape[:-1], kernel.shape[-1])


def max_pool(x, window: Sequence[int]) -> jax.Array:
    """Non-overlapping 'VALID' max-pool as element-wise maxima (pairs get a cheap gradient)."""
    for axis, size in zip((1, 2), window):
        if size == 1:
            continue
        if size == 2:
            x = fused.max_pool_pair(x, axis)
            continue
        length = x.shape[axis] // size
        parts = [_strided(x, axis, k, length, size) for k in range(size)]
        x = parts[0]
        for part in parts[1:]:
            x = jnp.maximum(x, part)
    return x


def batch_norm_inference(x, scale, bias, mean, var, epsilon: float, dtype) -> jax.Array:
    """BatchNorm with running statistics, folded into one multiply-add per element."""
    mul = fused.wide(scale) * lax.rsqrt(fused.wide(var) + epsilon)
    add = fused.wide(bias) - fused.wide(mean) * mul
    return (x * mul.astype(dtype) + add.astype(dtype)).astype(dtype)
