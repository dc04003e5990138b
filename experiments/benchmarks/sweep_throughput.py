"""vmapped populations vs the same members trained one after another.

Run:
  python experiments/benchmarks/sweep_throughput.py [--model effnet] [--dataset cifar10]
      [--batch-size 128] [--populations 1 2 4 8 16] [--steps 5]

For each population size M it times, in one process: (a) M single-model runs of the single-run
step, one after another; (b) one compiled ``jit(vmap(train_step))`` advancing all M members on
the same batches; (c) the sweep's default program, which vmaps members in groups sized to the
cache (on accelerators: all at once, i.e. (b)). It prints model-images/s (members x images per
second) with the ratios to (a). Runs unchanged on CPU, GPU or TPU.
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np

from effnet_jax.config import apply_overrides, default_config, lock
from effnet_jax.data import ArraySplit, DataSplits, dataset_info
from effnet_jax.sweeps.population import init_population, make_population_multi_step
from effnet_jax.sweeps.runner import choose_group_size, stacked_hparams
from effnet_jax.sweeps.spec import Member
from effnet_jax.training.experiment import build_run
from effnet_jax.training.optim import default_hparams
from effnet_jax.training.state import create_train_state
from effnet_jax.training.steps import make_multi_step


def synthetic_data(name: str, size: int) -> DataSplits:
    """Random uint8 images of the dataset's shape: throughput does not depend on the pixels."""
    info = dataset_info(name)
    rng = np.random.default_rng(0)
    split = ArraySplit(rng.integers(0, 256, (size, *info.image_shape), dtype=np.uint8),
                       rng.integers(0, info.num_classes, (size,)).astype(np.int32))
    return DataSplits(info, split, None, split)


def best_time(fn, repeats: int) -> float:
    """Fastest of ``repeats`` timed calls (after one warm-up call)."""
    jax.block_until_ready(fn())
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - start)
    return min(times)


def main():
    from effnet_jax.host import tune_cpu

    # As the effnet-jax CLI runs: glibc huge pages for XLA:CPU scratch, per-thread malloc arenas.
    tune_cpu(many_steps_per_call=True)
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="effnet")
    parser.add_argument("--dataset", default="cifar10")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=5, help="train steps per timed call")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--populations", type=int, nargs="+", default=[1, 2, 4, 8, 16])
    parser.add_argument("--group-size", type=int, default=0,
                        help="members vmapped at once (0 = the sweep's automatic choice)")
    args = parser.parse_args()
    config = apply_overrides(lock(default_config()), [
        f"model.name={args.model}", f"data.name={args.dataset}", "data.validation_size=0",
        f"train.batch_size={args.batch_size}"])
    run = build_run(config, synthetic_data(args.dataset, args.batch_size * args.steps))
    k, b = args.steps, args.batch_size
    rng = np.random.default_rng(1)
    batches = jax.device_put({
        "image": rng.integers(0, 256, (k, b, *run.data.info.image_shape), dtype=np.uint8),
        "label": rng.integers(0, run.data.info.num_classes, (k, b)).astype(np.int32)})
    single = jax.jit(make_multi_step(run.train_step), donate_argnums=0)
    hparams = default_hparams(config, run.model.dropout_rate)

    rows = []
    for m in args.populations:
        members = [Member(i, i, i, {"learning_rate": 1e-3 * (1 + i)}) for i in range(m)]
        keys = jnp.stack([jax.random.PRNGKey(i) for i in range(m)])
        population = jax.jit(init_population, static_argnums=(0, 1))(run.model, run.tx, keys, run.sample)
        member_hparams = stacked_hparams(run, members)
        group = args.group_size or choose_group_size(run, m)
        grouped_step = jax.jit(make_population_multi_step(run.train_step, False, group), donate_argnums=0)
        wide_step = jax.jit(make_population_multi_step(run.train_step, False, m), donate_argnums=0)
        states = [create_train_state(run.model, run.tx, jax.random.PRNGKey(i), run.sample) for i in range(m)]

        def population_runner(step):
            def call():
                nonlocal population
                population, metrics = step(population, batches, member_hparams)
                return metrics
            return call

        def sequential():
            out = None
            for i in range(m):
                states[i], out = single(states[i], batches, {**hparams, "learning_rate": member_hparams["learning_rate"][i]})
            return out

        t_seq = best_time(sequential, args.repeats)
        t_wide = best_time(population_runner(wide_step), args.repeats)
        t_grouped = best_time(population_runner(grouped_step), args.repeats) if group < m else t_wide
        images = m * k * b
        rows.append((m, group, images / t_seq, images / t_wide, images / t_grouped))
        print(f"  population {m}: sequential {images / t_seq:,.0f}, one vmap {images / t_wide:,.0f}, "
              f"groups of {group} {images / t_grouped:,.0f} model-img/s", flush=True)

    device = jax.devices()[0]
    print(f"\n{args.model} on {args.dataset}-shaped batches of {b}, {k} steps per call, "
          f"{device.platform} ({device.device_kind}), {jax.device_count()} device(s)\n")
    print("| members | sequential | one vmap of all | ratio | sweep default (vmap groups of) | ratio |")
    print("|---:|---:|---:|---:|---:|---:|")
    for m, group, seq, wide, grouped in rows:
        print(f"| {m} | {seq:,.0f} | {wide:,.0f} | {wide / seq:.2f}x | {grouped:,.0f} ({group}) | {grouped / seq:.2f}x |")
    print("\n(model-images/s: members x images per second; ratio = population / sequential)")


if __name__ == "__main__":
    main()
