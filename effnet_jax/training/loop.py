"""``train_and_evaluate(config, workdir)``: the one entry point of a training run.

The CLI, notebooks and launcher scripts all call it. It wires the pieces and nothing else: the
compiled multi-step, evaluation and writers around the one epoch loop (``epochs``, which sweeps
share); checkpoints at epoch ends (and every ``checkpoint.every_steps``); resumption from the
last complete checkpoint.
"""

from __future__ import annotations

import os
import time
from typing import Any

import jax
import ml_collections
import numpy as np

from effnet_jax.config import shuffle_seed
from effnet_jax.data.pipeline import eval_batches, train_chunks
from effnet_jax.errors import ConfigError, NotFound, TrainingDiverged, WorkdirError  # noqa: F401  (re-exported)
from effnet_jax.files import write_text
from effnet_jax.parallel.mesh import DataPlacement, data_placement, to_host
from effnet_jax.training.checkpoints import Checkpoints, restore_for_use
from effnet_jax.training.epochs import EpochLoop, Progress, train_epochs
from effnet_jax.training.experiment import Run, build_run, check_workdir, load_data, write_config
from effnet_jax.training.logs import METRICS_FILE, MetricsWriter, plot_learning_curves, read_metrics, summary_table
from effnet_jax.training.optim import default_hparams
from effnet_jax.training.signals import StopRequests
from effnet_jax.training.state import create_train_state, init_train_state
from effnet_jax.training.steps import all_finite, averages, make_evaluate, make_multi_step
from effnet_jax.training.workdir import workdir_lock


def _prefixed(prefix: str, values: dict[str, float]) -> dict[str, float]:
    return {f"{prefix}_{key}": value for key, value in values.items()}


def _evaluate(evaluate, state, batches) -> dict[str, float]:
    return averages(to_host(evaluate(state, batches)))


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str,
                       max_steps: int | None = None) -> dict[str, Any]:
    """Trains ``config`` in ``workdir`` (resuming what is there) and evaluates it.

    Args:
      config: a config from ``effnet_jax.config`` (locked ``ConfigDict``).
      workdir: where checkpoints, ``metrics.jsonl``, TensorBoard events, ``config.json``,
        ``learning_curves.png`` and ``summary.md`` go.
      max_steps: stop at the first chunk boundary at or after this many steps (after saving a
        checkpoint), e.g. to fit a time slice; re-running resumes.

    Returns:
      Final metrics: ``{train,val,test}_{loss,accuracy}`` (``train_*``: the last epoch's mean
      over its steps), ``train_sample_*`` (the final network in evaluation mode on the fixed
      training images its BatchNorm statistics come from; with ``train.bn_statistics_batches``
      > 0), ``best_test_*`` (the best-validation checkpoint on the test set), ``steps``, ``epochs``, ``wall_time_s``,
      ``train_images_per_s``; ``stopped_early`` when ``max_steps`` cut the run short, and
      ``interrupted`` (``"SIGTERM"``/``"SIGINT"``) when a signal did (after saving a checkpoint;
      re-running resumes).

    Raises:
      ValueError, FileNotFoundError, FileExistsError, PermissionError: bad config, missing
      data, or a workdir that cannot hold this run, all before training starts.
    """
    from effnet_jax.config import validate_config

    validate_config(config)
    placement = data_placement(config.train.batch_size, config.train.eval_batch_size, config.parallel.data_devices)
    # One writer per workdir; SIGTERM/SIGINT from here on save a checkpoint and return.
    with workdir_lock(workdir, enabled=jax.process_index() == 0), StopRequests() as stops:
        check_workdir(workdir, config)
        run = build_run(config, load_data(config))
        if jax.process_index() == 0:
            write_config(workdir, config)
        return _train(run, placement, workdir, max_steps, stops)


