"""The paper's CIFAR-10 comparison: EffNet and the Table-1 models, 5 seeds each, no augmentation.

Run (one sweep per model; downloads CIFAR-10 through TFDS):
  for m in baseline mobilenet shufflenet effnet; do
    effnet-jax sweep --config experiments/configs/paper_cifar10.py --workdir runs/paper_cifar10_$m model.name=$m
  done

Adam at lr 1e-3 with beta1 = 0.75 as the paper reports, batch 128, 30 epochs (the paper gives no
epoch count), mean over 5 runs as in the paper's tables.
"""

from effnet_jax.config import default_config


def get_config():
    config = default_config()
    config.model.name = "effnet"
    config.data.name = "cifar10"
    config.train.epochs = 30
    config.optimizer.b1 = 0.75
    config.sweep.seeds = (0, 1, 2, 3, 4)
    return config
