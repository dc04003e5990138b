"""The fast path computes the reference modules exactly: the stock EffNet block, a researcher's
own block (layer by layer), an edited block (declined, never the stale one), and each plain
``nn.Conv``/``nn.BatchNorm`` configuration it takes over.

Compared in float64 (the kernels keep their float32 statistics), so that 1e-5 measures the
formulas rather than float32 summation order; ``test_layers`` compares whole float32 networks.
"""

from __future__ import annotations

import logging

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import random_variables

from effnet_jax.fast import blocks, seam
from effnet_jax.fast.seam import fast_path
from effnet_jax.models import EffNetBlock, ImageClassifier, create_model, list_models, register_model
from effnet_jax.models.registry import MODELS

F64 = dict(dtype=jnp.float64, param_dtype=jnp.float64)


@pytest.fixture(autouse=True)
def float64():
    with jax.enable_x64(True):
        yield


def close(a, b, tol=1e-5):
    """Every leaf of ``a`` within ``tol`` of ``b``, relative to the leaf's largest magnitude."""
    def check(x, y):
        scale = max(float(jnp.max(jnp.abs(y))), 1e-6)
        np.testing.assert_allclose(np.asarray(x) / scale, np.asarray(y) / scale, rtol=0, atol=tol)
    jax.tree.map(check, a, b)


def forward_and_gradients(model, variables, x, fast: bool):
    """Logits, new batch statistics, and the gradients of a loss over every parameter and the
    input, with the fast path on or off; plus the evaluation-mode logits."""
    def loss(params, images):
        with fast_path(fast):
            logits, new = model.apply({**variables, "params": params}, images, True, mutable=["batch_stats"])
        return jnp.sum(jnp.sin(logits)), (logits, new)

    grads, (logits, new) = jax.jit(jax.grad(loss, argnums=(0, 1), has_aux=True))(variables["params"], x)
    with fast_path(fast):
        evaluated = jax.jit(lambda v, images: model.apply(v, images, False))(variables, x)
    return logits, new, grads, evaluated


def assert_fast_equals_reference(model, x, seed=0):
    variables = random_variables(model, x.shape, seed, **({} if isinstance(model, ImageClassifier) else {"train": False}))
    fast = forward_and_gradients(model, variables, x, True)
    reference = forward_and_gradients(model, variables, x, False)
    for ours, theirs in zip(fast, reference):
        close(ours, theirs)


@pytest.mark.parametrize("overrides, channels", [
    ({}, 3),  # a colour image: its 1x1 recomputed in the backward
    ({"final_conv": "keras", "pool_axis": "width"}, 16),
    ({"kernel_size": 5}, 16),
    ({}, 1),  # a grey image: the 1x1, its BatchNorm and the 1xk in closed form (``fast.one_channel``)
    ({"kernel_size": 5, "pool_axis": "width", "final_conv": "keras"}, 1),
    # the block's fields: any activation (its derivative from JAX), kernel sizes, squeeze-excite
    ({"act": nn.gelu}, 3),
    ({"act": nn.gelu}, 1),  # not a LeakyReLU: the grey image takes the general route
    ({"act": nn.relu, "kernel_size": (5, 3)}, 1),  # a ReLU keeps the closed form
    ({"act": "silu", "se_ratio": 0.25}, 16),
    ({"act": nn.gelu, "se_ratio": 0.5, "pool_axis": "width", "final_conv": "keras"}, 1),
    ({"act": lambda v: v * nn.sigmoid(2.0 * v), "kernel_size": (3, 5), "se_ratio": 0.25}, 3),  # a user's function
])
def test_the_stock_block_runs_as_one_fast_function_equal_to_the_reference(overrides, channels):
    block = EffNetBlock(12, 6, **overrides, **F64)
    assert seam.handles(block)
    assert_fast_equals_reference(block, jax.random.normal(jax.random.key(1), (4, 12, 10, channels), jnp.float64))


@pytest.mark.parametrize("act", [None, nn.gelu, "relu", "swish"])
@pytest.mark.parametrize("se_ratio", [0.0, 0.25])
@pytest.mark.parametrize("kernel_size", [3, 5, (5, 3)])
@pytest.mark.parametrize("pool_axis, final_conv", [("height", "seed"), ("width", "keras")])
def test_every_combination_of_the_block_fields_keeps_the_fused_block(act, se_ratio, kernel_size, pool_axis, final_conv):
    model = create_model("effnet", act=act, se_ratio=se_ratio, kernel_size=kernel_size, bottleneck_ratio=0.75,
                         pool_axis=pool_axis, final_conv=final_conv)
    assert seam.describe_kernels(model, (28, 28, 1)) == "fused EffNetBlock"


