"""What every image classifier of the zoo shares: options, input checks and the head."""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from effnet_jax.errors import ConfigError
from effnet_jax.fast.seam import fast_path
from effnet_jax.models import activations

IMPLEMENTATION_CHOICES = ("auto", "fast", "xla")
KERAS_INIT = nn.initializers.glorot_uniform()  # the Keras original's default initialiser


def resolve_implementation(implementation: str, backend: str | None = None) -> str:
    """The implementation ``"auto"`` stands for on ``backend`` (default: JAX's default backend).

    CPU gets ``"fast"`` (``effnet_jax.fast``: shift-add depthwise convolutions and fused
    BatchNorm VJPs; XLA's grouped convolutions are ~10x slower there; it trains ~2x faster than
    the seed's NCHW PyTorch loop, ~1.1-1.3x faster than channels_last PyTorch). GPU and TPU get
    ``"xla"``: the plain modules, whose convolutions their emitters are built for
    (``experiments/benchmarks/accelerator.py`` measures both). ``"fast"`` and ``"xla"`` are
    returned as they are.
    """
    if implementation not in IMPLEMENTATION_CHOICES:
        raise ConfigError(f"implementation must be one of {IMPLEMENTATION_CHOICES}, got {implementation!r}")
    if implementation != "auto":
        return implementation
    backend = backend or jax.default_backend()
    return "fast" if backend == "cpu" else "xla"


@dataclasses.dataclass(frozen=True)
class LayerOptions:
    """Settings every layer of a network shares, and the plain Flax layers made with them.

    Attributes:
      activation_slope: negative slope of the LeakyReLU (0.3 in the seed; 0.0 gives ReLU).
      bn_momentum: BatchNorm momentum, Flax convention (``running = m * running + (1 - m) * batch``).
      bn_epsilon: BatchNorm epsilon.
      dtype: computation dtype (e.g. ``jnp.bfloat16`` on accelerators).
      param_dtype: parameter dtype (keep ``float32`` for mixed precision).
    """

    activation_slope: float = 0.3
    bn_momentum: float = 0.99
    bn_epsilon: float = 1e-5
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    def __post_init__(self):
        if not 0.0 <= self.bn_momentum < 1.0:
            raise ConfigError(f"bn_momentum must be in [0, 1), got {self.bn_momentum}")
        if self.bn_epsilon <= 0:
            raise ConfigError(f"bn_epsilon must be > 0, got {self.bn_epsilon}")

    def conv(self, features: int, kernel_size, strides=(1, 1), *, groups: int = 1,
             padding: str = "SAME", name: str | None = None) -> nn.Conv:
        """``nn.Conv`` without bias, Keras' initialiser (``groups=channels`` is depthwise)."""
        return nn.Conv(features, tuple(kernel_size), tuple(strides), padding, feature_group_count=groups,
                       use_bias=False, kernel_init=KERAS_INIT, dtype=self.dtype,
                       param_dtype=self.param_dtype, name=name)

    def norm(self, train: bool, name: str | None = None) -> nn.BatchNorm:
        """``nn.BatchNorm`` with these settings: batch statistics when ``train``."""
        return nn.BatchNorm(use_running_average=not train, momentum=self.bn_momentum,
                            epsilon=self.bn_epsilon, dtype=self.dtype, param_dtype=self.param_dtype,
                            name=name)

    def activation(self, kind: str | Callable) -> Callable:
        """The activation ``kind`` names (``activations.resolve``): ``"leaky_relu"`` uses
        ``activation_slope``."""
        return activations.resolve(kind, self.activation_slope)


