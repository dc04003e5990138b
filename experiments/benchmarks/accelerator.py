"""Which implementation and dtype to use on this backend, and what a vmapped sweep buys there.

Run (under 5 minutes on one GPU; ``--quick`` is a CPU smoke run of the same code):
  python experiments/benchmarks/accelerator.py [--batch-size 128] [--members 1 8 32]
      [--seconds 3] [--markdown FILE]

On the default JAX backend (CPU, GPU or TPU) it prints one table:

1. Train and inference images/s of the seed EffNet (32x32x3, Adam, batch 128): effnet-jax's
   ``fast`` and ``xla`` implementations in float32 and bfloat16, and the PyTorch seed network in
   eager mode on the same device (CUDA where PyTorch sees a GPU; not on a TPU).
2. A vmapped sweep of 1, 8 and 32 members (one compiled program, ``implementation="auto"``)
   against the same members trained one after another, in model-images/s (members x images/s).

``implementation="auto"`` picks ``fast`` on CPU and ``xla`` on GPU/TPU; the first table is the
evidence to revisit that choice on a new backend.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")  # leave GPU memory to PyTorch too
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from vs_pytorch import jax_runner, rate, torch_runner  # noqa: E402


def torch_on_this_device(backend: str) -> bool:
    """PyTorch runs on the same device: on CPU, or on a GPU that PyTorch sees as CUDA."""
    try:
        import torch
    except ImportError:
        return False
    return backend == "cpu" or (backend == "gpu" and torch.cuda.is_available())


def population_runner(batch_size: int, members: int, steps_per_dispatch: int):
    """(train_fn, compile_seconds): ``members`` EffNets advanced by one vmapped program (the
    sweep's ``make_population_multi_step``, all members in one vmap), on shared batches."""
    import jax
    import numpy as np

    from effnet_jax.config import apply_overrides, default_config, lock
    from effnet_jax.data import ArraySplit, DataSplits, dataset_info
    from effnet_jax.sweeps.population import init_population, make_population_multi_step
    from effnet_jax.training.experiment import build_run
    from effnet_jax.training.optim import default_hparams

    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (batch_size, 32, 32, 3), dtype=np.uint8)
    labels = rng.integers(0, 10, (batch_size,)).astype(np.int32)
    split = ArraySplit(images, labels)
    config = apply_overrides(lock(default_config()), ["data.name=cifar10", "data.validation_size=0",
                                                      f"train.batch_size={batch_size}"])
    run = build_run(config, DataSplits(dataset_info("cifar10"), split, None, split))
    keys = jax.random.split(jax.random.PRNGKey(0), members)
    population = jax.jit(init_population, static_argnums=(0, 1))(run.model, run.tx, keys, run.sample)
    hparams = jax.tree.map(lambda x: np.full((members,), x, np.float32), default_hparams(config))
    k = steps_per_dispatch
    chunk = jax.device_put({"image": np.broadcast_to(images, (k, *images.shape)).copy(),
                            "label": np.broadcast_to(labels, (k, *labels.shape)).copy()})
    steps = jax.jit(make_population_multi_step(run.train_step, False, members), donate_argnums=0)
    started = time.perf_counter()
    population, metrics = steps(population, chunk, hparams)
    jax.block_until_ready(metrics)
    compile_s = time.perf_counter() - started

    def train(n):
        nonlocal population
        dispatches = -(-n // k)
        for _ in range(dispatches):
            population, m = steps(population, chunk, hparams)
        jax.block_until_ready(m)
        return dispatches * k

    return train, compile_s


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--members", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--seconds", type=float, default=3.0, help="measuring time per number")
    parser.add_argument("--steps-per-dispatch", type=int, default=20)
    parser.add_argument("--quick", action="store_true", help="a CPU smoke run: batch 16, members 1 2, 0.2 s")
    parser.add_argument("--markdown", help="also write the table to this file")
    args = parser.parse_args()
    if args.quick:
        args.batch_size, args.members, args.seconds, args.steps_per_dispatch = 16, [1, 2], 0.2, 2

    import jax

    backend, device = jax.default_backend(), jax.devices()[0].device_kind
    from effnet_jax.models.base import resolve_implementation

    batch, seconds, k = args.batch_size, args.seconds, args.steps_per_dispatch
    lines = [f"# effnet-jax on {jax.device_count()} x {device} ({backend}), batch {batch}, jax {jax.__version__}",
             "", f"`implementation=\"auto\"` here: `{resolve_implementation('auto')}`.", "",
             "| implementation | dtype | train img/s | inference img/s | vs PyTorch eager (train / inference) | compile s |",
             "|---|---|---:|---:|---:|---:|"]
    measured = []
    for implementation in ("fast", "xla"):
        for dtype in ("float32", "bfloat16"):
            train, infer, compile_s = jax_runner(batch, dtype, k, implementation)
            measured.append((f"effnet-jax {implementation}", dtype, rate(train, batch, seconds, k),
                             rate(infer, batch, seconds), compile_s))
            print(measured[-1], flush=True)
    base = None
    if torch_on_this_device(backend):
        train, infer, compile_s = torch_runner(batch, compiled=False)
        base = ("PyTorch eager", "float32", rate(train, batch, seconds), rate(infer, batch, seconds), compile_s)
        measured.append(base)
    for name, dtype, train_rate, infer_rate, compile_s in measured:
        ratio = "n/a" if base is None else f"{train_rate / base[2]:.2f}x / {infer_rate / base[3]:.2f}x"
        lines.append(f"| {name} | {dtype} | {train_rate:,.0f} | {infer_rate:,.0f} | {ratio} | {compile_s:.1f} |")

    train, _, _ = jax_runner(batch, "float32", k, "auto")
    sequential = rate(train, batch, seconds, k)  # members one after another: the single run's rate
    lines += ["", f"Sweep (`implementation=\"{resolve_implementation('auto')}\"`, float32): model-images/s "
              "(members x images/s) of one vmapped program vs the same members trained one after another.", "",
              "| members | one after another | one vmap | ratio | compile s |", "|---:|---:|---:|---:|---:|"]
    for members in args.members:
        train, compile_s = population_runner(batch, members, k)
        vmapped = members * rate(train, batch, seconds, k)
        lines.append(f"| {members} | {sequential:,.0f} | {vmapped:,.0f} | {vmapped / sequential:.2f}x | {compile_s:.1f} |")
        print(lines[-1], flush=True)
    table = "\n".join(lines)
    print("\n" + table)
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(table + "\n")


if __name__ == "__main__":
    main()
