"""Whole blocks computed on the fast kernels, on the reference block's own variables.

``EffNetBlock``: its four (activation, BatchNorm) pairs run through the hand-differentiated
kernels of ``fused``, each taking along what sits next to it: the 1x1 product from a narrow
input (the image), recomputed in the backward pass instead of saved, and the 2-wide max-pool
after the first depthwise convolution, whose gradient joins the BatchNorm's. On a one-channel
image with a LeakyReLU (or ReLU) the 1x1, its BatchNorm and the first depthwise convolution are
one closed form (``one_channel``), no wide tensor formed before the depthwise output. The
block's fields are read here: any activation (its derivative from JAX inside the fused VJPs),
either depthwise kernel size, and the squeeze-excite (plain JAX, differentiated automatically:
a mean, two small dense layers and a scale). The handler writes the BatchNorm statistics as
``nn.BatchNorm`` would.

``effnet_jax/models/effnet.py`` declares it on the block (``@fused_on_cpu(effnet_block,
computes=EFFNET_BLOCK_CALL)``): the seam runs this function for exactly that class while its
``__call__`` keeps the syntax tree ``EFFNET_BLOCK_CALL``. A block edited in place (a new layer,
another order) is not the one these kernels compute, so it runs layer by layer (``seam``'s fast
``nn.Conv``/``nn.BatchNorm``), with a warning once; comments and formatting change nothing.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from effnet_jax.fast import fused, kernels, one_channel, seam

# ``seam.structure_digest(EffNetBlock.__call__)`` of the stock block ``effnet_block`` computes.
# Change it only together with ``effnet_block`` (tests/test_fast_seam.py compares the two).
EFFNET_BLOCK_CALL = "9e02ada05a2f760da01c8090e1cdf05dd705690168d8b9e403f475c1c47eb54b"


def statistics_of(stats, name):
    """``(mean, var)``: the running BatchNorm statistics of the block's child ``name``."""
    return stats[name]["mean"], stats[name]["var"]


def squeeze_excite(params, x, act, dtype):
    """``SqueezeExcite`` on its ``params``: channel means, two dense layers, a sigmoid scale."""
    def dense(name, v):
        layer = params[name]
        return v @ jnp.asarray(layer["kernel"]).astype(dtype) + jnp.asarray(layer["bias"]).astype(dtype)

    s = jnp.mean(x, axis=(1, 2))
    s = jax.nn.sigmoid(dense("expand", act(dense("reduce", s))))
    return x * s[:, None, None, :]


def effnet_block(block: EffNetBlock, x, train: bool):
    """``block(x, train)`` (an ``EffNetBlock``) on the fast kernels, or ``NotImplemented`` (a
    non-image input, or training without mutable ``batch_stats``)."""
    if x.ndim != 4:
        return NotImplemented
    if train and not block.is_mutable_collection("batch_stats"):
        return NotImplemented  # the reference raises its own error
    params, stats = block.variables["params"], block.variables["batch_stats"]
    (k_row, k_column), dtype = block.kernel_sizes, block.dtype
    act, epsilon, momentum = block.activation_fn, block.bn_epsilon, block.bn_momentum
    slope, act = one_channel.leaky_slope(act), one_channel.piecewise_linear_form(act)
    pool_axis = 1 if block.pool_axis == "height" else 2
    rows, columns = f"depthwise_1x{k_row}", f"depthwise_{k_column}x1"

    def weights(name):
        return jnp.asarray(params[name]["kernel"]).astype(dtype)

    def post(y, name, pool: bool = False, pointwise=None):
        """Activation, BatchNorm (and the pool) of ``y``, or of ``y @ pointwise`` if given."""
        scale, bias = params[name]["scale"], params[name]["bias"]
        mean, var = statistics_of(stats, name)
        if not train:  # (``pointwise`` is only passed when training)
            out = kernels.batch_norm_inference(act(y), scale, bias, mean, var, epsilon, dtype)
            return kernels.max_pool(out, (2, 1) if pool_axis == 1 else (1, 2)) if pool else out
        if pointwise is not None:
            out, batch_mean, batch_var = fused.pointwise_act_batch_norm(y, pointwise, scale, bias, act, epsilon,
                                                                        dtype)
        elif pool:
            out, batch_mean, batch_var = fused.act_batch_norm_pool(y, scale, bias, act, epsilon, dtype, pool_axis)
        else:
            out, batch_mean, batch_var = fused.act_batch_norm(y, scale, bias, act, epsilon, dtype)
        seam.update_running_averages(block, name, mean, var, batch_mean, batch_var, momentum)
        return out

    x = x.astype(dtype)
    expand = weights("expand")[0, 0]
    if x.shape[-1] == 1 and slope is not None:  # a grey image: the 1x1, its BatchNorm and the 1xk in closed form
        statistics = None if train else statistics_of(stats, "expand_norm")
        norm = params["expand_norm"]
        x, batch_mean, batch_var = one_channel.expand_norm_depthwise(
            x, expand[0], norm["scale"], norm["bias"], weights(rows)[0, :, 0], slope, epsilon, dtype, statistics)
        if train:
            seam.update_running_averages(block, "expand_norm", *statistics_of(stats, "expand_norm"),
                                         batch_mean, batch_var, momentum)
    else:
        if train and x.shape[-1] <= fused.MAX_RECOMPUTED_INPUTS:  # the image: recompute, do not save
            x = post(x, "expand_norm", pointwise=expand)
        else:
            x = post(kernels.matmul_channels(x, expand), "expand_norm")
        x = seam.conv_forward(x, weights(rows), (1, 1), "SAME", x.shape[-1])
    x = post(x, f"{rows}_norm", pool=True)
    x = seam.conv_forward(x, weights(columns), (1, 1), "SAME", x.shape[-1])
    x = post(x, f"{columns}_norm")
    if block.se_features:
        x = squeeze_excite(params["squeeze_excite"], x, act, dtype)
    _, strides, padding = block.final_conv_layout
    x = seam.conv_forward(x, weights("project"), strides, padding, 1)
    return post(x, "project_norm")

