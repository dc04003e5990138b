"""``sweep(config, workdir)``: train a population of configurations in one compiled program.

Members are expanded from ``config.sweep`` (see ``spec``), split into chunks that fit in
memory, and each chunk is trained by ``jit(vmap(train_step))`` on the same batches (or on
per-member shuffles). Chunks checkpoint at every epoch end and resume like single runs; at the
end every member is exported as a single-run workdir (``members/<name>``: ``config.json`` and
an Orbax checkpoint), so ``effnet-jax eval --workdir <sweep>/members/<name> --checkpoint
latest`` evaluates it and ``effnet-jax train --config <that>/config.json`` reproduces it.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import PartitionSpec as P

from effnet_jax.config import shuffle_seed, validate_config
from effnet_jax.data.pipeline import eval_batches, train_chunks
from effnet_jax.errors import SweepDiverged, WorkdirError
from effnet_jax.files import read_json, write_json
from effnet_jax.parallel.mesh import population_placement
from effnet_jax.sweeps.population import (
    Population,
    init_population,
    make_population_estimate,
    make_population_evaluate,
    make_population_multi_step,
    member,
)
from effnet_jax.sweeps.results import member_config, write_results
from effnet_jax.sweeps.spec import Member, expand_members
from effnet_jax.training.checkpoints import Checkpoints
from effnet_jax.training.epochs import EpochLoop, Progress, train_epochs
from effnet_jax.training.experiment import (
    Run,
    build_run,
    check_workdir,
    load_data,
    write_config,
)
from effnet_jax.training.logs import MetricsWriter
from effnet_jax.training.optim import default_hparams
from effnet_jax.training.signals import Interrupted, StopRequests
from effnet_jax.training.state import compile_once_run
from effnet_jax.training.workdir import workdir_lock

_MEMORY_HEADROOM = 0.8
logger = logging.getLogger("effnet_jax")


def stacked_hparams(run: Run, members: list[Member]) -> dict[str, jax.Array]:
    """``hparams`` with a leading member axis: the config's values, overridden per member."""
    base = default_hparams(run.config, run.model.dropout_rate)
    if any("dropout_rate" in m.hparams for m in members):  # swept: traced even where the base is 0
        base.setdefault("dropout_rate", jnp.float32(run.model.dropout_rate))
    return {key: jnp.asarray([m.hparams.get(key, float(value)) for m in members], jnp.float32)
            for key, value in base.items()}


def _init(run: Run, members: list[Member], placement) -> Population:
    keys = jnp.stack([jax.random.PRNGKey(m.seed) for m in members])
    init = jax.jit(init_population, static_argnums=(0, 1), out_shardings=placement.population if placement else None)
    return compile_once_run(init.lower(run.model, run.tx, keys, run.sample))(keys, run.sample)


def _device_memory_limit() -> int | None:
    """Bytes the accelerator can hold (``None`` where unknown, e.g. on CPU)."""
    stats = jax.devices()[0].memory_stats()
    return stats.get("bytes_limit") if stats else None


def _population_bytes(run: Run, members: int) -> int:
    """Memory XLA plans for one chunk program of ``members`` members (compiled abstractly)."""
    cfg = run.config
    keys = jax.ShapeDtypeStruct((members, 2), jnp.uint32)
    population = jax.eval_shape(lambda k: init_population(run.model, run.tx, k, run.sample), keys)
    info = run.data.info
    shape = (cfg.train.steps_per_dispatch, cfg.train.batch_size)
    if cfg.sweep.per_member_shuffle:
        shape = (shape[0], members, shape[1])
    batches = {"image": jax.ShapeDtypeStruct((*shape, *info.image_shape), jnp.uint8),
               "label": jax.ShapeDtypeStruct(shape, jnp.int32)}
    # The keys the chunk really runs with (a swept or preset dropout adds its mask to the program).
    hparams = jax.tree.map(lambda x: jax.ShapeDtypeStruct((members,), x.dtype),
                           stacked_hparams(run, expand_members(cfg)))
    step = make_population_multi_step(run.train_step, cfg.sweep.per_member_shuffle, members)
    steps = jax.ShapeDtypeStruct((), jnp.int32)  # the loop's program: chunks padded, real steps counted
    analysis = jax.jit(step).lower(population, batches, hparams, steps).compile().memory_analysis()
    if analysis is None:
        return 0
    return analysis.argument_size_in_bytes + analysis.output_size_in_bytes + analysis.temp_size_in_bytes


