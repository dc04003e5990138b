"""Data-parallel training throughput on however many devices JAX sees.

Run (8 CPU devices on one host, then 1, for comparison):
  JAX_NUM_CPU_DEVICES=8 python experiments/benchmarks/data_parallel.py
  JAX_NUM_CPU_DEVICES=1 python experiments/benchmarks/data_parallel.py

Times the library's compiled multi-step (global batch split over a ``data`` mesh axis, state
replicated, BatchNorm over the global batch) and prints img/s. On a TPU or GPU host it uses
every accelerator.
"""

from __future__ import annotations

import argparse
import time

import jax
import numpy as np

from effnet_jax.config import apply_overrides, default_config, lock
from effnet_jax.data import ArraySplit, DataSplits, dataset_info
from effnet_jax.parallel.mesh import data_placement
from effnet_jax.training.experiment import build_run
from effnet_jax.training.optim import default_hparams
from effnet_jax.training.state import create_train_state
from effnet_jax.training.steps import make_multi_step


def main():
    from effnet_jax.host import tune_cpu

    # As the effnet-jax CLI runs: glibc huge pages for XLA:CPU scratch, per-thread malloc arenas.
    tune_cpu(many_steps_per_call=True)
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch-size", type=int, default=128, help="global batch")
    parser.add_argument("--steps", type=int, default=10, help="steps per dispatch")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--dtype", default="float32")
    args = parser.parse_args()
    info = dataset_info("cifar10")
    rng = np.random.default_rng(0)
    split = ArraySplit(rng.integers(0, 256, (args.batch_size, 32, 32, 3), dtype=np.uint8),
                       rng.integers(0, 10, (args.batch_size,)).astype(np.int32))
    config = apply_overrides(lock(default_config()), [
        "data.name=cifar10", "data.validation_size=0", f"train.batch_size={args.batch_size}",
        f"train.eval_batch_size={args.batch_size}", f"model.options.dtype='{args.dtype}'"])
    run = build_run(config, DataSplits(info, split, None, split))
    placement = data_placement(args.batch_size, args.batch_size)
    repl = placement.replicated
    state = create_train_state(run.model, run.tx, jax.random.PRNGKey(0), run.sample, repl)
    step = jax.jit(make_multi_step(run.train_step), in_shardings=(repl, placement.batches, repl),
                   out_shardings=(repl, repl), donate_argnums=0)
    chunk = placement.put({"image": np.broadcast_to(split.images, (args.steps, *split.images.shape)).copy(),
                           "label": np.broadcast_to(split.labels, (args.steps, args.batch_size)).copy()})
    hparams = jax.device_put(default_hparams(config), repl)
    started = time.perf_counter()
    state, metrics = step(state, chunk, hparams)
    jax.block_until_ready(metrics)
    compile_s = time.perf_counter() - started
    best = 0.0
    for _ in range(args.repeats):
        started = time.perf_counter()
        state, metrics = step(state, chunk, hparams)
        jax.block_until_ready(metrics)
        best = max(best, args.steps * args.batch_size / (time.perf_counter() - started))
    device = jax.devices()[0]
    print(f"| {placement.size} x {device.platform} ({device.device_kind}) | {args.batch_size} | "
          f"{args.batch_size // placement.size} | {best:,.0f} | {compile_s:.1f} |")


if __name__ == "__main__":
    main()