class ImageClassifier(nn.Module):
    """Base of all registered networks; subclasses define ``features(x, train)``.

    Attributes:
      num_classes: size of the output layer.
      include_top: ``False`` returns the last feature map (a feature extractor).
      dropout_rate: dropout before the output layer (the paper's GTSRB runs used 0.5).
      activation_slope: LeakyReLU negative slope (the seed's 0.3).
      bn_momentum: BatchNorm momentum, Flax/Keras convention (running = m * running +
        (1 - m) * batch). The PyTorch seed's ``momentum=0.99`` is ``0.01`` here.
      bn_epsilon: BatchNorm epsilon (PyTorch seed 1e-5; the Keras original 1e-3).
      dtype: compute dtype, e.g. ``jnp.bfloat16`` on accelerators; logits are float32.
      param_dtype: parameter dtype.
      implementation: ``"auto"`` (``"fast"`` on CPU, ``"xla"`` on GPU/TPU), ``"fast"``
        (shift-add/matmul forms) or ``"xla"`` (plain convolutions); same variables, same results.

    Calling the module: ``model.apply(variables, images, train=..., rngs=...)`` with images
    ``[N, H, W, C]`` float; ``train=True`` uses batch statistics (pass
    ``mutable=["batch_stats"]``) and dropout (pass ``rngs={"dropout": key}``).
    """

    num_classes: int = 10
    include_top: bool = True
    dropout_rate: float = 0.0
    activation_slope: float = 0.3
    bn_momentum: float = 0.99
    bn_epsilon: float = 1e-5
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32
    implementation: str = "auto"

    # Times each spatial axis is halved; the input must be at least 2**this on each side.
    num_downsamplings: ClassVar[int] = 3
    # Path of the first layer's kernel in ``params``; its input-channel axis is checked.
    first_kernel_path: ClassVar[tuple[str, ...]] = ()

    def __post_init__(self):
        if not isinstance(self.num_classes, (int, np.integer)) or self.num_classes <= 0:
            raise ConfigError(f"num_classes must be a positive integer, got {self.num_classes!r}")
        if not 0.0 <= self.dropout_rate < 1.0:
            raise ConfigError(f"dropout_rate must be in [0, 1), got {self.dropout_rate!r}")
        if self.activation_slope < 0:
            raise ConfigError(f"activation_slope must be >= 0, got {self.activation_slope!r}")
        widths = getattr(self, "widths", (1,))  # networks without widths have nothing to check
        if not widths or any(
            not isinstance(w, (int, np.integer)) or w <= 0 for w in widths
        ):
            raise ConfigError(
                f"widths must be a non-empty sequence of positive integers, got {widths!r}"
            )
        self.options  # Validates the shared layer options (BatchNorm settings).
        resolve_implementation(self.implementation)  # and the implementation's name
        super().__post_init__()

    @property
    def options(self) -> LayerOptions:
        """The settings every layer of this network shares."""
        return LayerOptions(
            activation_slope=self.activation_slope,
            bn_momentum=self.bn_momentum,
            bn_epsilon=self.bn_epsilon,
            dtype=self.dtype,
            param_dtype=self.param_dtype,
        )

    @property
    def resolved_implementation(self) -> str:
        """``"fast"`` or ``"xla"``: what ``implementation`` stands for on this backend."""
        return resolve_implementation(self.implementation)

    @property
    def min_input_size(self) -> int:
        """Smallest height and width the network can reduce to at least 1x1."""
        return 2**self.num_downsamplings

    def check_input(self, x) -> None:
        """Raises a specific error for input the network cannot take (before any compute)."""
        name = type(self).__name__
        if x.ndim != 4:
            raise ConfigError(
                f"{name} expects images of rank 4 [batch, height, width, channels], "
                f"got rank {x.ndim} with shape {tuple(x.shape)}"
            )
        if not jnp.issubdtype(x.dtype, jnp.floating):
            raise ConfigError(
                f"{name} expects floating-point images (normalise them first), got {x.dtype}"
            )
        height, width = x.shape[1:3]
        if height < self.min_input_size or width < self.min_input_size:
            raise ConfigError(
                f"{name} halves height and width {self.num_downsamplings} times, so it needs "
                f"images of at least {self.min_input_size}x{self.min_input_size}, "
                f"got {height}x{width}"
            )
        if self.is_initializing() or not self.first_kernel_path:
            return
        node = self.variables.get("params", {})
        for key in self.first_kernel_path:
            node = node.get(key, {}) if hasattr(node, "get") else {}
        if hasattr(node, "shape") and node.shape[-2] != x.shape[-1]:
            raise ConfigError(
                f"{name} variables were initialised for {node.shape[-2]} input channels, "
                f"got images with {x.shape[-1]} channels (shape {tuple(x.shape)})"
            )

    def head(self, x, train: bool, dropout_rate=None):
        """Flatten, dropout, output layer (or the feature map itself if ``include_top=False``).

        ``dropout_rate`` (a float or a traced scalar) overrides the attribute at call time, so
        a sweep can vary it per member inside one compiled program.
        """
        if not self.include_top:
            return x
        x = x.reshape(x.shape[0], -1)
        if train and (dropout_rate is not None or self.dropout_rate > 0):
            keep = 1.0 - (self.dropout_rate if dropout_rate is None else dropout_rate)
            mask = jax.random.bernoulli(self.make_rng("dropout"), keep, x.shape)
            x = jnp.where(mask, x / jnp.asarray(keep, x.dtype), jnp.zeros((), x.dtype))
        x = nn.Dense(self.num_classes, dtype=self.dtype, param_dtype=self.param_dtype,
                     kernel_init=KERAS_INIT, name="classifier")(x)
        return x.astype(jnp.float32)

    def features(self, x, train: bool):
        """The convolutional trunk; implemented by each network."""
        raise NotImplementedError

    @nn.compact
    def __call__(self, x, train: bool = False, dropout_rate=None):
        self.check_input(x)
        # The fast kernels compute the layers and blocks they know (effnet_jax.fast.seam).
        with fast_path(self.resolved_implementation == "fast"):
            return self.head(self.features(x, train), train, dropout_rate)
