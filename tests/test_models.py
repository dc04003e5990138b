"""Shapes, dtypes, parameter counts, variants and input errors of every registered model."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import effnet_jax
from effnet_jax.models import DATASET_INPUT_SHAPES, EffNet, EffNetBlock, create_model, list_models

PAPER_DATASETS = ("cifar10", "svhn", "gtsrb")


from helpers import random_variables


def init(model, shape=(2, 32, 32, 3), seed=0):
    """Real ``init`` (jitted: one compilation instead of hundreds of eager ops)."""
    return jax.jit(model.init)(jax.random.key(seed), jnp.zeros(shape, jnp.float32))


def shapes(model, shape=(2, 32, 32, 3)):
    return jax.eval_shape(model.init, jax.random.key(0), jnp.zeros(shape, jnp.float32))


def count(tree):
    return sum(x.size for x in jax.tree.leaves(tree))


def test_registry_lists_the_paper_models():
    assert set(list_models()) == {
        "baseline", "mobilenet", "shufflenet", "effnet", "effnet_v2style", "mobilenet_v2", "mob_imp"
    }
    assert effnet_jax.list_models() == list_models()


@pytest.mark.parametrize("name", list_models())
@pytest.mark.parametrize("dataset", PAPER_DATASETS)
def test_every_model_has_the_presets_parameter_shapes(name, dataset):
    model = create_model(name, dataset=dataset)
    params = shapes(model, (1, *DATASET_INPUT_SHAPES[dataset]))["params"]
    assert params["classifier"]["kernel"].shape[-1] == model.num_classes
    chex.assert_trees_all_equal_dtypes(params, jax.tree.map(lambda x: jnp.zeros((), jnp.float32), params))


@pytest.mark.parametrize("name", list_models())
def test_every_model_gives_logits_and_updates_batch_stats(name):
    model = create_model(name, dataset="gtsrb")
    shape = (3, 32, 32, 3)
    variables = init(model, shape)
    x = jax.random.normal(jax.random.key(1), shape)
    logits = jax.jit(model.apply)(variables, x)
    chex.assert_shape(logits, (3, model.num_classes))
    chex.assert_type(logits, jnp.float32)
    chex.assert_tree_all_finite(logits)
    train_apply = jax.jit(lambda v, x: model.apply(
        v, x, train=True, mutable=["batch_stats"], rngs={"dropout": jax.random.key(2)}))
    logits_train, updates = train_apply(variables, x)
    chex.assert_shape(logits_train, (3, model.num_classes))
    changed = jax.tree.map(lambda a, b: bool(jnp.any(a != b)), variables["batch_stats"], updates["batch_stats"])
    assert all(jax.tree.leaves(changed)), "every running statistic moves in a training step"


def test_seed_effnet_parameter_count_and_head_width():
    model = EffNet()
    variables = shapes(model)
    assert count(variables["params"]) == 151_146
    assert variables["params"]["classifier"]["kernel"].shape == (4096, 10)
    widths = [variables["params"][f"block_{i}"]["expand"]["kernel"].shape[-1] for i in range(3)]
    assert widths == [32, 64, 128]


def test_gtsrb_preset_uses_the_papers_minimum_bottleneck():
    model = create_model("effnet", dataset="gtsrb")
    assert model.num_classes == 43 and model.dropout_rate == 0.5
    params = shapes(model)["params"]
    assert [params[f"block_{i}"]["expand"]["kernel"].shape[-1] for i in range(3)] == [6, 8, 16]
    plain = shapes(create_model("effnet", dataset="gtsrb", min_bottleneck_features=1))["params"]
    assert plain["block_0"]["expand"]["kernel"].shape[-1] == 4


@pytest.mark.parametrize("final_conv, features", [("seed", 3 * 3 * 256), ("keras", 3 * 4 * 256)])
def test_fashion_mnist_input_head_width(final_conv, features):
    model = EffNet(final_conv=final_conv)
    variables = random_variables(model, (2, 28, 28, 1))
    assert variables["params"]["classifier"]["kernel"].shape == (features, 10)
    chex.assert_shape(jax.jit(model.apply)(variables, jnp.ones((2, 28, 28, 1))), (2, 10))


@pytest.mark.parametrize("pool_axis", ["height", "width"])
@pytest.mark.parametrize("final_conv", ["seed", "keras"])
def test_block_variants_halve_both_axes_with_equal_parameter_count(pool_axis, final_conv):
    block = EffNetBlock(64, 32, pool_axis=pool_axis, final_conv=final_conv)
    x = jnp.ones((2, 16, 12, 8))
    variables = jax.eval_shape(lambda: block.init(jax.random.key(0), x, train=False))
    chex.assert_shape(jax.eval_shape(lambda v: block.apply(v, x, train=False), variables), (2, 8, 6, 64))
    seed_shapes = jax.eval_shape(lambda: EffNetBlock(64, 32).init(jax.random.key(0), x, train=False))
    assert count(variables["params"]) == count(seed_shapes["params"])


def test_feature_extractor_returns_the_last_feature_map():
    model = EffNet(include_top=False)
    variables = shapes(model)
    assert "classifier" not in variables["params"]
    chex.assert_shape(jax.eval_shape(model.apply, variables, jnp.ones((2, 32, 32, 3))), (2, 4, 4, 256))


def test_bfloat16_compute_keeps_float32_params_and_logits():
    model = EffNet(dtype=jnp.bfloat16)
    params = shapes(model)["params"]
    chex.assert_trees_all_equal_dtypes(params, jax.tree.map(lambda x: jnp.zeros((), jnp.float32), params))
    variables = random_variables(model, (2, 32, 32, 3))
    features = jax.eval_shape(EffNet(dtype=jnp.bfloat16, include_top=False).apply, variables, jnp.ones((2, 32, 32, 3)))
    chex.assert_type(features, jnp.bfloat16)
    x = jax.random.normal(jax.random.key(3), (4, 32, 32, 3))
    low = jax.jit(model.apply)(variables, x)
    full = jax.jit(EffNet().apply)(variables, x)
    chex.assert_type(low, jnp.float32)
    np.testing.assert_allclose(low, full, atol=0.1 * float(jnp.abs(full).max()))


def test_dropout_is_active_only_in_training():
    model = EffNet(dropout_rate=0.5)
    variables = random_variables(model, (4, 32, 32, 3))
    x = jax.random.normal(jax.random.key(0), (4, 32, 32, 3))
    run = jax.jit(lambda key: model.apply(variables, x, train=True, mutable=["batch_stats"], rngs={"dropout": key})[0])
    assert not np.allclose(run(jax.random.key(1)), run(jax.random.key(2)))
    evaluate = jax.jit(model.apply)
    np.testing.assert_array_equal(evaluate(variables, x), evaluate(variables, x))


def test_eval_mode_uses_running_averages():
    model = EffNet()
    variables = random_variables(model, (4, 32, 32, 3))
    x = jax.random.normal(jax.random.key(0), (4, 32, 32, 3))
    alone = jax.jit(model.apply)(variables, x[:1])
    together = jax.jit(model.apply)(variables, x)[:1]
    np.testing.assert_allclose(alone, together, rtol=1e-5, atol=1e-5)


# --- bad input: specific errors before any computation ---------------------------------------

def test_wrong_rank_is_rejected():
    model = EffNet()
    with pytest.raises(ValueError, match=r"rank 4 .* got rank 3 with shape \(32, 32, 3\)"):
        model.init(jax.random.key(0), jnp.zeros((32, 32, 3)))


def test_wrong_channel_count_for_initialised_variables_is_rejected():
    model = EffNet()
    variables = random_variables(model, (2, 32, 32, 3))
    with pytest.raises(ValueError, match="initialised for 3 input channels, got images with 1 channels"):
        model.apply(variables, jnp.zeros((2, 32, 32, 1)))


@pytest.mark.parametrize("name", list_models())
def test_image_too_small_is_rejected(name):
    with pytest.raises(ValueError, match="at least 8x8, got 6x32"):
        shapes(create_model(name), (1, 6, 32, 3))


def test_integer_images_are_rejected():
    with pytest.raises(TypeError, match="floating-point images"):
        EffNet().init(jax.random.key(0), jnp.zeros((1, 32, 32, 3), jnp.uint8))


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"widths": (64, 0, 256)}, "widths must be a non-empty sequence of positive integers"),
        ({"widths": ()}, "widths must be a non-empty"),
        ({"num_classes": 0}, "num_classes must be a positive integer, got 0"),
        ({"num_classes": -3}, "num_classes must be a positive integer, got -3"),
        ({"dropout_rate": 1.0}, r"dropout_rate must be in \[0, 1\)"),
        ({"implementation": "cuda"}, "implementation must be one of"),
        ({"pool_axis": "depth"}, "pool_axis must be one of"),
    ],
)
def test_invalid_options_raise_at_construction(overrides, message):
    with pytest.raises(ValueError, match=message):
        create_model("effnet", **overrides)


def test_unknown_model_and_option_list_the_valid_ones():
    with pytest.raises(ValueError, match="unknown model 'effnet_b0'; valid names: baseline, effnet"):
        create_model("effnet_b0")
    with pytest.raises(ValueError, match=r"no option\(s\) \['width'\]; valid options: .*widths"):
        create_model("effnet", width=(1, 2))
    with pytest.raises(ValueError, match="unknown dataset preset 'imagenet'"):
        create_model("effnet", dataset="imagenet")


def test_shufflenet_rejects_widths_not_divisible_by_groups():
    with pytest.raises(ValueError, match=r"divisible by groups=4, got \[10\]"):
        create_model("shufflenet", widths=(8, 10, 16))


def test_top_level_api():
    from effnet_jax.sweeps import sweep
    from effnet_jax.training import train_and_evaluate

    assert effnet_jax.train_and_evaluate is train_and_evaluate and effnet_jax.sweep is sweep
    with pytest.raises(AttributeError, match="no attribute 'train'"):
        effnet_jax.train  # noqa: B018


@pytest.mark.parametrize("backend, expected", [("cpu", "fast"), ("gpu", "xla"), ("tpu", "xla")])
def test_auto_implementation_is_fast_on_cpu_and_xla_on_accelerators(backend, expected):
    from effnet_jax.models.base import resolve_implementation

    assert resolve_implementation("auto", backend) == expected
    assert resolve_implementation("xla", "cpu") == "xla" and resolve_implementation("fast", "tpu") == "fast"


def test_models_default_to_auto_and_resolve_it_for_this_backend():
    model = EffNet()
    assert model.implementation == "auto"
    assert model.resolved_implementation == ("fast" if jax.default_backend() == "cpu" else "xla")
    with pytest.raises(ValueError, match=r"implementation must be one of \('auto', 'fast', 'xla'\)"):
        EffNet(implementation="cuda")
