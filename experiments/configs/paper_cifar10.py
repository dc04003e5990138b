"""The packaged config `paper_cifar10` (effnet_jax/configs/paper_cifar10.py), here for a checkout's path:
  effnet-jax ... --config experiments/configs/paper_cifar10.py  is the same as  --config paper_cifar10
"""

from effnet_jax.configs.paper_cifar10 import get_config  # noqa: F401  (one source: the packaged config)
