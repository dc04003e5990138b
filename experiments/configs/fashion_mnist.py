"""The packaged config `fashion_mnist` (effnet_jax/configs/fashion_mnist.py), here for a checkout's path:
  effnet-jax ... --config experiments/configs/fashion_mnist.py  is the same as  --config fashion_mnist
"""

from effnet_jax.configs.fashion_mnist import get_config  # noqa: F401  (one source: the packaged config)
