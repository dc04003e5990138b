"""The fast layer forms equal plain ``flax.linen.Conv``/``BatchNorm``/``max_pool`` formulations."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from effnet_jax.models import create_model, list_models
from effnet_jax.models.layers import (
    DepthwiseConv,
    LayerOptions,
    MaxPool,
    PairConv,
    PointwiseConv,
)
from effnet_jax.models.norm import ActivationNorm
from helpers import random_variables

TOL = dict(rtol=1e-5, atol=1e-5)


def conv_reference(kernel, x, strides, padding, groups=1):
    """``flax.linen.Conv`` (no bias) applied with the given kernel."""
    conv = nn.Conv(kernel.shape[-1], kernel.shape[:2], strides, padding, feature_group_count=groups, use_bias=False)
    return conv.apply({"params": {"kernel": kernel}}, x)


def fast_and_params(layer, x):
    variables = layer.init(jax.random.key(0), x)
    return layer.apply(variables, x), variables["params"]["kernel"]


@pytest.mark.parametrize("shape", [(2, 8, 8, 6), (2, 7, 5, 6)])
@pytest.mark.parametrize("kernel_size, strides", [((1, 3), (1, 1)), ((3, 1), (1, 1)), ((3, 3), (2, 2)), ((3, 3), (1, 1))])
@pytest.mark.parametrize("multiplier", [1, 2])
def test_depthwise_equals_grouped_conv(shape, kernel_size, strides, multiplier):
    x = jax.random.normal(jax.random.key(1), shape)
    y, kernel = fast_and_params(DepthwiseConv(kernel_size, strides, multiplier), x)
    np.testing.assert_allclose(y, conv_reference(kernel, x, strides, "SAME", groups=shape[-1]), **TOL)


@pytest.mark.parametrize("groups", [1, 4])
def test_pointwise_equals_1x1_conv(groups):
    x = jax.random.normal(jax.random.key(1), (2, 5, 6, 16))
    y, kernel = fast_and_params(PointwiseConv(12, groups), x)
    np.testing.assert_allclose(y, conv_reference(kernel, x, (1, 1), "VALID", groups), **TOL)


@pytest.mark.parametrize("shape", [(2, 6, 8, 5), (2, 7, 9, 5)])
@pytest.mark.parametrize("stride_axis", [1, 2])
def test_seed_pair_conv_equals_strided_valid_conv(shape, stride_axis):
    x = jax.random.normal(jax.random.key(1), shape)
    y, kernel = fast_and_params(PairConv(7, stride_axis, "seed"), x)
    strides = (1, 2) if stride_axis == 2 else (2, 1)
    assert kernel.shape[:2] == strides  # (1, 2) kernel for width, (2, 1) for height
    np.testing.assert_allclose(y, conv_reference(kernel, x, strides, "VALID"), **TOL)


@pytest.mark.parametrize("shape", [(2, 6, 8, 5), (2, 7, 9, 5)])
@pytest.mark.parametrize("stride_axis", [1, 2])
def test_keras_pair_conv_equals_strided_same_conv(shape, stride_axis):
    x = jax.random.normal(jax.random.key(1), shape)
    y, kernel = fast_and_params(PairConv(7, stride_axis, "keras"), x)
    strides = (1, 2) if stride_axis == 2 else (2, 1)
    assert kernel.shape[:2] == strides[::-1]  # Keras: (2, 1) kernel with (1, 2) stride
    np.testing.assert_allclose(y, conv_reference(kernel, x, strides, "SAME"), **TOL)


@pytest.mark.parametrize("window", [(2, 1), (1, 2), (2, 2)])
def test_max_pool_equals_flax_max_pool_and_gradient_flows_to_the_maximum(window):
    x = jax.random.normal(jax.random.key(1), (2, 7, 9, 3))
    pool = MaxPool(window)
    y = pool.apply({}, x)
    np.testing.assert_array_equal(y, nn.max_pool(x, window, window, "VALID"))
    grad = jax.grad(lambda x: pool.apply({}, x).sum())(x)
    reference = jax.grad(lambda x: nn.max_pool(x, window, window, "VALID").sum())(x)
    np.testing.assert_array_equal(grad, reference)


@pytest.mark.parametrize("order", ["act_bn", "bn_act"])
def test_activation_norm_equals_leaky_relu_and_flax_batch_norm(order):
    x = 2 * jax.random.normal(jax.random.key(1), (4, 5, 6, 8)) + 0.5
    opts = LayerOptions(bn_momentum=0.9, bn_epsilon=1e-3)
    layer = ActivationNorm("leaky_relu", order, opts)
    variables = layer.init(jax.random.key(0), x, train=False)
    variables = jax.tree.map(lambda v: v + 0.3 * jax.random.uniform(jax.random.key(2), v.shape), variables)
    bn = nn.BatchNorm(momentum=0.9, epsilon=1e-3)
    bn_vars = {"params": variables["params"], "batch_stats": variables["batch_stats"]}
    act = lambda v: jax.nn.leaky_relu(v, 0.3)

    def reference(v, x, train):
        if order == "act_bn":
            return bn.apply(v, act(x), use_running_average=not train, mutable=["batch_stats"] if train else False)
        out = bn.apply(v, x, use_running_average=not train, mutable=["batch_stats"] if train else False)
        return (act(out[0]), out[1]) if train else act(out)

    np.testing.assert_allclose(layer.apply(variables, x, train=False), reference(bn_vars, x, False), **TOL)
    y, new = layer.apply(variables, x, train=True, mutable=["batch_stats"])
    y_ref, new_ref = reference(bn_vars, x, True)
    np.testing.assert_allclose(y, y_ref, **TOL)
    np.testing.assert_allclose(new["batch_stats"]["mean"], new_ref["batch_stats"]["mean"], **TOL)
    np.testing.assert_allclose(new["batch_stats"]["var"], new_ref["batch_stats"]["var"], **TOL)


@pytest.mark.parametrize("name", list_models())
def test_fast_network_equals_plain_conv_network_forward_and_gradient(name):
    x = jax.random.normal(jax.random.key(1), (4, 32, 32, 3))
    fast = create_model(name, dataset="svhn")
    plain = create_model(name, dataset="svhn", implementation="xla")
    variables = random_variables(fast, x.shape)

    def loss(params, model):
        logits, _ = model.apply({**variables, "params": params}, x, train=True, mutable=["batch_stats"],
                                rngs={"dropout": jax.random.key(0)})
        return jnp.sum(jnp.sin(logits)), logits

    grad = lambda model: jax.jit(jax.value_and_grad(lambda p: loss(p, model), has_aux=True))(variables["params"])
    (_, fast_logits), fast_grad = grad(fast)
    (_, plain_logits), plain_grad = grad(plain)
    np.testing.assert_allclose(fast_logits, plain_logits, **TOL)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4), fast_grad, plain_grad)
    np.testing.assert_allclose(jax.jit(fast.apply)(variables, x), jax.jit(plain.apply)(variables, x), **TOL)


@pytest.mark.parametrize("overrides", [{"pool_axis": "width"}, {"final_conv": "keras"}])
def test_fast_effnet_variants_equal_plain_conv(overrides):
    x = jax.random.normal(jax.random.key(1), (2, 28, 28, 1))
    fast = create_model("effnet", **overrides)
    plain = create_model("effnet", implementation="xla", **overrides)
    variables = random_variables(fast, x.shape)
    np.testing.assert_allclose(jax.jit(fast.apply)(variables, x), jax.jit(plain.apply)(variables, x), **TOL)


@pytest.mark.parametrize("axis,shape", [(1, (4, 6, 7, 5)), (2, (4, 6, 7, 5)), (1, (3, 7, 4, 2))])
def test_fused_batch_norm_pool_equals_batch_norm_then_pool(axis, shape):
    """Values and all gradients (input, scale, bias; through the statistics too), including an
    odd length whose last row the pool drops but the statistics count."""
    from effnet_jax.fast import fused

    key1, key2 = jax.random.split(jax.random.key(3))
    x = jax.random.normal(key1, shape) * 2 + 0.3
    x = x.at[0, 0].set(x[0, 1])  # exact ties: the first of the pair takes the gradient in both
    features = shape[-1]
    scale, bias = jnp.linspace(-0.5, 1.5, features), jnp.linspace(-0.2, 0.2, features)
    window = (2, 1) if axis == 1 else (1, 2)

    def separate(x, s, b):
        y, mean, var = fused.leaky_batch_norm(x, s, b, 0.3, 1e-5, jnp.float32)
        return nn.max_pool(y, window, strides=window, padding="VALID"), mean, var

    def objective(fn):
        weights = jax.random.normal(key2, separate(x, scale, bias)[0].shape)

        def f(x, s, b):
            y, mean, var = fn(x, s, b)
            return jnp.sum(jnp.sin(y) * weights) + jnp.sum(mean ** 2) + jnp.sum(jnp.cos(var))
        return jax.value_and_grad(f, argnums=(0, 1, 2))(x, scale, bias)

    ours = objective(lambda x, s, b: fused.leaky_batch_norm_pool(x, s, b, 0.3, 1e-5, jnp.float32, axis))
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5), ours, objective(separate))


@pytest.mark.parametrize("in_features", [1, 3])
def test_fused_pointwise_batch_norm_equals_matmul_then_batch_norm(in_features):
    """Values and all gradients (input, kernel, scale, bias; through the statistics too) of the
    recomputing 1x1 conv + BatchNorm against the product followed by ``leaky_batch_norm``."""
    from effnet_jax.fast import fused

    keys = jax.random.split(jax.random.key(5), 3)
    x = jax.random.normal(keys[0], (4, 6, 5, in_features)) * 2 + 0.3
    kernel = jax.random.normal(keys[1], (in_features, 7))
    scale, bias = jnp.linspace(-0.5, 1.5, 7), jnp.linspace(-0.2, 0.2, 7)
    weights = jax.random.normal(keys[2], (4, 6, 5, 7))

    def objective(fn):
        def f(x, k, s, b):
            y, mean, var = fn(x, k, s, b)
            return jnp.sum(jnp.sin(y) * weights) + jnp.sum(mean ** 2) + jnp.sum(jnp.cos(var))
        return jax.value_and_grad(f, argnums=(0, 1, 2, 3))(x, kernel, scale, bias)

    ours = objective(lambda x, k, s, b: fused.pointwise_leaky_batch_norm(x, k, s, b, 0.3, 1e-5, jnp.float32))
    separate = objective(lambda x, k, s, b: fused.leaky_batch_norm(x @ k, s, b, 0.3, 1e-5, jnp.float32))
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5), ours, separate)


def test_hand_written_gradients_equal_automatic_ones():
    from effnet_jax.fast import fused

    key = jax.random.key(7)
    x = jax.random.normal(key, (4, 6, 7, 5)) * 2 + 0.3
    scale, bias = jnp.linspace(0.5, 1.5, 5), jnp.linspace(-0.2, 0.2, 5)

    def plain_bn(x, scale, bias):
        a = jax.nn.leaky_relu(x, 0.3)
        mean, var = a.mean((0, 1, 2)), a.var((0, 1, 2))
        return (a - mean) * jax.lax.rsqrt(var + 1e-5) * scale + bias, mean, var

    def objective(fn):
        def f(x, scale, bias):
            y, mean, var = fn(x, scale, bias)
            return jnp.sum(jnp.sin(y)) + jnp.sum(mean ** 2) + jnp.sum(jnp.cos(var))
        return jax.grad(f, argnums=(0, 1, 2))

    ours = objective(lambda x, s, b: fused.leaky_batch_norm(x, s, b, 0.3, 1e-5, jnp.float32))(x, scale, bias)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5), ours, objective(plain_bn)(x, scale, bias))

    kernel = jax.random.normal(key, (3, 1, 5))
    pads = ((1, 1), (0, 0))
    conv = lambda x, k: conv_reference(k[:, :, None, :], x, (1, 1), "SAME", groups=5)
    f = lambda fn: jax.grad(lambda x, k: jnp.sum(jnp.sin(fn(x, k))), argnums=(0, 1))(x, kernel)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5),
                 f(lambda x, k: fused.depthwise_same(x, k, pads)), f(conv))
