"""``ActivationNorm``: an activation and BatchNorm, the post-processing of every conv layer of
the comparison networks (EffNet itself is plain Flax: ``effnet.py``).

Training on the fast path, the seed's order (LeakyReLU, then BatchNorm) runs through the
hand-differentiated kernels of ``effnet_jax.fast.fused``.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from effnet_jax.fast import fused, kernels
from effnet_jax.models.layers import LayerOptions


class ActivationNorm(nn.Module):
    """Activation and BatchNorm in either order, with BatchNorm's variables held directly.

    ``order="act_bn"`` is the seed's post-activation BatchNorm (LeakyReLU, then BN);
    ``order="bn_act"`` is the MobileNetV2 convention. ``activation`` is ``"leaky_relu"`` (slope
    from the options), ``"relu"``, ``"relu6"`` or ``"linear"``.

    Variables match ``flax.linen.BatchNorm`` exactly: ``params/{scale,bias}`` and
    ``batch_stats/{mean,var}``; in training mode the batch statistics (biased variance) are used
    and the running averages updated with the Flax momentum convention.
    """

    activation: str = "leaky_relu"
    order: str = "act_bn"
    options: LayerOptions = LayerOptions()

    @nn.compact
    def __call__(self, x, train: bool):
        """Activation and BatchNorm of ``x`` (in ``order``)."""
        if self.order not in ("act_bn", "bn_act"):
            raise ValueError(f"ActivationNorm order must be 'act_bn' or 'bn_act', got {self.order!r}")
        opts = self.options
        features = x.shape[-1]
        fuse = train and self._fused()
        scale = self.param("scale", nn.initializers.ones, (features,), opts.param_dtype)
        bias = self.param("bias", nn.initializers.zeros, (features,), opts.param_dtype)
        ra_mean = self.variable("batch_stats", "mean", lambda: jnp.zeros((features,), jnp.float32))
        ra_var = self.variable("batch_stats", "var", lambda: jnp.ones((features,), jnp.float32))
        act = self._activation()
        if fuse:
            slope = opts.activation_slope if self.activation == "leaky_relu" else 0.0
            y, mean, var = fused.leaky_batch_norm(x, scale, bias, slope, opts.bn_epsilon, opts.dtype)
            self._update_running_averages(ra_mean, ra_var, mean, var)
        else:
            if self.order == "act_bn":
                x = act(x)
            if train:
                y, mean, var = kernels.batch_norm_train(x, scale, bias, opts.bn_epsilon, opts.dtype)
                self._update_running_averages(ra_mean, ra_var, mean, var)
            else:
                y = kernels.batch_norm_inference(
                    x, scale, bias, ra_mean.value, ra_var.value, opts.bn_epsilon, opts.dtype
                )
            if self.order == "bn_act":
                y = act(y)
        return y

    def _update_running_averages(self, ra_mean, ra_var, mean, var) -> None:
        if not self.is_initializing():
            m = self.options.bn_momentum
            ra_mean.value = m * ra_mean.value + (1.0 - m) * mean
            ra_var.value = m * ra_var.value + (1.0 - m) * var

    def _fused(self) -> bool:
        """Whether the hand-differentiated LeakyReLU+BatchNorm applies (the seed's order)."""
        return (self.options.implementation == "fast" and self.order == "act_bn"
                and self.activation in ("leaky_relu", "relu"))

    def _activation(self):
        slope = self.options.activation_slope
        table = {
            "leaky_relu": lambda v: jax.nn.leaky_relu(v, slope) if slope else jax.nn.relu(v),
            "relu": jax.nn.relu,
            "relu6": jax.nn.relu6,
            "linear": lambda v: v,
        }
        if self.activation not in table:
            raise ValueError(f"activation must be one of {sorted(table)}, got {self.activation!r}")
        return table[self.activation]

    def macs(self, input_shape, output_shape) -> int:
        """BatchNorm folds into the preceding layer at inference: no multiply-accumulates."""
        return 0
