"""A research script's own loop over the public model: plain ``jit(value_and_grad)`` and Optax,
then ``effnet_jax.estimate_batch_stats`` before evaluating (the running averages trail)."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import effnet_jax
from effnet_jax.data import dataset_info, load_split
from effnet_jax.data.idx import DEBIAN_FASHION_MNIST_DIR, idx_files_present
from helpers import random_variables


def test_estimated_statistics_are_each_batchnorms_mean_and_variance_over_the_batches():
    """For a plain Flax network the estimate is exactly the statistics of the batches' activations."""
    import flax.linen as nn

    class Net(nn.Module):
        @nn.compact
        def __call__(self, x, train: bool):
            x = nn.Conv(4, (3, 3))(x)
            return nn.BatchNorm(use_running_average=not train, momentum=0.9)(x).mean((1, 2))

    model = Net()
    variables = model.init(jax.random.key(0), jnp.zeros((1, 8, 8, 3)), train=False)
    batches = jax.random.normal(jax.random.key(1), (3, 5, 8, 8, 3))
    estimated = effnet_jax.estimate_batch_stats(model, variables, batches)
    conv = nn.Conv(4, (3, 3)).apply({"params": variables["params"]["Conv_0"]}, batches.reshape(15, 8, 8, 3))
    per_batch = conv.reshape(3, 5 * 8 * 8, 4)
    np.testing.assert_allclose(estimated["batch_stats"]["BatchNorm_0"]["mean"], per_batch.mean(1).mean(0), rtol=1e-5)
    np.testing.assert_allclose(estimated["batch_stats"]["BatchNorm_0"]["var"], per_batch.var(1).mean(0), rtol=1e-4)
    assert estimated["params"] is variables["params"]


def test_the_library_models_statistics_do_not_depend_on_the_momentum():
    a = effnet_jax.create_model("effnet", dataset="cifar10", widths=(4, 8, 8), bn_momentum=0.9)
    b = a.clone(bn_momentum=0.5)
    variables = random_variables(a, (1, 32, 32, 3))
    batches = jax.random.normal(jax.random.key(0), (2, 4, 32, 32, 3))
    for x, y in zip(jax.tree.leaves(effnet_jax.estimate_batch_stats(a, variables, batches)["batch_stats"]),
                    jax.tree.leaves(effnet_jax.estimate_batch_stats(b, variables, batches)["batch_stats"])):
        np.testing.assert_allclose(x, y, rtol=1e-4, atol=1e-6)


@pytest.mark.slow
@pytest.mark.skipif(not idx_files_present(DEBIAN_FASHION_MNIST_DIR), reason="needs Debian's dataset-fashion-mnist")
def test_a_plain_200_step_loop_reaches_80_percent_once_the_statistics_are_estimated():
    info = dataset_info("fashion_mnist")
    train, test = load_split(info, "train", None), load_split(info, "test", None)
    normalise = lambda images: jnp.asarray(images, jnp.float32) / 255.0 - 0.5
    model = effnet_jax.create_model("effnet", dataset="fashion_mnist")
    variables = model.init(jax.random.key(0), jnp.zeros((1, 28, 28, 1)))
    tx = optax.adam(1e-3)
    opt_state = tx.init(variables["params"])

    @jax.jit
    def step(variables, opt_state, images, labels):
        def loss(params):
            logits, updates = model.apply({**variables, "params": params}, normalise(images), train=True,
                                          mutable=["batch_stats"])
            return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean(), updates
        grads, updates = jax.grad(loss, has_aux=True)(variables["params"])
        changes, opt_state = tx.update(grads, opt_state, variables["params"])
        return {"params": optax.apply_updates(variables["params"], changes), **updates}, opt_state

    rng = np.random.default_rng(0)
    for _ in range(200):
        picked = rng.choice(len(train.labels), 128, replace=False)
        variables, opt_state = step(variables, opt_state, train.images[picked], train.labels[picked])

    predict = jax.jit(lambda variables, images: model.apply(variables, normalise(images)).argmax(-1))
    accuracy = lambda variables: float(np.mean(np.concatenate([
        predict(variables, test.images[i:i + 500]) for i in range(0, 5000, 500)]) == test.labels[:5000]))
    batches = normalise(train.images[rng.choice(len(train.labels), 20 * 128, replace=False)]).reshape(20, 128, 28, 28, 1)
    estimated = jax.jit(effnet_jax.estimate_batch_stats, static_argnums=0)(model, variables, batches)
    running, precise = accuracy(variables), accuracy(estimated)
    assert precise >= 0.80, (running, precise)
