"""Seed EffNet on Fashion-MNIST: the README quickstart (>= 90% test accuracy in 5 epochs).

Run:
  effnet-jax train --config fashion_mnist --workdir runs/fashion_mnist

Offline, the data comes from Debian's dataset-fashion-mnist (/usr/share/datasets/fashion-mnist);
elsewhere its original files are downloaded once (numpy, no TensorFlow). Adam at the paper's lr 1e-3 with a cosine decay.
"""

from effnet_jax.config import default_config


def get_config():
    config = default_config()
    config.model.name = "effnet"
    config.data.name = "fashion_mnist"
    config.data.validation_size = 5000
    config.train.epochs = 5
    config.train.batch_size = 128
    config.optimizer.name = "adam"
    config.optimizer.learning_rate = 1e-3
    config.optimizer.schedule = "cosine"
    return config