def _member_chunks(run: Run, members: list[Member], split, epoch: int, start: int):
    """Batches for this chunk of the epoch: shared ``[K, B, ...]`` or ``[K, M, B, ...]``."""
    cfg = run.config
    if not cfg.sweep.per_member_shuffle:
        yield from train_chunks(split, cfg.train.batch_size, shuffle_seed(cfg), epoch, start, cfg.train.steps_per_dispatch)
        return
    streams = [train_chunks(split, cfg.train.batch_size, m.seed, epoch, start, cfg.train.steps_per_dispatch) for m in members]
    for parts in zip(*streams):
        yield {key: np.stack([p[key] for p in parts], axis=1) for key in parts[0]}


def _averages(metrics, members: int) -> dict[str, list[float]]:
    """Per-member mean loss and accuracy of the first ``members`` members (padding dropped)."""
    host = jax.device_get(metrics)
    count = np.maximum(np.asarray(host["count"], np.float64), 1.0)[:members]
    return {"loss": (np.asarray(host["loss_sum"])[:members] / count).tolist(),
            "accuracy": (np.asarray(host["correct"])[:members] / count).tolist()}


def _checkpointed(population: Population, placement) -> Population:
    """The real members of a (padded) population, replicated: what checkpoints store, so a
    chunk resumes on any device count."""
    if placement is None:
        return population
    real = lambda p: jax.tree.map(lambda x: x[:placement.members], p)
    return jax.jit(real, out_shardings=placement.replicated)(population)


def _padded(population: Population, placement) -> Population:
    """``population`` (real members) grown to the placement's padded size and sharded over it:
    the padding repeats the last member."""
    if placement is None:
        return population
    extra = placement.padded - placement.members
    grow = lambda x: jnp.concatenate([x, jnp.repeat(x[-1:], extra, axis=0)]) if extra else x
    return jax.jit(lambda p: jax.tree.map(grow, p), out_shardings=placement.population)(population)


