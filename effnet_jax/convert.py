"""Port weights of the PyTorch seed network to ``effnet_jax.EffNet`` (the seed's layout: its
layer-for-layer copy is ``SeedEffNet`` in ``tests/torch_reference.py``, which the parity tests use).

The seed's ``state_dict`` keys are ``block{1,2,3}.{i}...`` for the ``nn.Sequential`` of each
block (conv at 0, 2, 5, 7; post-BN at ``1.1``, ``3.1``, ``6.1``, ``8.1``) and ``linear``. This
module needs no PyTorch: values may be tensors or arrays (anything ``numpy.asarray`` takes).

Conversions:

* conv kernels ``[O, I, kh, kw]`` (NCHW) -> ``[kh, kw, I, O]`` (HWIO); depthwise kernels
  ``[C, 1, kh, kw]`` -> ``[kh, kw, 1, C]``;
* the classifier's input: PyTorch flattens ``C, H, W``, Flax flattens ``H, W, C``, so the rows
  of the weight matrix are permuted accordingly;
* BatchNorm ``weight``/``bias`` -> ``scale``/``bias``; ``running_mean``/``running_var`` ->
  ``batch_stats`` ``mean``/``var``.

Momentum: the seed's ``BatchNorm2d(momentum=0.99)`` means ``running = 0.01 * running + 0.99 *
batch`` (PyTorch convention), which is ``bn_momentum=0.01`` in Flax's convention. Build the
model with ``EffNet(bn_momentum=0.01)`` to reproduce the seed's running-average updates
exactly (the default 0.99 is what the Keras original, and the paper, meant). Epsilon: PyTorch's
default 1e-5, our default too.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from effnet_jax.errors import ConfigError

# Sequential index of each conv in a seed block -> (our layer name, depthwise?).
_SEED_CONVS = {0: ("expand", False), 2: ("depthwise_1x3", True), 5: ("depthwise_3x1", True), 7: ("project", False)}
# Sequential index of each post (LeakyReLU, BatchNorm) -> our norm name.
_SEED_POSTS = {1: "expand_norm", 3: "depthwise_1x3_norm", 6: "depthwise_3x1_norm", 8: "project_norm"}


def _array(value: Any) -> np.ndarray:
    if hasattr(value, "detach"):
        value = value.detach().cpu()
    return np.asarray(value, dtype=np.float32)


def _conv_kernel(weight: np.ndarray) -> np.ndarray:
    return np.transpose(weight, (2, 3, 1, 0))


def from_torch_seed(
    state_dict: Mapping[str, Any], feature_hw: tuple[int, int] | None = None
) -> dict[str, dict]:
    """Converts a state dict of the seed PyTorch EffNet into Flax variables for ``EffNet``.

    Args:
      state_dict: the seed network's ``state_dict()`` (tensors or arrays).
      feature_hw: height and width of the last feature map (``(4, 4)`` for 32x32 inputs);
        inferred as a square from the classifier's input size when omitted.

    Returns:
      ``{"params": ..., "batch_stats": ...}`` for ``EffNet()`` with the seed's widths (and
      ``include_top=False`` if the state dict has no ``linear`` layer).

    Raises:
      KeyError / ValueError: a missing key, or a shape the seed network cannot have.
    """
    params: dict[str, dict] = {}
    stats: dict[str, dict] = {}
    blocks = sorted({key.split(".")[0] for key in state_dict if key.startswith("block")})
    if not blocks:
        raise ConfigError("state_dict has no 'block*' entries: not the seed EffNet's state dict")
    for index, block in enumerate(blocks):
        ours = f"block_{index}"
        params[ours], stats[ours] = {}, {}
        for position, (name, _) in _SEED_CONVS.items():
            weight = _array(state_dict[f"{block}.{position}.weight"])
            params[ours][name] = {"kernel": _conv_kernel(weight)}
        for position, name in _SEED_POSTS.items():
            prefix = f"{block}.{position}.1"
            params[ours][name] = {
                "scale": _array(state_dict[f"{prefix}.weight"]),
                "bias": _array(state_dict[f"{prefix}.bias"]),
            }
            stats[ours][name] = {
                "mean": _array(state_dict[f"{prefix}.running_mean"]),
                "var": _array(state_dict[f"{prefix}.running_var"]),
            }
    if "linear.weight" in state_dict:
        weight = _array(state_dict["linear.weight"])  # [classes, C*H*W]
        channels = params[f"block_{len(blocks) - 1}"]["project"]["kernel"].shape[-1]
        spatial = weight.shape[1] // channels
        if spatial == 0 or weight.shape[1] % channels:
            raise ConfigError(f"linear.weight takes {weight.shape[1]} inputs, which is no whole number of "
                              f"feature maps of the last block's {channels} channels: not this network's classifier")
        if feature_hw is None:
            side = int(round(spatial**0.5))
            if side * side != spatial:
                raise ConfigError(
                    f"cannot infer a square feature map from {weight.shape[1]} inputs and "
                    f"{channels} channels; pass feature_hw"
                )
            feature_hw = (side, side)
        height, width = feature_hw
        if height * width * channels != weight.shape[1]:
            raise ConfigError(
                f"feature_hw={feature_hw} with {channels} channels gives "
                f"{height * width * channels} features, the classifier takes {weight.shape[1]}"
            )
        kernel = weight.reshape(-1, channels, height, width).transpose(2, 3, 1, 0)
        params["classifier"] = {
            "kernel": kernel.reshape(height * width * channels, -1),
            "bias": _array(state_dict["linear.bias"]),
        }
    return {"params": params, "batch_stats": stats}