def _train(run: Run, placement: DataPlacement, workdir: str, max_steps: int | None,
           stops: StopRequests) -> dict[str, Any]:
    config, data = run.config, run.data
    train_cfg = config.train
    started = time.time()
    lead = jax.process_index() == 0  # only process 0 logs and writes reports
    repl = placement.replicated
    state = create_train_state(run.model, run.tx, jax.random.PRNGKey(config.seed), run.sample, repl)
    checkpoints = Checkpoints(os.path.join(workdir, "checkpoints"), config.checkpoint.keep,
                              config.checkpoint.async_save)
    restored = checkpoints.restore_latest(state)
    state = restored if restored is not None else state
    start = int(to_host(state.step))
    writer = MetricsWriter(workdir, tensorboard=config.log.tensorboard, enabled=lead)
    writer.truncate_after(start)

    run_steps = jax.jit(make_multi_step(run.train_step), in_shardings=(repl, placement.batches, repl, repl),
                        out_shardings=(repl, repl), donate_argnums=0)
    params_finite = jax.jit(lambda s: all_finite(s.params), in_shardings=(repl,), out_shardings=repl)

    def check_finite(step: int, state) -> None:
        """Before anything is saved or evaluated: a non-finite state stops the run, unsaved."""
        if not bool(to_host(params_finite(state))):
            raise _Diverged(step)
    evaluate = jax.jit(make_evaluate(run.eval_step), in_shardings=(repl, placement.batches), out_shardings=repl)
    statistics_images = run.statistics_images()
    train_sample = None  # the same training images, to measure the current network's accuracy on
    if statistics_images is not None:
        statistics_images = placement.put(statistics_images)
        train_sample = placement.put(eval_batches(run.statistics_sample(), train_cfg.eval_batch_size))
        estimate = jax.jit(run.estimate_batch_stats, in_shardings=(repl, placement.batches), out_shardings=repl,
                           donate_argnums=0)
    replicated_int = lambda n: jax.make_array_from_process_local_data(repl, np.asarray(n, np.int32))
    hparams = jax.tree.map(lambda x: jax.make_array_from_process_local_data(repl, np.asarray(x)),
                           default_hparams(config, run.model.dropout_rate))
    val_batches = None if data.validation is None else placement.put(eval_batches(data.validation, train_cfg.eval_batch_size))
    test_batches = placement.put(eval_batches(data.test, train_cfg.eval_batch_size))

    def end_epoch(state, epoch: int, step: int, sums, epoch_start: int):
        nonlocal train_metrics
        check_finite(step, state)
        train_metrics = averages(sums)
        if statistics_images is not None:  # evaluate (and save) the current network's statistics
            state = estimate(state, statistics_images)
        record = {"kind": "epoch", "step": step, "epoch": epoch + 1, **_prefixed("train", train_metrics),
                  "train_steps": step - epoch * spe - epoch_start}
        if epoch_start:  # resumed part-way: the training metrics average the steps since then
            record["train_partial"] = True
        if train_sample is not None:
            record.update(_prefixed("train_sample", _evaluate(evaluate, state, train_sample)))
        if val_batches is not None:
            val = _evaluate(evaluate, state, val_batches)
            record.update(_prefixed("val", val))
            checkpoints.save_best(step, state, val["accuracy"])
        if config.log.test_every_epoch:  # a learning curve on test; never used to choose
            record.update(_prefixed("test", _evaluate(evaluate, state, test_batches)))
        writer.write(record)
        return state

    def save(step: int, state) -> None:
        check_finite(step, state)
        checkpoints.save_latest(step, state)

    def fetch(metrics):
        host = to_host(metrics)
        if int(host["first_nonfinite"]) >= 0:
            raise _Diverged(int(host["first_nonfinite"]) + 1)  # steps count from 1
        return host

    spe = run.steps_per_epoch
    loop = EpochLoop(
        run_steps=lambda state, chunk, steps: run_steps(state, chunk, hparams, replicated_int(steps)),
        chunks=lambda epoch, done: train_chunks(data.train, train_cfg.batch_size, shuffle_seed(config), epoch, done,
                                                train_cfg.steps_per_dispatch),
        put=placement.put, fetch=fetch, end_epoch=end_epoch, save=save, images_per_step=train_cfg.batch_size,
        steps_per_dispatch=train_cfg.steps_per_dispatch, steps_per_epoch=spe, epochs=train_cfg.epochs,
        every_steps=config.checkpoint.every_steps, max_steps=max_steps, stop_requested=lambda: bool(stops.requested))
    progress = Progress(loop.total_steps, start, config.log.progress and lead, _progress_postfix)
    train_metrics: dict[str, float] = {}
    try:
        outcome = train_epochs(loop, state, start, progress)
    except _Diverged as diverged:
        progress.close()
        checkpoints.wait()
        kept = checkpoints.latest.latest_step()
        writer.write({"kind": "diverged", "step": diverged.step})
        writer.close()
        checkpoints.close()
        raise TrainingDiverged(diverged.step, workdir, kept) from None
    finally:
        progress.close()
        checkpoints.wait()
    state, step, stopped_early, throughput = outcome.state, outcome.step, outcome.stopped_early, outcome.throughput

    results: dict[str, Any] = {"steps": step, "epochs": step / spe, **run.describe()}
    log = os.path.join(workdir, METRICS_FILE)
    if not train_metrics and lead and step and step % spe == 0 and os.path.exists(log):  # resumed at an epoch's end
        last = [r for r in read_metrics(workdir) if r.get("kind") == "epoch" and r.get("step") == step]
        if not last:  # cut from the log: the results would silently lack (or misreport) them
            # (a sweep's exported member has no log at all: its results carry no training metrics)
            raise WorkdirError(f"{log!r} has no record of the last epoch "
                               f"(step {step}), whose training metrics the results report; it was cut short. "
                               "Evaluate the run with effnet-jax eval, or train it again in another workdir")
        train_metrics = {k[len("train_"):]: last[-1][k] for k in ("train_loss", "train_accuracy") if k in last[-1]}
    if train_metrics:
        results.update(_prefixed("train", train_metrics))
    if stopped_early:
        results["stopped_early"] = True
        if stops.requested:
            results["interrupted"] = stops.requested
        checkpoints.close()
        writer.close()
        return results
    if train_sample is not None:
        results.update(_prefixed("train_sample", _evaluate(evaluate, state, train_sample)))
    if val_batches is not None:
        results.update(_prefixed("val", _evaluate(evaluate, state, val_batches)))
    results.update(_prefixed("test", _evaluate(evaluate, state, test_batches)))
    best = checkpoints.restore_best(state)
    if best is not None:
        results.update(_prefixed("best_test", _evaluate(evaluate, best, test_batches)))
    results["wall_time_s"] = round(time.time() - started, 1)
    if throughput.seconds:
        results["train_images_per_s"] = round(throughput.rate, 1)
    writer.write({"kind": "final", "step": step, **results})
    checkpoints.close()
    writer.close()
    if lead:
        _write_reports(workdir, config, results)
    return results


