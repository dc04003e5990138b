"""Runs inside a subprocess with several CPU devices (tests/test_parallel.py starts it).

Usage: python parallel_worker.py CHECK WORKDIR, with XLA_FLAGS/JAX_NUM_CPU_DEVICES set by the
caller. Prints one JSON line of results for the test to assert on.
"""

import json
import os
import shutil
import sys

import jax
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # for helpers

from effnet_jax.compilation_cache import enable_compilation_cache  # noqa: E402
from effnet_jax.config import apply_overrides, default_config, lock  # noqa: E402

# The tests' compilation cache (conftest's EFFNET_JAX_COMPILATION_CACHE): the runs of one check
# (and of the checks after it) compile the same programs again and again.
enable_compilation_cache()


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


def relative_distance(a, b):
    """``|a - b| / |b|`` over all parameters as one vector: ~1e-7 for the same member computed
    two ways, ~0.9 between two seeds' networks."""
    flat = lambda t: np.concatenate([np.ravel(x).astype(np.float64) for x in jax.tree.leaves(t)])
    return float(np.linalg.norm(flat(a) - flat(b)) / np.linalg.norm(flat(b)))


def member_distances(params, reference, rows):
    """Per member of ``rows``: its ``relative_distance`` to the same seed in ``reference`` and
    to the nearest other seed there."""
    return {"own": [relative_distance(params[r["seed"]], reference[r["seed"]]) for r in rows],
            "nearest_other": [min(relative_distance(params[r["seed"]], reference[s]) for s in reference
                                  if s != r["seed"]) for r in rows]}


def data_parallel(workdir):
    """8 devices vs 1 device on the same global batches; plus the errors before compiling."""
    from effnet_jax.training import train_and_evaluate

    out = {"devices": jax.device_count()}
    config = tiny_config()
    for steps in (4, None):  # after 4 steps, and after the whole epoch (16 steps)
        suffix = "" if steps is None else f"_{steps}"
        many = train_and_evaluate(config, os.path.join(workdir, "many" + suffix), max_steps=steps)
        if steps is not None:  # a run stopped on 8 devices, for the test to finish on 1 (restore anywhere)
            shutil.copytree(os.path.join(workdir, "many" + suffix), os.path.join(workdir, "moved"))
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
    return out


# (members, devices the sweep uses, parallel.population_shards): automatic meshes and padded
# ones, in two groups (two test processes: ~2x faster under pytest -n 2).
SWEEP_GROUPS = (((5, 8, 0), (5, 8, 8)), ((7, 4, 4), (12, 8, 0)))


def member_params(sweep_dir, rows, config):
    """Each member's exported parameters, by seed (one target built for all restores)."""
    from effnet_jax.training.checkpoints import Checkpoints
    from effnet_jax.training.experiment import build_run
    from effnet_jax.training.state import init_train_state

    run = build_run(config)
    target = jax.eval_shape(lambda: init_train_state(run.model, run.tx, jax.random.PRNGKey(0), run.sample))
    params = {}
    for row in rows:
        checkpoints = Checkpoints(os.path.join(sweep_dir, "members", row["name"], "checkpoints"), read_only=True)
        params[row["seed"]] = jax.tree.map(np.asarray, checkpoints.restore_latest(target).params)
        checkpoints.close()
    return params


