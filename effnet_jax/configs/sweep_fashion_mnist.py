"""A vmap sweep on Fashion-MNIST: learning rate x weight decay x 3 seeds (12 members).

Run:
  effnet-jax sweep --config sweep_fashion_mnist --workdir runs/sweep_fm

Every member trains on the same batches in one compiled program; results.md ranks them and
gives mean and std over the seeds; best_config.json trains the winner alone:
  effnet-jax train --config runs/sweep_fm/best_config.json --workdir runs/best_fm
"""

from effnet_jax.config import default_config


def get_config():
    config = default_config()
    config.data.name = "fashion_mnist"
    config.train.epochs = 3
    config.optimizer.schedule = "cosine"
    config.optimizer.name = "adamw"
    config.sweep.seeds = (0, 1, 2)
    config.sweep.grid.learning_rate = (1e-3, 3e-3)
    config.sweep.grid.weight_decay = (0.0, 1e-4)
    return config