def train_chunk(run: Run, members: list[Member], directory: str, writer: MetricsWriter,
                progress: bool = True, stops: StopRequests | None = None,
                max_steps: int | None = None) -> list[dict[str, Any]] | None:
    """Trains one chunk of members to the end (resuming its checkpoint); returns member rows,
    or ``None`` where ``max_steps`` stopped it first (checkpointed: calling again resumes).

    On several devices the members are spread over a ``(population, data)`` mesh, padded with
    copies of the last member where the population axis does not divide their number
    (``parallel.mesh.plan_population_mesh``); the copies' results are dropped.
    """
    cfg = run.config
    placement = population_placement(len(members), cfg.train.batch_size, cfg.train.eval_batch_size,
                                     cfg.parallel.population_shards, cfg.parallel.sweep_devices)
    count = len(members)
    running = members if placement is None else members + [members[-1]] * (placement.padded - count)
    population = _init(run, running, placement)
    checkpoints = Checkpoints(os.path.join(directory, "checkpoints"), keep=1, async_save=cfg.checkpoint.async_save)
    target = population if placement is None else jax.tree.map(
        lambda x: jax.ShapeDtypeStruct((count, *x.shape[1:]), x.dtype, sharding=placement.replicated), population)
    restored = checkpoints.restore_latest(target)  # the newest intact one
    population = _padded(restored, placement) if restored is not None else population
    step = int(np.asarray(jax.device_get(restored.state.step))[0]) if restored is not None else 0
    # Records this chunk logged after its checkpoint (a kill -9 between the two) are logged again.
    indices = [m.index for m in members]
    writer.truncate_after(step, selects=lambda record: record.get("members") == indices)
    hparams = stacked_hparams(run, running)
    batch_sharding = None
    if placement is not None:
        hparams = jax.device_put(hparams, placement.population)
        batch_sharding = placement.member_batches if cfg.sweep.per_member_shuffle else placement.shared_batches
    # With several devices the population axis is sharded over them: one vmap over all members.
    group = len(running) if placement is not None else choose_group_size(run, count)
    multi_step = make_population_multi_step(run.train_step, cfg.sweep.per_member_shuffle, group)
    evaluate = make_population_evaluate(run.eval_step)
    estimate = make_population_estimate(run.estimate_batch_stats)
    if placement is None:
        run_steps, evaluate = jax.jit(multi_step, donate_argnums=0), jax.jit(evaluate)
        estimate = jax.jit(estimate, donate_argnums=0)
    else:
        pop, members_axis, same = placement.population, P("population"), P()
        batch_spec = P(None, "population") if cfg.sweep.per_member_shuffle else same
        multi_step = placement.per_group(multi_step, (members_axis, batch_spec, members_axis, same),
                                         (members_axis, members_axis))
        evaluate = placement.per_group(evaluate, (members_axis, same), members_axis)
        estimate = placement.per_group(estimate, (members_axis, same), members_axis)
        run_steps = jax.jit(multi_step, in_shardings=(pop, batch_sharding, pop, placement.replicated),
                            out_shardings=(pop, pop), donate_argnums=0)
        evaluate = jax.jit(evaluate, in_shardings=(pop, placement.shared_batches), out_shardings=pop)
        estimate = jax.jit(estimate, in_shardings=(pop, placement.shared_batches), out_shardings=pop,
                           donate_argnums=0)
    data = run.data
    eval_sharding = None if placement is None else placement.shared_batches
    statistics_images = run.statistics_images()
    train_sample = None  # the same training images, to measure the current networks' accuracy on
    if statistics_images is not None:
        statistics_images = jax.device_put(statistics_images, eval_sharding)
        train_sample = jax.device_put(eval_batches(run.statistics_sample(), cfg.train.eval_batch_size), eval_sharding)
    val = None if data.validation is None else jax.device_put(
        eval_batches(data.validation, cfg.train.eval_batch_size), eval_sharding)
    # Test accuracy at every epoch (a study reads 3 and 10 epochs from one run); never used to choose.
    test = jax.device_put(eval_batches(data.test, cfg.train.eval_batch_size), eval_sharding) \
        if cfg.log.test_every_epoch else None

    def end_epoch(population, epoch: int, step: int, sums, epoch_start: int):
        if statistics_images is not None:  # evaluate (and save) the current networks' statistics
            population = estimate(population, statistics_images)
        record = {"kind": "epoch", "step": step, "epoch": epoch + 1, "members": [m.index for m in members],
                  **{f"train_{k}": v for k, v in _averages(sums, count).items()},
                  "diverged": np.asarray(population.diverged)[:count].tolist()}
        if epoch_start:  # resumed part-way: the training metrics average the steps since then
            record["train_partial"] = True
        for split, batches in (("train_sample", train_sample), ("val", val), ("test", test)):
            if batches is not None:
                record.update({f"{split}_{k}": v for k, v in _averages(evaluate(population.state, batches), count).items()})
        writer.write(record)
        return population

    loop = EpochLoop(
        run_steps=lambda population, chunk, steps: run_steps(population, chunk, hparams, jax.device_put(
            np.int32(steps), None if placement is None else placement.replicated)),
        chunks=lambda epoch, done: _member_chunks(run, running, data.train, epoch, done),
        put=lambda chunk: jax.device_put(chunk, batch_sharding), fetch=jax.device_get, end_epoch=end_epoch,
        save=lambda step, population: checkpoints.save_latest(step, _checkpointed(population, placement)),
        images_per_step=cfg.train.batch_size * count, steps_per_dispatch=cfg.train.steps_per_dispatch,
        steps_per_epoch=run.steps_per_epoch, epochs=cfg.train.epochs,
        every_steps=cfg.checkpoint.every_steps, max_steps=max_steps,
        stop_requested=lambda: stops is not None and bool(stops.requested))
    bar = Progress(loop.total_steps, step, progress, lambda metrics, rate: {"member img/s": f"{rate:.0f}"},
                   description=f"{count} members")
    try:
        outcome = train_epochs(loop, population, step, bar)
    finally:
        bar.close()
        checkpoints.wait()
    if outcome.stopped_early:
        checkpoints.close()
        if stops is not None and stops.requested:
            raise Interrupted(stops.requested, outcome.step, directory)
        return None
    checkpoints.close()
    population, throughput = outcome.state, outcome.throughput
    rows = _member_rows(run, members, population, evaluate, val, eval_sharding)
    for row in rows:
        row["member_images_per_s"] = round(throughput.rate, 1) if throughput.seconds else None
        row.update(run.describe())
    _export_members(run, members, population, directory)
    return rows


