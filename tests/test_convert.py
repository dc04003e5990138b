"""Seed parity: PyTorch weights, converted, give the same logits in Flax."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")

from effnet_jax.convert import from_torch_seed  # noqa: E402
from effnet_jax.models import EffNet  # noqa: E402
from torch_reference import SeedEffNet, randomize_batch_norm  # noqa: E402


@pytest.fixture(scope="module")
def seed_pair():
    torch.manual_seed(0)
    reference = SeedEffNet(momentum=0.99)
    randomize_batch_norm(reference)
    x = np.random.default_rng(0).normal(size=(8, 3, 32, 32)).astype(np.float32)
    return reference, x


def nhwc(x):
    return jnp.asarray(np.transpose(x, (0, 2, 3, 1)))


def test_eval_mode_logits_match(seed_pair):
    reference, x = seed_pair
    variables = from_torch_seed(reference.state_dict())
    reference.eval()
    with torch.no_grad():
        expected = reference(torch.from_numpy(x)).numpy()
    got = jax.jit(EffNet().apply)(variables, nhwc(x))
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("implementation", ["fast", "xla"])
def test_train_mode_logits_and_running_mean_match(seed_pair, implementation):
    original, x = seed_pair
    variables = from_torch_seed(original.state_dict())
    reference = SeedEffNet(momentum=0.99)
    reference.load_state_dict(original.state_dict())
    reference.train()
    with torch.no_grad():
        expected = reference(torch.from_numpy(x)).numpy()
    # The seed's PyTorch momentum 0.99 is 0.01 in Flax's convention.
    model = EffNet(bn_momentum=0.01, implementation=implementation)
    got, updates = jax.jit(lambda v, x: model.apply(v, x, train=True, mutable=["batch_stats"]))(variables, nhwc(x))
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)
    # Running means follow the same update; running variances differ by design (PyTorch
    # stores the unbiased batch variance, Flax the biased one it normalised with).
    ported = from_torch_seed(reference.state_dict())["batch_stats"]
    for block, layers in ported.items():
        for layer, stats in layers.items():
            np.testing.assert_allclose(updates["batch_stats"][block][layer]["mean"], stats["mean"], rtol=1e-4, atol=1e-4)


def test_converted_variables_have_the_models_structure(seed_pair):
    reference, _ = seed_pair
    converted = from_torch_seed(reference.state_dict())
    expected = jax.eval_shape(EffNet().init, jax.random.key(0), jnp.zeros((1, 32, 32, 3)))
    assert jax.tree.structure(converted) == jax.tree.structure(expected)
    jax.tree.map(lambda a, b: np.testing.assert_equal(a.shape, b.shape), converted, expected)


def test_classifier_rows_follow_the_flatten_order(seed_pair):
    reference, _ = seed_pair
    state = reference.state_dict()
    kernel = from_torch_seed(state)["params"]["classifier"]["kernel"]
    weight = state["linear.weight"].numpy()
    # Flax row (h, w, c) is PyTorch column (c, h, w).
    h, w, c = 1, 2, 5
    np.testing.assert_array_equal(kernel[(h * 4 + w) * 256 + c], weight[:, c * 16 + h * 4 + w])


def test_non_square_feature_map_needs_feature_hw(seed_pair):
    state = dict(seed_pair[0].state_dict())
    state["linear.weight"] = torch.zeros(10, 256 * 6)
    with pytest.raises(ValueError, match="pass feature_hw"):
        from_torch_seed(state)
    converted = from_torch_seed(state, feature_hw=(2, 3))
    assert converted["params"]["classifier"]["kernel"].shape == (1536, 10)
    with pytest.raises(ValueError, match="gives 1024 features, the classifier takes 1536"):
        from_torch_seed(state, feature_hw=(2, 2))


def test_not_a_seed_state_dict_is_rejected():
    with pytest.raises(ValueError, match="not the seed EffNet"):
        from_torch_seed({"fc.weight": np.zeros((2, 2))})


@pytest.mark.parametrize("inputs", [100, 256 * 4 + 7])
def test_a_classifier_of_another_width_is_named_as_such(seed_pair, inputs):
    state = dict(seed_pair[0].state_dict())
    state["linear.weight"] = torch.zeros(10, inputs)
    with pytest.raises(ValueError, match=f"linear.weight takes {inputs} inputs, which is no whole number of "
                                         "feature maps of the last block's 256 channels"):
        from_torch_seed(state)