class _Diverged(Exception):
    def __init__(self, step: int):
        super().__init__(step)
        self.step = step


def _progress_postfix(metrics: dict[str, Any], images_per_s: float) -> dict[str, str]:
    shown = averages(metrics)
    postfix = {"loss": f"{shown['loss']:.4f}", "acc": f"{100 * shown['accuracy']:.2f}%"}
    if images_per_s:
        postfix["img/s"] = f"{images_per_s:.0f}"
    return postfix


def _write_reports(workdir: str, config, results: dict[str, Any]) -> None:
    table = summary_table(results)
    write_text(os.path.join(workdir, "summary.md"), f"# {config.model.name} on {config.data.name}\n\n{table}\n")
    if config.log.plot:
        plot_learning_curves(read_metrics(workdir), os.path.join(workdir, "learning_curves.png"),
                             title=f"{config.model.name} on {config.data.name}")
    if config.log.progress:
        print(table)


def evaluate_workdir(workdir: str, checkpoint: str = "best") -> dict[str, Any]:
    """Restores a workdir's ``best`` (default) or ``latest`` checkpoint and evaluates it on test.

    Raises:
      FileNotFoundError: no run or no such checkpoint in ``workdir``.
    """
    from effnet_jax.config import load_config
    from effnet_jax.training.experiment import CONFIG_FILE

    config_path = os.path.join(workdir, CONFIG_FILE)
    if not os.path.exists(config_path):
        raise NotFound(f"{workdir!r} holds no run (no {CONFIG_FILE})")
    if checkpoint not in ("best", "latest"):
        raise ConfigError(f"checkpoint must be 'best' or 'latest', got {checkpoint!r}")
    config = load_config(config_path)
    placement = data_placement(config.train.batch_size, config.train.eval_batch_size, config.parallel.data_devices)
    run = build_run(config)
    target = jax.eval_shape(lambda: init_train_state(run.model, run.tx, jax.random.PRNGKey(0), run.sample))
    target = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=placement.replicated), target)
    state, checkpoint = restore_for_use(os.path.join(workdir, "checkpoints"), target, checkpoint)
    evaluate = jax.jit(make_evaluate(run.eval_step), in_shardings=(placement.replicated, placement.batches),
                       out_shardings=placement.replicated)
    batches = placement.put(eval_batches(run.data.test, config.train.eval_batch_size))
    results = {"checkpoint": checkpoint, "step": int(to_host(state.step)),
               **_prefixed("test", _evaluate(evaluate, state, batches))}
    return results
