"""Runs inside a subprocess with several CPU devices (tests/test_parallel.py starts it).

Usage: python parallel_worker.py CHECK WORKDIR, with XLA_FLAGS/JAX_NUM_CPU_DEVICES set by the
caller. Prints one JSON line of results for the test to assert on.
"""

import json
import os
import sys

import jax
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # for helpers

from effnet_jax.config import apply_overrides, default_config, lock


def tiny_config(*overrides):
    return apply_overrides(lock(default_config()), [
        "data.name=fashion_mnist", "data.train_subset=512", "data.validation_size=128", "data.test_subset=256",
        "model.options.widths=(8, 16, 16)", "model.options.bn_momentum=0.5", "optimizer.name=sgd",
        "optimizer.learning_rate=0.01", "train.epochs=1", "train.batch_size=32", "train.eval_batch_size=64",
        "train.steps_per_dispatch=4", "log.progress=False", "log.plot=False", "log.tensorboard=False",
        *overrides])


def params_of(workdir, config):
    from helpers import latest_state

    return jax.tree.map(np.asarray, latest_state(workdir, config).params)


def max_difference(a, b):
    """Largest |a - b| in units of numpy's allclose tolerance (rtol = atol = 1e-5): <= 1 passes."""
    return float(max(np.max(np.abs(x - y) / (1e-5 + 1e-5 * np.abs(y)))
                     for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b))))


def data_parallel(workdir):
    """8 devices vs 1 device on the same global batches; plus the errors before compiling."""
    from effnet_jax.training import train_and_evaluate

    out = {"devices": jax.device_count()}
    config = tiny_config()
    for steps in (4, None):  # after 4 steps, and after the whole epoch (16 steps)
        suffix = "" if steps is None else f"_{steps}"
        many = train_and_evaluate(config, os.path.join(workdir, "many" + suffix), max_steps=steps)
        one = train_and_evaluate(tiny_config("parallel.data_devices=1"), os.path.join(workdir, "one" + suffix),
                                 max_steps=steps)
        out["loss_many" + suffix], out["loss_one" + suffix] = many.get("test_loss"), one.get("test_loss")
        out["param_difference" + suffix] = max_difference(params_of(os.path.join(workdir, "many" + suffix), config),
                                                          params_of(os.path.join(workdir, "one" + suffix), config))
    for name, overrides in (("indivisible", ["train.batch_size=12"]), ("too_many", ["parallel.data_devices=16"])):
        try:
            train_and_evaluate(tiny_config(*overrides), os.path.join(workdir, name))
            out[name] = "no error"
        except ValueError as error:
            out[name] = str(error)
        out[name + "_wrote"] = os.path.exists(os.path.join(workdir, name))
    # A run stopped on 8 devices, to be finished on 1 (restore anywhere).
    train_and_evaluate(config, os.path.join(workdir, "moved"), max_steps=8)
    return out


def sweep_mesh(workdir):
    """A sweep of 2 members on 8 devices: a (population=2, data=4) mesh."""
    from effnet_jax.parallel.mesh import population_placement
    from effnet_jax.sweeps import sweep
    from effnet_jax.training import train_and_evaluate
    from effnet_jax.training.experiment import load_config_file

    config = tiny_config("sweep.grid.learning_rate=(0.01, 0.02)")
    rows = sweep(config, os.path.join(workdir, "sweep"))
    out = {"mesh": dict(population_placement(2).mesh.shape)}
    member_dir = os.path.join(workdir, "sweep", "members", rows[1]["name"])
    single = load_config_file(os.path.join(member_dir, "config.json"))
    apply_overrides(single, ["parallel.data_devices=1"])
    alone = train_and_evaluate(single, os.path.join(workdir, "alone"))
    out["param_difference"] = max_difference(params_of(member_dir, single), params_of(os.path.join(workdir, "alone"), single))
    out["loss_sweep"], out["loss_alone"] = rows[1]["test_loss"], alone["test_loss"]
    return out


if __name__ == "__main__":
    check, workdir = sys.argv[1], sys.argv[2]
    print("RESULT " + json.dumps({"data_parallel": data_parallel, "sweep_mesh": sweep_mesh}[check](workdir)))
