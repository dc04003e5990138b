"""The hand-differentiated kernels of ``effnet_jax.fast.fused`` equal their plain JAX forms,
values and every gradient (the statistics' included)."""

from functools import partial

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest


LEAKY = partial(nn.leaky_relu, negative_slope=0.3)  # the seed's activation
ACTIVATIONS = [LEAKY, nn.gelu, nn.relu, nn.silu, jnp.tanh, lambda v: v * jax.nn.sigmoid(2.0 * v)]  # and one of a user's


def conv_reference(kernel, x, strides, padding, groups=1):
    """``flax.linen.Conv`` (no bias) applied with the given kernel."""
    conv = nn.Conv(kernel.shape[-1], kernel.shape[:2], strides, padding, feature_group_count=groups, use_bias=False)
    return conv.apply({"params": {"kernel": kernel}}, x)


@pytest.mark.parametrize("activation", [LEAKY, nn.gelu])
@pytest.mark.parametrize("axis,shape", [(1, (4, 6, 7, 5)), (2, (4, 6, 7, 5)), (1, (3, 7, 4, 2))])
def test_fused_batch_norm_pool_equals_batch_norm_then_pool(axis, shape, activation):
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
        y, mean, var = fused.act_batch_norm(x, s, b, activation, 1e-5, jnp.float32)
        return nn.max_pool(y, window, strides=window, padding="VALID"), mean, var

    def objective(fn):
        weights = jax.random.normal(key2, separate(x, scale, bias)[0].shape)

        def f(x, s, b):
            y, mean, var = fn(x, s, b)
            return jnp.sum(jnp.sin(y) * weights) + jnp.sum(mean ** 2) + jnp.sum(jnp.cos(var))
        return jax.value_and_grad(f, argnums=(0, 1, 2))(x, scale, bias)

    ours = objective(lambda x, s, b: fused.act_batch_norm_pool(x, s, b, activation, 1e-5, jnp.float32, axis))
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5), ours, objective(separate))


@pytest.mark.parametrize("activation", [LEAKY, nn.gelu])
@pytest.mark.parametrize("in_features", [1, 3])
def test_fused_pointwise_batch_norm_equals_matmul_then_batch_norm(in_features, activation):
    """Values and all gradients (input, kernel, scale, bias; through the statistics too) of the
    recomputing 1x1 conv + BatchNorm against the product followed by ``act_batch_norm``."""
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

    ours = objective(lambda x, k, s, b: fused.pointwise_act_batch_norm(x, k, s, b, activation, 1e-5, jnp.float32))
    separate = objective(lambda x, k, s, b: fused.act_batch_norm(x @ k, s, b, activation, 1e-5, jnp.float32))
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5), ours, separate)


@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_hand_written_gradients_equal_automatic_ones(activation):
    """The fused BatchNorm's backward takes any activation's derivative from JAX."""
    from effnet_jax.fast import fused

    key = jax.random.key(7)
    x = jax.random.normal(key, (4, 6, 7, 5)) * 2 + 0.3
    scale, bias = jnp.linspace(0.5, 1.5, 5), jnp.linspace(-0.2, 0.2, 5)

    def plain_bn(x, scale, bias):
        a = activation(x)
        mean, var = a.mean((0, 1, 2)), a.var((0, 1, 2))
        return (a - mean) * jax.lax.rsqrt(var + 1e-5) * scale + bias, mean, var

    def objective(fn):
        def f(x, scale, bias):
            y, mean, var = fn(x, scale, bias)
            return jnp.sum(jnp.sin(y)) + jnp.sum(mean ** 2) + jnp.sum(jnp.cos(var))
        return jax.grad(f, argnums=(0, 1, 2))

    ours = objective(lambda x, s, b: fused.act_batch_norm(x, s, b, activation, 1e-5, jnp.float32))(x, scale, bias)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5), ours, objective(plain_bn)(x, scale, bias))

    kernel = jax.random.normal(key, (3, 1, 5))
    pads = ((1, 1), (0, 0))
    conv = lambda x, k: conv_reference(k[:, :, None, :], x, (1, 1), "SAME", groups=5)
    f = lambda fn: jax.grad(lambda x, k: jnp.sum(jnp.sin(fn(x, k))), argnums=(0, 1))(x, kernel)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5),
                 f(lambda x, k: fused.depthwise_same(x, k, pads)), f(conv))


@pytest.mark.parametrize("function", [nn.relu, nn.leaky_relu, LEAKY, partial(nn.leaky_relu, negative_slope=0.0)])
def test_recognised_relus_run_as_a_where_with_the_same_values_and_derivative(function):
    """``jax.nn.relu``'s ``maximum`` under its custom JVP runs ~2x slower inside the multi-step
    scan; the kernels compute a recognised (Leaky)ReLU as one ``where``, equal everywhere, 0 included."""
    from effnet_jax.fast import one_channel

    form = one_channel.piecewise_linear_form(function)
    assert form is not function and one_channel.leaky_slope(function) is not None
    x = jnp.array([-2.0, -0.5, 0.0, 0.5, 2.0])
    np.testing.assert_array_equal(form(x), function(x))
    derivative = lambda f: jax.vmap(jax.grad(f))(x)
    np.testing.assert_array_equal(derivative(form), derivative(function))
    assert one_channel.piecewise_linear_form(nn.gelu) is nn.gelu
