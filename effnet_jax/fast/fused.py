"""Hand-written gradients for the layers whose automatic derivatives XLA runs slowly.

Differentiating the fast forward forms automatically produces transposed slices, pads and
broadcasts that cost 3-10x their forward pass on CPU. Each function here has a
``jax.custom_vjp`` whose backward pass is written in the same fusion-friendly form as the
forward pass (and saves little: masks instead of inputs where it can):

* ``depthwise_same``: stride-1 'SAME' depthwise conv; its input gradient is the same
  shift-add with the flipped kernel, its kernel gradient one multiply-reduce per tap.
* ``max_pool_pair``: 2-wide pooling along one axis; its gradient is one select over
  broadcasts, which XLA fuses into the layer below.
* ``act_batch_norm``: an activation then training-mode BatchNorm (the seed's post-processing,
  with LeakyReLU), forward statistics in one pass, backward in two.
* ``act_batch_norm_pool``: the two above in one VJP (the EffNet block's BN then pool),
  whose backward never materialises the pool's full-size gradient.
* ``pointwise_act_batch_norm``: a 1x1 convolution from a few channels (the image) and the
  BatchNorm after it, whose backward recomputes the wide product from the narrow input instead
  of saving it.

The activation is any element-wise function (a static argument: LeakyReLU, ``nn.gelu``, a
function of your own); the backward passes take its derivative from JAX (``jax.vjp`` of the
function on the recomputed input), fused into the same pass, so none is written by hand.

Tests check each against the automatic derivative of the plain formulation.
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
from jax import lax

def wide(x):
    """``x`` in at least float32 (float32 for bfloat16/float16, float64 stays float64): the
    precision statistics and reductions are computed in."""
    return x.astype(jnp.promote_types(x.dtype, jnp.float32))


def shifted(x, axis: int, offset: int):
    """``out[i] = x[i + offset]`` along ``axis``, zeros shifted in at the edge.

    Written as a slice and a concatenation with zeros rather than a padded copy sliced at an
    offset: XLA on CPU runs the latter 3-5x slower (and reductions over it slower still).
    """
    if offset == 0:
        return x
    length = x.shape[axis]
    zeros_shape = list(x.shape)
    zeros_shape[axis] = min(abs(offset), length)
    zeros = jnp.zeros(zeros_shape, x.dtype)
    if abs(offset) >= length:
        return jnp.zeros_like(x)
    if offset > 0:
        return jnp.concatenate([lax.slice_in_dim(x, offset, length, axis=axis), zeros], axis=axis)
    return jnp.concatenate([zeros, lax.slice_in_dim(x, 0, length + offset, axis=axis)], axis=axis)


def _taps(x, kh: int, kw: int, flip: bool = False):
    """The ``kh * kw`` shifted views of ``x`` a 'SAME' stride-1 correlation reads."""
    sign = -1 if flip else 1
    for i in range(kh):
        rows = shifted(x, 1, sign * (i - (kh - 1) // 2))
        for j in range(kw):
            yield i, j, shifted(rows, 2, sign * (j - (kw - 1) // 2))


def _shift_add(x, kernel):
    """Stride-1 'SAME' depthwise correlation of ``x`` ``[N,H,W,C]`` with ``kernel`` ``[kh,kw,C]``.

    The forward pass reads shifted windows of one materialised zero-padded copy: at inference,
    XLA would otherwise fuse the whole chain of element-wise layers producing ``x`` into every
    tap and recompute it per tap (its fusion passes ignore optimisation barriers downstream of
    the pad, not the pad's own materialisation).
    """
    kh, kw, _ = kernel.shape
    n, h, w, c = x.shape
    ph, pw = (kh - 1) // 2, (kw - 1) // 2
    xp = lax.optimization_barrier(jnp.pad(x, ((0, 0), (ph, ph), (pw, pw), (0, 0))))
    out = None
    for i in range(kh):
        for j in range(kw):
            term = lax.slice(xp, (0, i, j, 0), (n, i + h, j + w, c)) * kernel[i, j]
            out = term if out is None else out + term
    return out


@partial(jax.custom_vjp, nondiff_argnums=(2,))
def depthwise_same(x, kernel, pads):
    """Depthwise conv, stride 1, symmetric 'SAME' padding (odd kernels). ``kernel``: [kh,kw,C]."""
    del pads  # Symmetric by construction: (k - 1) // 2 on each side.
    return _shift_add(x, kernel)


def _depthwise_fwd(x, kernel, pads):
    return depthwise_same(x, kernel, pads), (x, kernel)


def _depthwise_bwd(pads, residuals, g):
    x, kernel = residuals
    kh, kw, c = kernel.shape
    # The input gradient correlates g with the flipped kernel: the same taps, shifted back.
    g = lax.optimization_barrier(g)
    dx = None
    for i, j, view in _taps(g, kh, kw, flip=True):
        term = view * kernel[i, j]
        dx = term if dx is None else dx + term
    # The kernel gradient: one multiply-reduce per tap, over a materialised shifted input
    # (a reduction over a fused slice runs several times slower on CPU).
    gf = wide(g)
    taps = []
    for _, _, view in _taps(x, kh, kw):
        view = lax.optimization_barrier(view)
        taps.append(jnp.sum(wide(view) * gf, axis=(0, 1, 2)))
    dk = jnp.stack(taps).reshape(kh, kw, c).astype(kernel.dtype)
    return dx.astype(x.dtype), dk


depthwise_same.defvjp(_depthwise_fwd, _depthwise_bwd)


def _pairs(x, axis):
    """``x`` cropped to an even length along ``axis`` and split into its (even, odd) halves."""
    length = x.shape[axis] // 2
    x = lax.slice_in_dim(x, 0, 2 * length, axis=axis)
    split = x.reshape(*x.shape[:axis], length, 2, *x.shape[axis + 1:])
    return jnp.take(split, 0, axis=axis + 1), jnp.take(split, 1, axis=axis + 1)


@partial(jax.custom_vjp, nondiff_argnums=(1,))
def max_pool_pair(x, axis):
    """Max over non-overlapping pairs along ``axis`` (1 or 2), 'VALID' (an odd tail dropped)."""
    even, odd = _pairs(x, axis)
    return jnp.maximum(even, odd)


def _pool_fwd(x, axis):
    even, odd = _pairs(x, axis)
    return jnp.maximum(even, odd), (even >= odd, x.shape)


def _pool_bwd(axis, residuals, g):
    first, shape = residuals  # the first of a tied pair takes the gradient, as XLA's pooling
    # One select over broadcasts (no stack/concatenate): XLA fuses it into the consumer, the
    # depthwise backward, instead of materialising two half-size selects and their interleaving.
    pairs = list(g.shape)
    pairs.insert(axis + 1, 2)
    is_first = lax.broadcasted_iota(jnp.int32, pairs, axis + 1) == 0
    takes = is_first == jnp.broadcast_to(jnp.expand_dims(first, axis + 1), pairs)
    spread = jnp.broadcast_to(jnp.expand_dims(g, axis + 1), pairs)
    dx = jnp.where(takes, spread, jnp.zeros((), g.dtype))
    dx = dx.reshape(*g.shape[:axis], -1, *g.shape[axis + 1:])
    tail = shape[axis] - dx.shape[axis]
    if tail:
        pad = [(0, 0)] * len(shape)
        pad[axis] = (0, tail)
        dx = jnp.pad(dx, pad)
    return (dx,)


max_pool_pair.defvjp(_pool_fwd, _pool_bwd)


@partial(jax.custom_vjp, nondiff_argnums=(3, 4, 5))
def act_batch_norm(x, scale, bias, activation, epsilon, dtype):
    """``BatchNorm(activation(x))`` with batch statistics over N, H, W (at least float32);
    ``activation`` is an element-wise function.

    Returns ``(y, mean, var)``: ``y`` in ``dtype`` and the biased batch statistics of the
    activation (for the running averages).
    """
    return _act_bn_fwd(x, scale, bias, activation, epsilon, dtype)[0]


def _statistics(a):
    count = a.size // a.shape[-1]
    total = jnp.sum(a, axis=(0, 1, 2))
    squares = jnp.sum(a * a, axis=(0, 1, 2))
    mean = total / count
    var = jnp.maximum(squares / count - mean * mean, 0.0)
    return mean, var, count


def _act_bn_fwd(x, scale, bias, activation, epsilon, dtype):
    a = activation(wide(x))
    mean, var, _ = _statistics(a)
    rstd = lax.rsqrt(var + epsilon)
    mul = wide(scale) * rstd
    y = (a * mul + (wide(bias) - mean * mul)).astype(dtype)
    return (y, mean, var), (x, scale, mean, rstd)


def _act_bn_bwd(activation, epsilon, dtype, residuals, cotangents):
    x, scale, mean, rstd = residuals
    g, g_mean, g_var = cotangents
    gf = wide(g)
    xhat = (activation(wide(x)) - mean) * rstd
    dbias, dscale = jnp.sum(gf, axis=(0, 1, 2)), jnp.sum(gf * xhat, axis=(0, 1, 2))
    return _act_bn_input_grads(x, scale, mean, rstd, activation, gf, dbias, dscale, g_mean, g_var)


def _act_bn_input_grads(x, scale, mean, rstd, activation, gf, dbias, dscale, g_mean, g_var):
    """Gradients of ``BatchNorm(activation(x))`` given the output gradient ``gf`` (at least
    float32) and its reductions ``dbias = sum(gf)``, ``dscale = sum(gf * xhat)``."""
    a, activation_vjp = jax.vjp(activation, wide(x))  # the activation's derivative, from JAX
    count = a.size // a.shape[-1]
    xhat = (a - mean) * rstd
    mul = wide(scale) * rstd
    da = mul * (gf - dbias / count - xhat * (dscale / count)) + (g_mean + 2 * g_var * (a - mean)) / count
    (dx,) = activation_vjp(da)
    return dx.astype(x.dtype), dscale.astype(scale.dtype), dbias.astype(scale.dtype)


act_batch_norm.defvjp(_act_bn_fwd, _act_bn_bwd)


@partial(jax.custom_vjp, nondiff_argnums=(3, 4, 5, 6))
def act_batch_norm_pool(x, scale, bias, activation, epsilon, dtype, axis):
    """``max_pool_pair(BatchNorm(activation(x)), axis)``: the EffNet block's middle, in one VJP.

    Returns ``(pooled y, mean, var)`` like ``act_batch_norm``. The backward pass never forms
    the full-size gradient of the pool on its own: the bias and scale gradients are reduced at
    the pooled size (the latter over the normalised activations the pool picked, saved by the
    forward pass), and the input gradient reads the pooled gradient through the pool's select
    inside its one fused pass. Together ~11% of the seed's train step on CPU.
    """
    return _act_bn_pool_fwd(x, scale, bias, activation, epsilon, dtype, axis)[0]


def _act_bn_pool_fwd(x, scale, bias, activation, epsilon, dtype, axis):
    (y, mean, var), (_, _, _, rstd) = _act_bn_fwd(x, scale, bias, activation, epsilon, dtype)
    pooled, (first, _) = _pool_fwd(y, axis)
    # The normalised activation the pool picked: the backward's scale gradient reduces over it
    # at the pooled size instead of over the spread gradient at full size.
    even, odd = _pairs((activation(wide(x)) - mean) * rstd, axis)
    picked = jnp.where(first, even, odd)
    return (pooled, mean, var), (x, scale, mean, rstd, first, picked)


def _act_bn_pool_bwd(activation, epsilon, dtype, axis, residuals, cotangents):
    x, scale, mean, rstd, first, picked = residuals
    g, g_mean, g_var = cotangents
    gf = wide(g)
    dbias, dscale = jnp.sum(gf, axis=(0, 1, 2)), jnp.sum(gf * picked, axis=(0, 1, 2))
    (spread,) = _pool_bwd(axis, (first, x.shape), gf)
    return _act_bn_input_grads(x, scale, mean, rstd, activation, spread, dbias, dscale, g_mean, g_var)


act_batch_norm_pool.defvjp(_act_bn_pool_fwd, _act_bn_pool_bwd)


MAX_RECOMPUTED_INPUTS = 4
"""Widest input for which ``pointwise_act_batch_norm`` recomputes the product: up to here, a
few broadcast multiply-adds over a narrow input read far less memory than the saved output."""


def pointwise_fma(x, kernel):
    """``x @ kernel`` over the last axis as one broadcast multiply-add per input channel.

    For a handful of input channels this is the same arithmetic as a matmul, but element-wise:
    XLA fuses it into whatever consumes the product (a reduction, a normalisation) instead of
    writing the wide output to memory.
    """
    out = x[..., 0:1] * kernel[0]
    for k in range(1, kernel.shape[0]):
        out = out + x[..., k:k + 1] * kernel[k]
    return out


@partial(jax.custom_vjp, nondiff_argnums=(4, 5, 6))
def pointwise_act_batch_norm(x, kernel, scale, bias, activation, epsilon, dtype):
    """``act_batch_norm(x @ kernel, ...)`` for a narrow ``x`` (at most
    ``MAX_RECOMPUTED_INPUTS`` channels; ``kernel``: [Cin, Cout]).

    The backward pass recomputes the product from ``x`` instead of saving it: for the EffNet
    stem (3 image channels to 32), every pass over the 32-wide pre-activation becomes a pass over
    the 3-wide image. Returns ``(y, mean, var)`` like ``act_batch_norm``.
    """
    return _pointwise_abn_fwd(x, kernel, scale, bias, activation, epsilon, dtype)[0]


def _pointwise_abn_fwd(x, kernel, scale, bias, activation, epsilon, dtype):
    z = pointwise_fma(wide(x), wide(kernel))
    outputs, (_, _, mean, rstd) = _act_bn_fwd(z, scale, bias, activation, epsilon, dtype)
    return outputs, (x, kernel, scale, mean, rstd)


def _pointwise_abn_bwd(activation, epsilon, dtype, residuals, cotangents):
    x, kernel, scale, mean, rstd = residuals
    z = pointwise_fma(wide(x), wide(kernel))
    dz, dscale, dbias = _act_bn_bwd(activation, epsilon, dtype, (z, scale, mean, rstd), cotangents)
    flat_x, flat_dz = wide(x.reshape(-1, x.shape[-1])), dz.reshape(-1, dz.shape[-1])
    dkernel = jnp.dot(flat_x.T, flat_dz).astype(kernel.dtype)
    # The input (image) gradient: dead code, removed under jit, unless someone asks for it.
    dx = jnp.dot(flat_dz, wide(kernel).T).reshape(x.shape).astype(x.dtype)
    return dx, dkernel, dscale, dbias


pointwise_act_batch_norm.defvjp(_pointwise_abn_fwd, _pointwise_abn_bwd)