def _member_rows(run, members, population, evaluate, val, eval_sharding) -> list[dict[str, Any]]:
    test = jax.device_put(eval_batches(run.data.test, run.config.train.eval_batch_size), eval_sharding)
    count = len(members)
    results = {"test": _averages(evaluate(population.state, test), count)}
    if val is not None:
        results["val"] = _averages(evaluate(population.state, val), count)
    diverged = np.asarray(population.diverged)
    diverged_at = np.asarray(population.diverged_at)
    rows = []
    for i, m in enumerate(members):
        row = {"member": m.index, "name": m.name, "config_id": m.config_id, "seed": m.seed, **m.hparams,
               "diverged": bool(diverged[i]), "diverged_at_step": int(diverged_at[i]) if diverged[i] else None}
        for split, values in results.items():
            row[f"{split}_loss"] = values["loss"][i]
            row[f"{split}_accuracy"] = values["accuracy"][i]
        rows.append(row)
    return rows


def _export_members(run: Run, members: list[Member], population: Population, directory: str) -> None:
    """Each member as a single-run workdir beside the sweep (``<sweep>/members/<name>``)."""
    root = os.path.join(os.path.dirname(os.path.dirname(directory)), "members")
    states = jax.device_get(population.state)  # one transfer; the saves below write in the background
    writers = []
    for i, m in enumerate(members):
        workdir = os.path.join(root, m.name)
        os.makedirs(workdir, exist_ok=True)
        write_config(workdir, member_config(run.config, m))
        checkpoints = Checkpoints(os.path.join(workdir, "checkpoints"), async_save=True)
        state = jax.tree.map(jnp.asarray, member(states, i))
        checkpoints.save_latest(int(state.step), state)
        writers.append(checkpoints)
    for checkpoints in writers:
        checkpoints.close()  # waits for its save


def _last_level_cache_bytes(default: int = 32 << 20) -> int:
    """Size of the CPU's last-level cache (Linux sysfs), or ``default``."""
    sizes = []
    for index in range(8):
        try:
            with open(f"/sys/devices/system/cpu/cpu0/cache/index{index}/size") as f:
                text = f.read().strip()
        except OSError:
            continue
        scale = {"K": 1 << 10, "M": 1 << 20}.get(text[-1], 1)
        sizes.append(int(text.rstrip("KM")) * scale)
    return max(sizes, default=default)