def test_a_network_with_the_block_fields_runs_fast_equal_to_its_reference():
    model = create_model("effnet", dataset="fashion_mnist", widths=(16, 32, 64), act=nn.gelu, se_ratio=0.25,
                         bottleneck_ratio=0.75, **F64)
    params = random_variables(model, (2, 28, 28, 1), 0)["params"]["block_2"]
    assert params["expand"]["kernel"].shape == (1, 1, 32, 48)  # 64 * 0.75
    assert params["squeeze_excite"]["reduce"]["kernel"].shape == (48, 12)  # 48 * 0.25
    assert_fast_equals_reference(model, jax.random.normal(jax.random.key(2), (4, 28, 28, 1), jnp.float64))


@pytest.mark.parametrize("name", list_models())
def test_every_registered_network_runs_fast_equal_to_its_reference(name):
    """Forward, every gradient, the input's, batch statistics and evaluation, at the SVHN widths
    (dropout off: its mask is drawn the same way on both paths, but this keeps the check pure)."""
    model = create_model(name, dataset="svhn", dropout_rate=0.0, **F64)
    assert_fast_equals_reference(model, jax.random.normal(jax.random.key(1), (4, 16, 16, 3), jnp.float64))


def test_the_seed_effnet_on_grey_28x28_images_runs_fast_equal_to_its_reference():
    """Fashion-MNIST's shape: the first block's 1x1, BatchNorm and 1x3 on the grey image in closed
    form (``fast.one_channel``), the last block drops the 7-wide map's last column (the seed's
    VALID 2-tap conv)."""
    model = create_model("effnet", dataset="fashion_mnist", widths=(16, 32, 64), **F64)
    assert_fast_equals_reference(model, jax.random.normal(jax.random.key(2), (4, 28, 28, 1), jnp.float64))


class SqueezeExciteBlock(EffNetBlock):
    """A researcher's block: the stock one with squeeze-and-excitation on its output."""

    @nn.compact
    def __call__(self, x, train: bool):
        x = super().__call__(x, train)
        squeeze = jnp.mean(x, axis=(1, 2))
        dense = lambda width, name: nn.Dense(width, dtype=self.dtype, param_dtype=self.param_dtype, name=name)
        gate = nn.sigmoid(dense(x.shape[-1], "excite")(nn.relu(dense(4, "squeeze")(squeeze))))
        return x * gate[:, None, None, :]


class EffNetSE(ImageClassifier):
    """A network of the researcher's blocks, registered by name."""

    widths: tuple[int, ...] = (8, 16)

    def features(self, x, train):
        for i, width in enumerate(self.widths):
            x = SqueezeExciteBlock(width, width // 2, kernel_size=5, dtype=self.dtype, param_dtype=self.param_dtype,
                                   name=f"block_{i}")(x, train)
        return x


def test_a_researchers_block_runs_layer_by_layer_and_equals_its_reference():
    block = SqueezeExciteBlock(8, 4, kernel_size=5, **F64)
    assert not seam.handles(block)  # a subclass is not the stock block
    assert_fast_equals_reference(block, jax.random.normal(jax.random.key(1), (4, 8, 8, 3), jnp.float64))
    register_model("effnet_se_test")(EffNetSE)
    try:
        model = create_model("effnet_se_test", **F64)
    finally:
        MODELS.pop("effnet_se_test")
    assert model.resolved_implementation == "fast"
    assert_fast_equals_reference(model, jax.random.normal(jax.random.key(3), (4, 16, 16, 3), jnp.float64))


def test_an_edited_stock_block_is_declined_with_a_warning_and_still_exact(monkeypatch, caplog):
    calls = []
    handler = seam._HANDLERS[EffNetBlock]
    monkeypatch.setitem(seam._HANDLERS, EffNetBlock, lambda *a, **k: calls.append(out := handler(*a, **k)) or out)
    monkeypatch.setattr(seam, "structure_digest", lambda function: "edited")
    handler.recheck()
    try:
        with caplog.at_level(logging.WARNING, logger="effnet_jax"):
            assert_fast_equals_reference(EffNetBlock(8, 4, **F64),
                                         jax.random.normal(jax.random.key(1), (2, 8, 8, 3), jnp.float64))
        assert calls and all(out is NotImplemented for out in calls)
        assert "EffNetBlock.__call__ is not the block effnet_jax.fast.blocks.effnet_block computes" in caplog.text
    finally:
        handler.recheck()


def test_the_stock_block_declares_the_structure_its_kernel_computes():
    assert EffNetBlock.fused_cpu_kernel == "effnet_jax.fast.blocks.effnet_block"
    assert seam.structure_digest(EffNetBlock.__call__) == blocks.EFFNET_BLOCK_CALL


