"""Dense convolutions on the fast path: exact against ``lax``, and every convolution of a compiled
multi-step training program is of the one kind XLA:CPU runs fast inside a loop body.

Without ``fast.dense_conv`` the gradients of a dense convolution inside ``lax.scan`` keep
autodiff's dimension numbers (``b01f_01oi``, ``f01b_i01o->01bf``), which XLA:CPU leaves to its
naive loop emitter (20-70x slower than the same step jitted alone, jax-ml/jax#12868).
"""

from __future__ import annotations

import re

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax import lax

from effnet_jax.data import dataset_info, make_preprocess
from effnet_jax.fast.dense_conv import CANONICAL_DIM_LABELS, dense_conv
from effnet_jax.fast.seam import fast_path
from effnet_jax.models import ImageClassifier, create_model, list_models
from effnet_jax.sweeps.population import init_population, make_population_multi_step
from effnet_jax.training.state import init_train_state
from effnet_jax.training.steps import make_multi_step, make_train_step


@pytest.mark.parametrize("kernel, strides, pads, groups", [
    ((3, 3), (1, 1), ((1, 1), (1, 1)), 1),  # the baseline's SAME 3x3
    ((3, 3), (2, 2), ((0, 1), (0, 1)), 1),  # strided SAME, the extra pixel after
    ((5, 2), (3, 2), ((0, 0), (0, 0)), 1),  # strided VALID, rows past the last window unread
    ((2, 3), (1, 2), ((2, 0), (1, 3)), 2),  # asymmetric padding, two groups
])
def test_dense_conv_and_its_gradients_equal_lax(kernel, strides, pads, groups):
    with jax.enable_x64(True):
        rng = np.random.default_rng(0)
        x = jnp.asarray(rng.normal(size=(2, 9, 8, 4)))
        k = jnp.asarray(rng.normal(size=(*kernel, 4 // groups, 6)))
        reference = lambda x, k: lax.conv_general_dilated(x, k, strides, pads, feature_group_count=groups,
                                                          dimension_numbers=("NHWC", "HWIO", "NHWC"))
        ours = lambda x, k: dense_conv(x, k, strides, pads, groups)
        for f in (lambda c: c(x, k), lambda c: jax.grad(lambda a, b: jnp.sum(jnp.sin(c(a, b))), (0, 1))(x, k)):
            for a, b in zip(jax.tree.leaves(f(ours)), jax.tree.leaves(f(reference))):
                assert a.shape == b.shape
                np.testing.assert_allclose(a, b, rtol=0, atol=1e-10)


@pytest.mark.parametrize("in_axes", [(0, 0), (0, None), (None, 0)])
def test_vmapped_dense_conv_equals_lax_for_every_batched_argument(in_axes):
    """A population's member axis on the input, the kernel or both (the batching rule folds it
    into the batch, the output channels, or runs members in turn): values and gradients."""
    with jax.enable_x64(True):
        rng = np.random.default_rng(1)
        x = jnp.asarray(rng.normal(size=(3, 2, 7, 6, 4)))[(slice(None) if in_axes[0] == 0 else 0)]
        k = jnp.asarray(rng.normal(size=(3, 3, 2, 2, 6)))[(slice(None) if in_axes[1] == 0 else 0)]
        strides, pads = (2, 1), ((0, 1), (1, 0))
        reference = lambda x, k: lax.conv_general_dilated(x, k, strides, pads, feature_group_count=2,
                                                          dimension_numbers=("NHWC", "HWIO", "NHWC"))
        ours = lambda x, k: dense_conv(x, k, strides, pads, 2)
        loss = lambda c: lambda a, b: jnp.sum(jnp.sin(jax.vmap(c, in_axes)(a, b)))
        for f in (lambda c: jax.vmap(c, in_axes)(x, k), lambda c: jax.grad(loss(c), (0, 1))(x, k)):
            for a, b in zip(jax.tree.leaves(f(ours)), jax.tree.leaves(f(reference))):
                np.testing.assert_allclose(a, b, rtol=0, atol=1e-10)


class PlainConvNet(ImageClassifier):
    """The README's own-model example: plain 3x3 ``nn.Conv``, ``nn.BatchNorm``, ReLU, max-pool."""

    widths: tuple[int, ...] = (4, 8)

    def features(self, x, train):
        for i, width in enumerate(self.widths):
            x = nn.Conv(width, (3, 3), use_bias=False, name=f"conv_{i}")(x)
            x = nn.BatchNorm(use_running_average=not train, momentum=self.bn_momentum, name=f"bn_{i}")(x)
            x = nn.max_pool(nn.relu(x), (2, 2), (2, 2))
        return x


BATCHES = {"image": jax.ShapeDtypeStruct((2, 4, 16, 16, 3), jnp.uint8), "label": jax.ShapeDtypeStruct((2, 4), jnp.int32)}


def convolutions(program, *args) -> list[str]:
    """Every convolution of ``program`` compiled for ``args``, as XLA prints it."""
    hlo = jax.jit(program).lower(*args).compile().as_text()
    return re.findall(r"convolution\(.*?dim_labels=[^,\s}]+(?:, feature_group_count=\d+)?", hlo)


def compiled_dim_labels(model) -> list[str]:
    """The ``dim_labels`` of every convolution in the compiled multi-step training program."""
    tx = optax.adam(1e-3)
    state = jax.eval_shape(lambda: init_train_state(model, tx, jax.random.PRNGKey(0), jnp.zeros((1, 16, 16, 3))))
    run = make_multi_step(make_train_step(model, tx, make_preprocess(dataset_info("cifar10"))))
    return [c.split("dim_labels=")[1].split(",")[0] for c in convolutions(run, state, BATCHES, {})]


@pytest.mark.parametrize("name", [*list_models(), "plain_conv_net"])
def test_every_convolution_in_the_multi_step_program_is_the_fast_kind(name):
    model = PlainConvNet() if name == "plain_conv_net" else create_model(name, widths=(4, 8, 8))
    assert model.resolved_implementation == "fast"
    labels = compiled_dim_labels(model)
    assert all(label == CANONICAL_DIM_LABELS for label in labels), labels
    if name in ("baseline", "plain_conv_net"):
        assert labels  # the dense convolutions are there, in the fast form


def test_a_vmapped_population_keeps_one_canonical_convolution_per_member():
    """``vmap`` over members would otherwise turn each convolution into one with a feature group
    per member, which XLA:CPU runs several times slower than the members in turn."""
    model, tx = create_model("baseline", widths=(4, 8, 8)), optax.adam(1e-3)
    keys = jnp.stack([jax.random.PRNGKey(i) for i in range(2)])
    population = jax.eval_shape(lambda: init_population(model, tx, keys, jnp.zeros((1, 16, 16, 3))))
    step = make_train_step(model, tx, make_preprocess(dataset_info("cifar10")))
    found = convolutions(make_population_multi_step(step, False, group_size=2), population, BATCHES,
                         {"learning_rate": jax.ShapeDtypeStruct((2,), jnp.float32)})
    assert found and all(f"dim_labels={CANONICAL_DIM_LABELS}" in c and "feature_group_count" not in c
                         for c in found), found


class OwnModule(nn.Module):
    """A researcher's own ``nn.Module``, not an ``ImageClassifier``: no fast path of its own."""

    @nn.compact
    def __call__(self, x):
        x = nn.max_pool(nn.relu(nn.Conv(4, (3, 3))(x)), (2, 2), (2, 2))
        return nn.Dense(10)(x.reshape(x.shape[0], -1))


@pytest.mark.parametrize("fast", [True, False])
def test_an_own_scan_of_an_own_module_is_canonical_inside_fast_path(fast):
    """The README's advice for a plain module in a scan of one's own: apply it in ``fast_path()``
    (without it the gradients' convolutions keep autodiff's forms)."""
    model = OwnModule()
    params = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), jnp.zeros((1, 16, 16, 3))))

    def loss(p, x):
        with fast_path(fast):
            return jnp.mean(model.apply(p, x) ** 2)

    def scan(p, xs):
        return jax.lax.scan(lambda p, x: (jax.tree.map(lambda a, g: a - 0.1 * g, p, jax.grad(loss)(p, x)), None),
                            p, xs)[0]

    found = convolutions(scan, params, jax.ShapeDtypeStruct((2, 4, 16, 16, 3), jnp.float32))
    canonical = [f"dim_labels={CANONICAL_DIM_LABELS}" in c for c in found]
    assert found and (all(canonical) if fast else not all(canonical)), found
