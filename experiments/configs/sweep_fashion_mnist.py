"""The packaged config `sweep_fashion_mnist` (effnet_jax/configs/sweep_fashion_mnist.py), here for a checkout's path:
  effnet-jax ... --config experiments/configs/sweep_fashion_mnist.py  is the same as  --config sweep_fashion_mnist
"""

from effnet_jax.configs.sweep_fashion_mnist import get_config  # noqa: F401  (one source: the packaged config)