def test_comments_formatting_and_docstrings_keep_the_structure_and_an_edit_changes_it(tmp_path, monkeypatch):
    """The kernel choice rests on the syntax tree of ``__call__``, not its text."""
    import importlib
    import inspect
    import textwrap

    source = textwrap.dedent(inspect.getsource(EffNetBlock.__call__))
    lines = source.splitlines()
    body_start = next(i for i, line in enumerate(lines) if line.startswith("def "))
    restyled = "\n".join(lines[:body_start + 1] + ['    """A docstring of my own."""', "    # a comment"]
                          + [line.replace(", ", ",  ").rstrip() + "  # why" if line.strip() and "(" in line
                             and not line.rstrip().endswith((",", "(")) else line for line in lines[body_start + 1:]])
    last_two = [i for i, line in enumerate(lines) if line.startswith("    x = ")][-2:]  # not inside an if
    swapped = list(lines)
    swapped[last_two[0]], swapped[last_two[1]] = lines[last_two[1]], lines[last_two[0]]  # another order
    for name, text in (("restyled_block", restyled), ("edited_block", "\n".join(swapped))):
        (tmp_path / f"{name}.py").write_text("from flax import linen as nn\n\n\n" + text + "\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    restyled_call = importlib.import_module("restyled_block").__call__
    assert inspect.getsource(restyled_call) != source
    assert seam.structure_digest(restyled_call) == blocks.EFFNET_BLOCK_CALL
    assert seam.structure_digest(importlib.import_module("edited_block").__call__) != blocks.EFFNET_BLOCK_CALL


@pytest.mark.parametrize("layer, shape", [
    (nn.Conv(12, (3, 3), feature_group_count=6, use_bias=False, **F64), (2, 7, 5, 6)),  # depthwise, multiplier 2
    (nn.Conv(6, (3, 3), (2, 2), feature_group_count=6, **F64), (2, 7, 8, 6)),  # strided, with bias
    (nn.Conv(6, (1, 5), feature_group_count=6, padding="VALID", **F64), (2, 6, 9, 6)),
    (nn.Conv(8, (1, 1), feature_group_count=4, **F64), (2, 5, 5, 8)),  # grouped 1x1 (ShuffleNet)
    (nn.Conv(8, (1, 1), **F64), (2, 5, 5, 3)),
    (nn.Conv(8, (1, 2), (1, 2), padding="VALID", **F64), (2, 5, 7, 4)),  # the seed's final conv
    (nn.Conv(8, (2, 1), (1, 2), padding="SAME", **F64), (2, 5, 7, 4)),  # Keras' final conv
    (nn.Conv(8, (3, 3), **F64), (2, 6, 6, 4)),  # dense (fast.dense_conv)
    (nn.Conv(8, (3, 3), (2, 2), use_bias=False, **F64), (2, 7, 6, 4)),  # dense, strided
    (nn.Conv(8, (3, 3), feature_group_count=2, padding="VALID", **F64), (2, 6, 7, 4)),  # grouped k x k
    (nn.Conv(6, (3, 3), feature_group_count=6, kernel_dilation=2, **F64), (2, 9, 9, 6)),  # not covered
])
def test_plain_convolutions_equal_flax_on_the_fast_path(layer, shape):
    x = jax.random.normal(jax.random.key(0), shape, jnp.float64)
    variables = layer.init(jax.random.key(1), x)

    def loss(params, images, fast):
        with fast_path(fast):
            return jnp.sum(jnp.sin(layer.apply({"params": params}, images)))

    for argnums in (None, (0, 1)):
        run = (lambda f: jax.jit(lambda p, i: loss(p, i, f))) if argnums is None else (
            lambda f: jax.jit(jax.grad(lambda p, i: loss(p, i, f), argnums=argnums)))
        close(run(True)(variables["params"], x), run(False)(variables["params"], x))


def test_batch_norm_equals_flax_and_refuses_training_without_mutable_statistics():
    norm = nn.BatchNorm(momentum=0.8, **F64)
    x = 2.0 * jax.random.normal(jax.random.key(0), (4, 5, 5, 6), jnp.float64) + 1.0
    variables = norm.init(jax.random.key(1), x, use_running_average=True)
    variables = jax.tree.map(lambda v: v + 0.3 * jax.random.normal(jax.random.key(2), v.shape), variables)

    def run(fast, train):
        with fast_path(fast):
            if train:
                return norm.apply(variables, x, use_running_average=False, mutable=["batch_stats"])
            return norm.apply(variables, x, use_running_average=True)

    for train in (False, True):
        close(run(True, train), run(False, train))
    with fast_path(True), pytest.raises(Exception, match="batch_stats"):
        norm.apply(variables, x, use_running_average=False)


@pytest.mark.parametrize("model, said", [
    (lambda: create_model("effnet"), "fused EffNetBlock"),
    (lambda: create_model("effnet", block=SqueezeExciteBlock), "layer by layer: SqueezeExciteBlock"),
    (lambda: create_model("baseline"), "layer by layer: ConvPool"),
    (lambda: create_model("effnet", implementation="xla"), "xla"),
])
def test_what_computes_a_model_is_said(model, said):
    assert seam.describe_kernels(model(), (16, 16, 3)) == said
