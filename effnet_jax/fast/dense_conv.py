"""Dense (and grouped) convolutions whose gradients XLA:CPU runs on Eigen inside loops too.

XLA:CPU runs a convolution fast only in its canonical form: NHWC input, HWIO kernel, NHWC
output (``dim_labels=b01f_01io->b01f``), which it hands to Eigen's spatial convolution. The
gradients of a convolution come out of autodiff in other forms: the input gradient reads the
kernel as HWOI (``b01f_01oi->b01f``), the weight gradient contracts over the batch
(``f01b_i01o->01bf``). In a program's entry computation XLA rewrites these to the canonical form
with transposes. Inside a ``while`` body (every ``lax.scan``, the library's multi-step loop
among them) it does not, and the LLVM emitter's naive loop nest runs them instead: 20-70x slower
than the same training step jitted alone, with compile times of minutes (jax-ml/jax#12868).

``dense_conv`` states the backward pass itself, as three canonical convolutions with the
transposes written out, so every convolution in the program is of the fast kind wherever it
lands: ``tests/test_fast_dense_conv.py`` checks it against ``lax.conv_general_dilated`` and
checks the compiled multi-step program for non-canonical convolutions.
"""

from __future__ import annotations

import functools
from functools import partial
from typing import Sequence

import jax
import jax.numpy as jnp
from jax import lax
from jax.custom_batching import custom_vmap

CANONICAL = ("NHWC", "HWIO", "NHWC")
CANONICAL_DIM_LABELS = "b01f_01io->b01f"  # how XLA prints the one kind it runs on Eigen


def _canonical(x, kernel, strides=(1, 1), padding=((0, 0), (0, 0))):
    return _canonical_conv(tuple(strides), tuple(tuple(p) for p in padding))(x, kernel)


@functools.lru_cache(maxsize=None)
def _canonical_conv(strides, padding):
    """The canonical convolution of this geometry, with a batching rule that keeps it canonical.

    ``vmap`` of a convolution whose kernel is batched (a population of models) becomes, by
    JAX's own rule, one convolution with a feature group per member, which XLA:CPU runs far
    slower than the members' convolutions one after another. Here a member axis on the input
    alone joins the batch, on the kernel alone joins the output channels, and on both runs the
    members in turn (``lax.map``): each still one canonical convolution.
    """

    def conv(x, kernel):
        return lax.conv_general_dilated(x, kernel, strides, padding, dimension_numbers=CANONICAL)

    vmappable = custom_vmap(conv)

    @vmappable.def_vmap
    def batched(members, in_batched, x, kernel):
        x_batched, kernel_batched = in_batched
        if x_batched and kernel_batched:
            return lax.map(lambda pair: vmappable(*pair), (x, kernel)), True
        if x_batched:  # [M, N, H, W, C] -> one batch of M * N
            y = vmappable(x.reshape(-1, *x.shape[2:]), kernel)
            return y.reshape(members, -1, *y.shape[1:]), True
        # [M, kh, kw, I, O] -> [kh, kw, I, M * O]; the outputs' member-major channels split back
        wide = jnp.moveaxis(kernel, 0, -2).reshape(*kernel.shape[1:-1], -1)
        y = vmappable(x, wide)
        return jnp.moveaxis(y.reshape(*y.shape[:-1], members, -1), -2, 0), True

    return vmappable


def _pad_spatial(x, pads):
    """``x`` (``[N, H, W, C]``) with edge padding ``(low, high, interior)`` per spatial axis;
    negative edges crop."""
    return lax.pad(x, jnp.zeros((), x.dtype), ((0, 0, 0), *pads, (0, 0, 0)))


@partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def _dense(x, kernel, strides, pads):
    return _canonical(x, kernel, strides, pads)


def _dense_forward(x, kernel, strides, pads):
    return _canonical(x, kernel, strides, pads), (x, kernel)


def _dense_backward(strides, pads, residuals, g):
    x, kernel = residuals
    sizes, taps = x.shape[1:3], kernel.shape[:2]
    outputs = g.shape[1:3]
    # The forward reads padded rows p = o * s + k. With g spread to stride 1 (s - 1 zeros between
    # outputs), the input gradient is a stride-1 correlation of the spread g with the flipped,
    # in/out-swapped kernel; the edges crop the padding back off (negative pads crop).
    input_pads = []
    for size, k, s, o, (low, high) in zip(sizes, taps, strides, outputs, pads):
        unread = size + low + high - ((o - 1) * s + k)  # padded rows past the last window
        input_pads.append((k - 1 - low, k - 1 - high + unread, s - 1))
    flipped = jnp.flip(kernel, (0, 1)).transpose(0, 1, 3, 2)
    dx = _canonical(_pad_spatial(g, input_pads), flipped)
    # The weight gradient contracts over batch and positions: channels in the batch slot, the
    # batch in the feature slot, the spread g as the kernel; the window's k offsets are the output.
    spread = _pad_spatial(g, [(0, 0, s - 1) for s in strides])
    window_pads = [(low, (o - 1) * s + k - size - low, 0)
                   for size, k, s, o, (low, _) in zip(sizes, taps, strides, outputs, pads)]
    rows = _pad_spatial(x, window_pads).transpose(3, 1, 2, 0)  # [Cin, H', W', N]
    dk = _canonical(rows, spread.transpose(1, 2, 0, 3))  # [Cin, kh, kw, Cout]
    return dx, dk.transpose(1, 2, 0, 3).astype(kernel.dtype)


_dense.defvjp(_dense_forward, _dense_backward)


def dense_conv(x, kernel, strides: Sequence[int], pads, groups: int = 1) -> jax.Array:
    """``lax.conv_general_dilated(x, kernel, strides, pads, feature_group_count=groups)`` for
    NHWC ``x`` and HWIO ``kernel``, with a backward pass of canonical convolutions only.

    Args:
      x: ``[N, H, W, Cin]``.
      kernel: ``[kh, kw, Cin // groups, Cout]``.
      strides: ``(sh, sw)``.
      pads: ``((top, bottom), (left, right))`` zero padding.
      groups: feature groups, each its own dense convolution (depthwise convolutions have
        faster forms: ``kernels.depthwise_shift_add``).
    """
    strides = tuple(int(s) for s in strides)
    pads = tuple((int(low), int(high)) for low, high in pads)
    if groups == 1:
        return _dense(x, kernel, strides, pads)
    per_in, per_out = x.shape[-1] // groups, kernel.shape[-1] // groups
    return jnp.concatenate(
        [_dense(x[..., g * per_in:(g + 1) * per_in], kernel[..., g * per_out:(g + 1) * per_out], strides, pads)
         for g in range(groups)], axis=-1)
