"""Is the input pipeline ever the bottleneck? Batches/s of the pipeline alone vs the train step.

Run:
  python experiments/benchmarks/pipeline.py [--dataset fashion_mnist] [--batch-size 128]

Times, in one process: (1) host batching alone (shuffle, gather uint8 chunks), (2) the same
plus the transfer to the device, (3) the compiled train step on device-resident chunks, and
prints a table with the ratio pipeline / train step (> 1 means the pipeline keeps up).
"""

from __future__ import annotations

import argparse
import time

import jax

from effnet_jax.config import apply_overrides, default_config, lock
from effnet_jax.data.pipeline import train_chunks
from effnet_jax.training.experiment import build_run
from effnet_jax.training.optim import default_hparams
from effnet_jax.training.state import create_train_state
from effnet_jax.training.steps import make_multi_step


def rate(fn, batches_per_call: int, seconds: float = 5.0) -> float:
    """Batches per second of ``fn`` over at least ``seconds``."""
    fn()  # warm-up (compilation)
    calls, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        fn()
        calls += 1
    return calls * batches_per_call / (time.perf_counter() - start)


def main():
    from effnet_jax.host import tune_cpu

    # As the effnet-jax CLI runs: glibc huge pages for XLA:CPU scratch, per-thread malloc arenas.
    tune_cpu(many_steps_per_call=True)
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="fashion_mnist")
    parser.add_argument("--model", default="effnet")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--steps-per-dispatch", type=int, default=20)
    args = parser.parse_args()
    config = apply_overrides(lock(default_config()), [
        f"data.name={args.dataset}", f"model.name={args.model}", f"train.batch_size={args.batch_size}",
        f"train.steps_per_dispatch={args.steps_per_dispatch}", "data.validation_size=0"])
    run = build_run(config)
    k = args.steps_per_dispatch

    def host_chunks():
        return train_chunks(run.data.train, args.batch_size, 0, 0, 0, k)

    chunks = host_chunks()

    def host_only():
        nonlocal chunks
        try:
            next(chunks)
        except StopIteration:
            chunks = host_chunks()

    device_chunks = host_chunks()

    def host_and_transfer():
        nonlocal device_chunks
        try:
            jax.block_until_ready(jax.device_put(next(device_chunks)))
        except StopIteration:
            device_chunks = host_chunks()

    state = create_train_state(run.model, run.tx, jax.random.PRNGKey(0), run.sample)
    step = jax.jit(make_multi_step(run.train_step), donate_argnums=0)
    chunk = jax.device_put(next(host_chunks()))
    hparams = default_hparams(config)

    def train():
        nonlocal state
        state, metrics = step(state, chunk, hparams)
        jax.block_until_ready(metrics)

    rows = [("host batching (shuffle + gather)", rate(host_only, k)),
            ("host batching + device transfer", rate(host_and_transfer, k)),
            ("train step (compiled, on device)", rate(train, k))]
    step_rate = rows[-1][1]
    print(f"\n{args.model} on {args.dataset}, batch {args.batch_size}, {jax.devices()[0].platform}\n")
    print("| stage | batches/s | images/s | vs train step |")
    print("|---|---:|---:|---:|")
    for name, value in rows:
        print(f"| {name} | {value:,.1f} | {value * args.batch_size:,.0f} | {value / step_rate:,.1f}x |")


if __name__ == "__main__":
    main()
