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
from effnet_jax.models import ImageClassifier, create_model, list_models
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


class PlainConvNet(ImageClassifier):
    """The README's own-model example: plain 3x3 ``nn.Conv``, ``nn.BatchNorm``, ReLU, max-pool."""

    widths: tuple[int, ...] = (4, 8)

    def features(self, x, train):
        for i, width in enumerate(self.widths):
            x = nn.Conv(width, (3, 3), use_bias=False, name=f"conv_{i}")(x)
            x = nn.BatchNorm(use_running_average=not train, momentum=self.bn_momentum, name=f"bn_{i}")(x)
            x = nn.max_pool(nn.relu(x), (2, 2), (2, 2))
        return x


def compiled_dim_labels(model, steps: int = 2) -> list[str]:
    """The ``dim_labels`` of every convolution in the compiled multi-step training program."""
    tx = optax.adam(1e-3)
    state = jax.eval_shape(lambda: init_train_state(model, tx, jax.random.PRNGKey(0), jnp.zeros((1, 16, 16, 3))))
    run = make_multi_step(make_train_step(model, tx, make_preprocess(dataset_info("cifar10"))))
    batches = {"image": jax.ShapeDtypeStruct((steps, 4, 16, 16, 3), jnp.uint8),
               "label": jax.ShapeDtypeStruct((steps, 4), jnp.int32)}
    hlo = jax.jit(run).lower(state, batches, {}).compile().as_text()
    return re.findall(r"convolution\(.*?dim_labels=([^,\s}]+)", hlo)


@pytest.mark.parametrize("name", [*list_models(), "plain_conv_net"])
def test_every_convolution_in_the_multi_step_program_is_the_fast_kind(name):
    model = PlainConvNet() if name == "plain_conv_net" else create_model(name, widths=(4, 8, 8))
    assert model.resolved_implementation == "fast"
    labels = compiled_dim_labels(model)
    assert all(label == CANONICAL_DIM_LABELS for label in labels), labels
    if name in ("baseline", "plain_conv_net"):
        assert labels  # the dense convolutions are there, in the fast form
