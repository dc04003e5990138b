"""The EffNet block's first two layers on a one-channel image, in closed form.

On a grey image (Fashion-MNIST, MNIST) the block's 1x1 expansion gives ``z = x * w`` per
channel, and LeakyReLU of a product of two scalars splits by sign:

    leaky(x * w) = max(x, 0) * pos(w) + min(x, 0) * neg(w),
    pos(w) = w if w >= 0 else slope * w,    neg(w) = slope * w if w >= 0 else w.

So the activation is two image-sized maps times per-channel coefficients, and everything up to
the first depthwise convolution follows without forming a single C-channel tensor:

* BatchNorm's batch statistics from four image moments: ``mean = pos * E[x+] + neg * E[x-]``,
  ``E[a^2] = pos^2 E[x+^2] + neg^2 E[x-^2]`` (``x+ * x- = 0``);
* the normalised activation ``x+ * A + x- * B + G`` (per-channel ``A, B, G``), zero in the
  depthwise convolution's padding;
* the 1xk depthwise convolution over it: ``k`` shifts of ``x+`` and of ``x-`` and ``k`` padding
  indicators (``3k`` image-sized maps) times a ``[3k, C]`` coefficient matrix, as multiply-adds
  XLA fuses into one pass (``combine``, whose backward is one matmul of the stacked maps).

The identity is exact (the same numbers up to float rounding; tests compare it with the
reference to 1e-5 in every gradient). It removes the widest tensors of the train step at
28x28x1 (four 32-channel maps at full resolution, their BatchNorm and depthwise passes forward
and backward): the 28x28x1 train step ran 1.16-1.2x faster (in-process A/B), and the
per-channel algebra differentiates automatically.
"""

from __future__ import annotations

import functools
from typing import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

from effnet_jax.fast.fused import shifted, wide


def leaky_slope(function: Callable) -> float | None:
    """The negative slope when ``function`` is a LeakyReLU (ReLU: 0), else ``None``.

    A LeakyReLU is positively homogeneous (``f(a * b)`` splits by the signs of ``a`` and ``b``),
    which this closed form relies on; other activations take the block's general route."""
    if function is nn.relu:
        return 0.0
    if function is nn.leaky_relu:
        return 0.01
    if (isinstance(function, functools.partial) and function.func is nn.leaky_relu and not function.args
            and set(function.keywords) <= {"negative_slope"}):
        return float(function.keywords.get("negative_slope", 0.01))
    return None


def _relu(x):
    return jnp.where(x > 0, x, jnp.zeros((), x.dtype))  # JAX's ReLU, derivative 0 at 0


@functools.lru_cache(maxsize=None)
def _leaky(slope: float):
    def leaky(x):
        return jnp.where(x >= 0, x, slope * x)  # nn.leaky_relu's form, derivative 1 at 0
    return leaky


def piecewise_linear_form(function: Callable) -> Callable:
    """``function`` as the kernels compute it: a recognised ReLU or LeakyReLU as one ``where``
    (the form the seed's kernels were measured with; ``jax.nn.relu``'s own ``maximum`` under its
    custom JVP made the whole train step about 2x slower inside the multi-step scan on XLA:CPU),
    with the same values and the same derivative everywhere; any other function as it is."""
    if function is nn.relu:
        return _relu
    slope = leaky_slope(function)
    return function if slope is None else _leaky(slope)


def leaky_coefficients(w, slope):
    """``(pos, neg)`` with ``leaky(x * w) = max(x, 0) * pos + min(x, 0) * neg`` for scalar ``x``."""
    return jnp.where(w >= 0, w, slope * w), jnp.where(w >= 0, slope * w, w)


def expand_norm_depthwise(x, w, scale, bias, kernel, slope, epsilon, dtype, statistics=None):
    """``depthwise_1xk(BatchNorm(leaky(x @ w)))`` for a one-channel ``x``, 'SAME' along the width.

    Args:
      x: ``[N, H, W, 1]`` the image.
      w: ``[C]`` the 1x1 expansion (no bias).
      scale, bias: ``[C]`` the BatchNorm's.
      kernel: ``[k, C]`` the depthwise taps along the width (k odd).
      slope, epsilon: LeakyReLU's negative slope, BatchNorm's epsilon.
      dtype: the output dtype.
      statistics: ``(mean, var)`` to normalise with (evaluation), or ``None`` for the batch's.

    Returns:
      ``(y, mean, var)``: ``y`` ``[N, H, W, C]`` and the statistics used (for training, the
      biased batch statistics of the activation, for the running averages).
    """
    image = wide(x)[..., 0]
    positive, negative = jnp.maximum(image, 0.0), jnp.minimum(image, 0.0)
    pos, neg = leaky_coefficients(wide(w), slope)
    if statistics is None:
        moments = jnp.stack([positive, negative, positive * positive, negative * negative])
        mp, mn, qp, qn = jnp.mean(moments.reshape(4, -1), axis=1)
        mean = pos * mp + neg * mn
        var = jnp.maximum(pos * pos * qp + neg * neg * qn - mean * mean, 0.0)
    else:
        mean, var = (wide(s) for s in statistics)
    mul = wide(scale) * lax.rsqrt(var + epsilon)
    per_channel = (pos * mul, neg * mul, wide(bias) - mean * mul)  # A, B, G
    k, width = kernel.shape[0], image.shape[2]
    taps = wide(kernel)
    features, coefficients = [], []
    for j in range(k):
        offset = j - (k - 1) // 2
        inside = (jnp.arange(width) + offset >= 0) & (jnp.arange(width) + offset < width)
        features += [shifted(positive, 2, offset), shifted(negative, 2, offset),
                     jnp.broadcast_to(inside.astype(image.dtype), image.shape)]
        coefficients += [taps[j] * c for c in per_channel]
    y = combine(tuple(features), jnp.stack(coefficients))
    return y.astype(dtype), mean, var


@jax.custom_vjp
def combine(features, coefficients):
    """``sum_f features[f][..., None] * coefficients[f]``: image-sized maps times rows of
    ``coefficients`` ``[F, C]``, as multiply-adds XLA fuses into one pass; the backward pass
    stacks the maps once for one matmul per gradient."""
    return sum(f[..., None] * c for f, c in zip(features, coefficients))


def _combine_fwd(features, coefficients):
    return combine(features, coefficients), (features, coefficients)


def _combine_bwd(residuals, g):
    features, coefficients = residuals
    stacked = jnp.stack(features, axis=-1).reshape(-1, len(features))
    flat_g = g.reshape(-1, g.shape[-1])
    d_coefficients = jnp.dot(stacked.T, flat_g)
    # The maps' gradients: dead code under jit unless the image's gradient is asked for.
    d_features = jnp.dot(flat_g, coefficients.T).reshape(*features[0].shape, len(features))
    return tuple(d_features[..., i] for i in range(len(features))), d_coefficients


combine.defvjp(_combine_fwd, _combine_bwd)
