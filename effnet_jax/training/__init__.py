"""Training: pure steps, Optax optimizers, the train state, checkpoints, logs and the loop."""

from effnet_jax.training.loop import evaluate_workdir, train_and_evaluate
from effnet_jax.training.optim import default_hparams, make_optimizer
from effnet_jax.training.state import TrainState, init_train_state
from effnet_jax.training.steps import make_eval_step, make_evaluate, make_multi_step, make_train_step

__all__ = [
    "TrainState",
    "default_hparams",
    "evaluate_workdir",
    "init_train_state",
    "make_eval_step",
    "make_evaluate",
    "make_multi_step",
    "make_optimizer",
    "make_train_step",
    "train_and_evaluate",
]