def sweep_member_counts(workdir, group):
    """Seed sweeps of several sizes on 4 and 8 devices (``SWEEP_GROUPS[group]``), every member
    against each member of one sweep on 1 device of the group's largest seed count, after 4
    steps; then (group 0) a padded chunk restored from its checkpoint, or (group 1) the meshes that cannot work."""
    from effnet_jax.parallel.mesh import population_placement
    from effnet_jax.sweeps import sweep

    def seeds(n):
        return f"sweep.seeds={tuple(range(n))}"

    def config_of(*overrides):  # 128 training images: one epoch of 4 steps
        return tiny_config("data.train_subset=128", *overrides)

    config = config_of()
    largest = max(members for members, _, _ in SWEEP_GROUPS[group])  # the seeds this group's sweeps hold
    reference_rows = sweep(config_of(seeds(largest), "parallel.sweep_devices=1"), os.path.join(workdir, "reference"))
    reference = member_params(os.path.join(workdir, "reference"), reference_rows, config)
    reference_loss = {r["seed"]: r["test_loss"] for r in reference_rows}
    out = {"cases": []}
    losses = {}
    for members, devices, shards in SWEEP_GROUPS[group]:
        overrides = (seeds(members), f"parallel.sweep_devices={devices}", f"parallel.population_shards={shards}")
        name = f"sweep_{members}_{devices}_{shards}"
        rows = sweep(config_of(*overrides), os.path.join(workdir, name))
        placement = population_placement(members, 32, 64, shards, devices)
        params = member_params(os.path.join(workdir, name), rows, config)
        case = {"members": members, "devices": devices, "shards": shards, "mesh": placement.shape,
                "padded": placement.padded, "seeds": [r["seed"] for r in rows],
                **member_distances(params, reference, rows),
                "loss_difference": max(abs(r["test_loss"] - reference_loss[r["seed"]]) for r in rows)}
        out["cases"].append(case)
        losses[name] = [r["test_loss"] for r in rows]
    if group == 0:
        resume_padded_chunk(workdir, config_of, seeds, losses["sweep_5_8_8"], out)
    else:
        out["errors"] = mesh_errors(workdir, config_of, seeds)
    return out


def reference_model_sweep(workdir):
    """One training step of an 8-member sweep of the plain Flax model (``implementation=xla``,
    whose vmapped convolutions are grouped convolutions) on 1 device and on a mesh of 4
    population groups of 2 data devices, each member on batches of its own (the paper tables'
    ``sweep.per_member_shuffle``; the member-count checks share theirs): each member's distance
    to its one-device self, and to the nearest other member."""
    from effnet_jax.parallel.mesh import population_placement
    from effnet_jax.sweeps import sweep

    def config_of(*overrides):  # 32 training images: one step
        return tiny_config("data.train_subset=32", "model.options.implementation=xla", "sweep.seeds=(0,1,2,3,4,5,6,7)",
                           "sweep.per_member_shuffle=True", *overrides)

    def run(name, *overrides):
        rows = sweep(config_of(*overrides), os.path.join(workdir, name))
        return rows, member_params(os.path.join(workdir, name), rows, config_of())

    one_rows, one = run("one", "parallel.sweep_devices=1")
    loss = {r["seed"]: r["test_loss"] for r in one_rows}
    rows, params = run("mesh", "parallel.sweep_devices=8", "parallel.population_shards=4")
    return {"mesh": population_placement(8, 32, 64, 4, 8).shape, **member_distances(params, one, rows),
            "loss_difference": max(abs(r["test_loss"] - loss[r["seed"]]) / loss[r["seed"]] for r in rows)}


def resume_padded_chunk(workdir, config_of, seeds, first_losses, out):
    """The padded 5-on-8 sweep's chunk re-run from its (real members only) checkpoint."""
    from effnet_jax.sweeps import sweep

    padded_dir = os.path.join(workdir, "sweep_5_8_8")
    os.remove(os.path.join(padded_dir, "chunks", "chunk_000", "results.json"))
    again = sweep(config_of(seeds(5), "parallel.sweep_devices=8", "parallel.population_shards=8"), padded_dir)
    out["resumed_losses"], out["first_losses"] = [r["test_loss"] for r in again], first_losses


def mesh_errors(workdir, config_of, seeds):
    """The error of each sweep mesh that cannot work, and whether it wrote anything."""
    from effnet_jax.sweeps import sweep

    errors = {}
    for key, overrides in (("shards", ("parallel.population_shards=3",)),
                           ("batch", ("train.batch_size=12", "parallel.population_shards=1")),
                           ("devices", ("parallel.sweep_devices=16",))):
        try:
            sweep(config_of(seeds(5), *overrides), os.path.join(workdir, "error_" + key))
            errors[key] = "no error"
        except ValueError as error:
            errors[key] = str(error)
        errors[key + "_wrote"] = os.path.exists(os.path.join(workdir, "error_" + key))
    return errors


if __name__ == "__main__":
    check, workdir, *args = sys.argv[1:]
    checks = {"data_parallel": data_parallel, "sweep_member_counts": sweep_member_counts,
              "reference_model_sweep": reference_model_sweep}
    print("RESULT " + json.dumps(checks[check](workdir, *map(int, args))))
