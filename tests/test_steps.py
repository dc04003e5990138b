"""Pure steps: loss, metrics with uneven batches, injected hyperparameters, RNG, scans; optimizers."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from effnet_jax.config import apply_overrides, default_config, lock
from effnet_jax.data import ArraySplit, dataset_info, eval_batches, make_preprocess
from effnet_jax.models import create_model
from effnet_jax.training.optim import default_hparams, make_optimizer, schedule_shape
from effnet_jax.training.state import compile_once_run, create_train_state, init_train_state
from effnet_jax.training.steps import (
    averages,
    cross_entropy,
    make_eval_step,
    make_evaluate,
    make_multi_step,
    make_train_step,
)

INFO = dataset_info("cifar10")


def tiny_setup(overrides=(), dropout=0.0):
    config = apply_overrides(lock(default_config()), list(overrides))
    model = create_model("effnet", widths=(8, 16, 16), dropout_rate=dropout)
    tx = make_optimizer(config, total_steps=100, steps_per_epoch=10)
    state = create_train_state(model, tx, jax.random.PRNGKey(0), jnp.zeros((1, 16, 16, 3)))
    preprocess = make_preprocess(INFO)
    return config, model, tx, state, make_train_step(model, tx, preprocess), make_eval_step(model, preprocess)


def batch(n=16, seed=0):
    rng = np.random.default_rng(seed)
    return {"image": rng.integers(0, 256, (n, 16, 16, 3), dtype=np.uint8),
            "label": rng.integers(0, 10, (n,)).astype(np.int32)}


def test_train_step_learns_a_fixed_batch_and_counts_steps():
    config, _, _, state, train_step, _ = tiny_setup(["optimizer.learning_rate=3e-3"])
    step = jax.jit(train_step, donate_argnums=0)
    hparams = default_hparams(config)
    data = batch()
    state, first = step(state, data, hparams)
    for _ in range(30):
        state, metrics = step(state, data, hparams)
    assert int(state.step) == 31
    assert averages(metrics)["loss"] < 0.5 * averages(first)["loss"]
    chex.assert_trees_all_equal(metrics["count"], jnp.float32(16))


def test_learning_rate_comes_from_hparams():
    config, _, _, state, train_step, _ = tiny_setup()
    hparams = {**default_hparams(config), "learning_rate": jnp.float32(0.0)}
    new_state, _ = jax.jit(train_step)(state, batch(), hparams)
    chex.assert_trees_all_equal(new_state.params, state.params)
    assert not jax.tree.all(jax.tree.map(jnp.array_equal, new_state.batch_stats, state.batch_stats))
    moved, _ = jax.jit(train_step)(state, batch(), default_hparams(config))
    assert not jax.tree.all(jax.tree.map(jnp.array_equal, moved.params, state.params))


def test_label_smoothing_and_dropout_come_from_hparams():
    config, _, _, state, train_step, _ = tiny_setup(dropout=0.0)
    step = jax.jit(train_step)
    base = default_hparams(config)
    _, plain = step(state, batch(), base)
    _, smooth = step(state, batch(), {**base, "label_smoothing": jnp.float32(0.3)})
    assert float(smooth["loss_sum"]) != float(plain["loss_sum"])
    _, dropped = step(state, batch(), {**base, "dropout_rate": jnp.float32(0.5)})
    assert float(dropped["loss_sum"]) != float(plain["loss_sum"])


def test_zero_dropout_draws_no_mask():
    """A zero rate is left out of the hparams, so the compiled step draws no random bits at all."""
    config, _, _, state, train_step, _ = tiny_setup()
    assert "dropout_rate" not in default_hparams(config)
    assert float(default_hparams(config, 0.5)["dropout_rate"]) == 0.5
    draws = lambda hparams: "random_bits" in str(jax.make_jaxpr(train_step)(state, batch(), hparams))
    assert not draws(default_hparams(config))
    assert draws(default_hparams(config, 0.5))


def test_step_rng_is_folded_from_the_step_number():
    config, _, _, state, train_step, _ = tiny_setup()
    hparams = {**default_hparams(config), "dropout_rate": jnp.float32(0.5), "learning_rate": jnp.float32(0.0)}
    step = jax.jit(train_step)
    _, a = step(state, batch(), hparams)
    _, b = step(state.replace(step=state.step + 1), batch(), hparams)
    _, a_again = step(state, batch(), hparams)
    assert float(a["loss_sum"]) != float(b["loss_sum"])
    assert float(a["loss_sum"]) == float(a_again["loss_sum"])


def test_multi_step_scan_equals_repeated_steps():
    # SGD: Adam's first steps are ~lr * sign(g), which turns float32 rounding differences between
    # two compilations of near-zero gradients (scale-invariant BN parameters) into lr-sized ones.
    config, _, _, state, train_step, _ = tiny_setup(["optimizer.name=sgd", "optimizer.learning_rate=0.05"])
    hparams = default_hparams(config)
    batches = [batch(seed=i) for i in range(3)]
    looped = state
    sums = 0.0
    for b in batches:
        looped, m = jax.jit(train_step)(looped, b, hparams)
        sums += float(m["loss_sum"])
    stacked = jax.tree.map(lambda *xs: np.stack(xs), *batches)
    scanned, metrics = jax.jit(make_multi_step(train_step))(state, stacked, hparams)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6), scanned.params, looped.params)
    np.testing.assert_allclose(float(metrics["loss_sum"]), sums, rtol=1e-5)
    assert float(metrics["count"]) == 48


def test_multi_step_runs_only_the_real_steps_of_a_padded_chunk():
    # One compiled program for every chunk: a chunk of 2 real batches padded to 4 gives exactly
    # what the 2-batch chunk gives, and the step counter and metrics count only the real steps.
    config, _, _, state, train_step, _ = tiny_setup(["optimizer.name=sgd", "optimizer.learning_rate=0.05"])
    hparams = default_hparams(config)
    batches = [batch(seed=i) for i in range(4)]
    stacked = jax.tree.map(lambda *xs: np.stack(xs), *batches)
    run = jax.jit(make_multi_step(train_step))
    short, short_metrics = run(state, jax.tree.map(lambda x: x[:2], stacked), hparams)
    padded, padded_metrics = run(state, stacked, hparams, jnp.int32(2))
    full, full_metrics = run(state, stacked, hparams, jnp.int32(4))
    assert int(padded.step) == 2 and int(full.step) == 4
    assert float(padded_metrics["count"]) == float(short_metrics["count"]) == 32
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7), padded.params, short.params)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7), padded.batch_stats,
                 short.batch_stats)
    np.testing.assert_allclose(float(padded_metrics["loss_sum"]), float(short_metrics["loss_sum"]), rtol=1e-6)
    assert not np.allclose(np.asarray(jax.tree.leaves(full.params)[0]), np.asarray(jax.tree.leaves(padded.params)[0]))
    assert run._cache_size() == 2  # the unpadded 2-step call and the padded 4-step form (two calls, one program)


@pytest.mark.parametrize("batch_size", [7, 10, 64])
def test_eval_metrics_average_exactly_over_uneven_batches(batch_size):
    _, model, _, state, _, eval_step = tiny_setup()
    data = batch(n=23, seed=5)
    split = ArraySplit(data["image"], data["label"])
    metrics = jax.jit(make_evaluate(eval_step))(state, eval_batches(split, batch_size))
    assert float(metrics["count"]) == 23
    logits = model.apply({"params": state.params, "batch_stats": state.batch_stats},
                         make_preprocess(INFO)(jnp.asarray(data["image"]), None, False))
    expected_loss = float(jnp.mean(cross_entropy(logits, data["label"])))
    expected_acc = float(jnp.mean(jnp.argmax(logits, -1) == data["label"]))
    result = averages(metrics)
    np.testing.assert_allclose(result["loss"], expected_loss, rtol=1e-5)
    np.testing.assert_allclose(result["accuracy"], expected_acc, rtol=1e-6)


def test_cross_entropy_with_label_smoothing():
    logits = jnp.array([[2.0, 0.0, -1.0]])
    plain = cross_entropy(logits, jnp.array([0]))
    np.testing.assert_allclose(plain, -jax.nn.log_softmax(logits)[0, 0], rtol=1e-6)
    smoothed = cross_entropy(logits, jnp.array([0]), 0.3)
    target = jnp.array([0.8, 0.1, 0.1])
    np.testing.assert_allclose(smoothed, -(target * jax.nn.log_softmax(logits)[0]).sum(), rtol=1e-6)


def config_with(*overrides):
    return apply_overrides(lock(default_config()), list(overrides))


def test_schedules_have_the_configured_shape():
    cosine = schedule_shape(config_with("optimizer.schedule=cosine", "optimizer.final_lr_fraction=0.1"), 100, 10)
    np.testing.assert_allclose([cosine(0), cosine(50), cosine(100)], [1.0, 0.55, 0.1], rtol=1e-5)
    warm = schedule_shape(config_with("optimizer.schedule=warmup_cosine", "optimizer.warmup_epochs=2"), 100, 10)
    np.testing.assert_allclose([warm(0), warm(10), warm(20)], [0.0, 0.5, 1.0], atol=1e-6)
    step = schedule_shape(config_with("optimizer.schedule=step"), 100, 10)
    np.testing.assert_allclose([step(49), step(50), step(75)], [1.0, 0.1, 0.01], rtol=1e-6)
    assert float(schedule_shape(config_with(), 100, 10)(77)) == 1.0


@pytest.mark.parametrize("name", ["adam", "adamw", "sgd"])
def test_optimizers_match_optax_references(name):
    config = config_with(f"optimizer.name={name}", "optimizer.learning_rate=0.1", "optimizer.weight_decay=0.01",
                         "optimizer.grad_clip_norm=1.0", "optimizer.b1=0.75")
    params = {"kernel": jnp.ones((2, 2)), "bias": jnp.ones((2,))}
    grads = {"kernel": jnp.full((2, 2), 3.0), "bias": jnp.full((2,), 3.0)}
    mask = {"kernel": True, "bias": False}
    decay = optax.masked(optax.add_decayed_weights(0.01), mask)
    reference = {
        "adam": optax.chain(optax.clip_by_global_norm(1.0), decay, optax.scale_by_adam(b1=0.75), optax.scale(-0.1)),
        "adamw": optax.chain(optax.clip_by_global_norm(1.0), optax.scale_by_adam(b1=0.75), decay, optax.scale(-0.1)),
        "sgd": optax.chain(optax.clip_by_global_norm(1.0), decay, optax.trace(0.9, nesterov=True), optax.scale(-0.1)),
    }[name]
    tx = make_optimizer(config, 100, 10)
    ours, ref_state, our_state = [], reference.init(params), tx.init(params)
    for _ in range(3):
        ours, our_state = tx.update(grads, our_state, params)
        theirs, ref_state = reference.update(grads, ref_state, params)
        jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=2e-5), ours, theirs)
    assert set(our_state.hyperparams) >= {"learning_rate", "b1", "weight_decay", "grad_clip_norm"}


@pytest.mark.parametrize("implementation", ["fast", "xla"])
def test_estimated_batch_stats_are_the_mean_of_each_batchs_statistics(implementation):
    """Whatever the momentum, the estimate is the average over the batches of what a BatchNorm
    with momentum 0 (running = batch) stores after each batch."""
    from effnet_jax.training.steps import make_estimate_batch_stats

    preprocess = make_preprocess(INFO)
    images = np.stack([batch(16, seed)["image"] for seed in range(3)])
    per_batch = []
    for momentum in (0.0, 0.99):
        model = create_model("effnet", widths=(8, 16, 16), bn_momentum=momentum, implementation=implementation)
        state = create_train_state(model, optax.sgd(0.1), jax.random.PRNGKey(0), jnp.zeros((1, 16, 16, 3)))
        estimated = jax.jit(make_estimate_batch_stats(model, preprocess))(state, images).batch_stats
        if momentum == 0.0:
            for b in images:
                _, updates = model.apply({"params": state.params, "batch_stats": state.batch_stats},
                                         preprocess(b, None, False), train=True, mutable=["batch_stats"])
                per_batch.append(updates["batch_stats"])
            expected = jax.tree.map(lambda *xs: np.mean(xs, axis=0), *per_batch)
        chex.assert_trees_all_close(estimated, expected, rtol=2e-4, atol=1e-5)
        assert not np.allclose(jax.tree.leaves(estimated)[1], jax.tree.leaves(state.batch_stats)[1])


def test_statistics_batches_are_fixed_and_drawn_from_the_training_split():
    from effnet_jax.data.pipeline import statistics_batches

    split = ArraySplit(np.arange(50 * 2 * 2 * 1, dtype=np.uint8).reshape(50, 2, 2, 1), np.zeros(50, np.int32))
    first = statistics_batches(split, 8, 32, seed=0)
    assert first.shape == (6, 8, 2, 2, 1)  # at most the whole batches the split holds
    np.testing.assert_array_equal(first, statistics_batches(split, 8, 32, seed=0))
    assert len({tuple(x.ravel()) for x in first.reshape(48, -1)}) == 48  # distinct examples
    assert statistics_batches(split, 64, 4, seed=0).shape == (1, 64, 2, 2, 1)  # a split smaller than a batch


def test_initialisation_compiled_for_speed_gives_bitwise_the_default_compiles_values():
    """``create_train_state`` compiles init without LLVM optimisations and with the older loop
    emitters (faster to compile): the values must be those of a normally compiled init."""
    model, tx, key = create_model("effnet"), optax.adam(1e-3), jax.random.PRNGKey(3)
    sample = jnp.zeros((1, 28, 28, 1))
    fast = create_train_state(model, tx, key, sample)
    default = jax.jit(init_train_state, static_argnums=(0, 1)).lower(model, tx, key, sample).compile()(key, sample)
    chex.assert_trees_all_equal(fast, default)


def test_compile_once_run_falls_back_to_options_the_backend_takes():
    taken = []

    class Lowered:  # a backend that knows no XLA:CPU option
        def compile(self, options=None):
            if options and "xla_cpu_use_fusion_emitters" in options:
                raise ValueError("No such compile option")
            taken.append(options)
            return "compiled"

    assert compile_once_run(Lowered()) == "compiled"
    assert taken == [{"xla_backend_optimization_level": 0}]