def choose_group_size(run: Run, num_members: int) -> int:
    """``sweep.group_size``, or automatically: on accelerators all members at once; on CPU as
    many as keep two of the largest activations of the group within the last-level cache
    (activations that spill to memory make a wide vmap slower than members run one by one)."""
    if run.config.sweep.group_size > 0:
        return min(run.config.sweep.group_size, num_members)
    if jax.devices()[0].platform != "cpu":
        return num_members
    from effnet_jax.summary import summarize

    rows = summarize(run.model, run.data.info.image_shape).rows
    largest = max(int(np.prod(r.output_shape)) for r in rows) * run.config.train.batch_size * 4
    return int(max(1, min(num_members, _last_level_cache_bytes() // (2 * largest))))


def choose_chunk_size(run: Run, num_members: int) -> int:
    """``sweep.chunk_size``; or, on an accelerator, the most members whose compiled program
    fits in its memory (halving until it does); or all members where the device reports no
    memory limit (CPU: there the working set is handled by ``choose_group_size``)."""
    if run.config.sweep.chunk_size:
        return min(run.config.sweep.chunk_size, num_members)
    limit = _device_memory_limit()
    size = num_members
    while limit and size > 1 and _population_bytes(run, size) > _MEMORY_HEADROOM * limit:
        size = (size + 1) // 2
    return size


def sweep(config, workdir: str, max_steps: int | None = None) -> list[dict[str, Any]]:
    """Runs the sweep of ``config`` in ``workdir`` (resuming finished chunks and checkpoints).

    ``max_steps`` stops the chunk in training at the first chunk boundary at or after that many
    steps, checkpointed (e.g. to fit a time slice); the rows returned are then those of the
    chunks finished before it, and the results files wait for the sweep's end. Running again
    resumes.

    Returns:
      One row per member: its hyperparameters, seed, ``config_id``, ``diverged`` and final
      validation/test loss and accuracy. Also written: ``results.csv``, ``results.md`` (ranked,
      with mean/std over seeds per configuration), ``accuracy_vs_<hparam>.png``,
      ``best_config.json`` and ``members/<name>/`` single-run workdirs.

    Raises:
      ValueError etc.: a bad sweep spec, config or workdir, before anything compiles.
    """
    validate_config(config)
    members = expand_members(config)
    # A mesh that cannot work fails here, in one line, before any data is loaded or compiled.
    population_placement(len(members), config.train.batch_size, config.train.eval_batch_size,
                         config.parallel.population_shards, config.parallel.sweep_devices)
    # One writer per workdir; SIGTERM/SIGINT save the chunk in flight and raise Interrupted.
    with workdir_lock(workdir), StopRequests() as stops:
        check_workdir(workdir, config, sweep=True)
        run = build_run(config, load_data(config))
        write_config(workdir, config)
        writer = MetricsWriter(workdir, tensorboard=False)
        size = choose_chunk_size(run, len(members))
        rows: list[dict[str, Any]] = []
        for begin in range(0, len(members), size):
            chunk = members[begin: begin + size]
            directory = os.path.join(workdir, "chunks", f"chunk_{begin // size:03d}")
            done = os.path.join(directory, "results.json")
            finished = _finished_rows(done, chunk)
            if finished is not None:
                rows += finished
                continue
            chunk_rows = train_chunk(run, chunk, directory, writer, progress=config.log.progress, stops=stops,
                                     max_steps=max_steps)
            if chunk_rows is None:  # stopped by max_steps, checkpointed
                writer.close()
                return rows
            write_json(done, chunk_rows)
            rows += chunk_rows
        writer.close()
        write_results(config, rows, workdir)
    if all(row["diverged"] for row in rows):
        steps = sorted({row["diverged_at_step"] for row in rows if row.get("diverged_at_step") is not None})
        raise SweepDiverged(f"every member of the sweep in {workdir!r} diverged (at steps {steps}); "
                             "nothing is recommended (no best_config.json): lower the learning rates")
    return rows


def _finished_rows(path: str, chunk: list[Member]) -> list[dict[str, Any]] | None:
    """A finished chunk's rows (``results.json``, its finished marker), or ``None`` to train it.
    A damaged file is not trusted: the chunk resumes from its last checkpoint, which recomputes
    the rows."""
    if not os.path.exists(path):
        return None
    try:
        rows = read_json(path, "a sweep chunk's results")
        if not (isinstance(rows, list) and [r.get("member") for r in rows] == [m.index for m in chunk]):
            raise WorkdirError(f"a sweep chunk's results {path!r} do not list its members")
    except WorkdirError as error:
        logger.warning("%s; the chunk resumes from its checkpoint to compute them again", error)
        return None
    return rows
