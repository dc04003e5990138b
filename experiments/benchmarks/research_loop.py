"""A researcher's own training loop against the PyTorch seed network, each in its own process.

Run:
  python experiments/benchmarks/research_loop.py [--batch-size 128] [--rounds 3] [--seconds 8]

The effnet-jax side is the plain script a researcher writes from the README: the public
``effnet_jax.EffNet()``, ``optax.adam(1e-3)``, one ``jax.jit`` step of ``value_and_grad`` per
call, no environment variables, no library loop. It runs as imported (the library tunes
glibc's allocator at import on CPU hosts, ``effnet_jax.host``) and with that tuning switched off
(``EFFNET_JAX_NO_ALLOCATOR_TUNING=1``), beside PyTorch eager on the same batch. Workers run in
turn, round after round; the table shows medians of train images/s, ratios to PyTorch eager and
each worker's peak resident memory.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "tests"))  # the tests' PyTorch seed network


def jax_plain_script(batch_size: int):
    """A step function and its state: exactly what a research script writes."""
    import jax
    import jax.numpy as jnp
    import numpy as np
    import optax

    import effnet_jax

    model = effnet_jax.EffNet()
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=(batch_size, 32, 32, 3)), jnp.float32)
    y = jnp.asarray(rng.integers(0, 10, batch_size))
    variables = model.init(jax.random.key(0), x[:1])
    tx = optax.adam(1e-3)
    state = (variables["params"], variables["batch_stats"], tx.init(variables["params"]))

    @jax.jit
    def train_step(state, x, y):
        params, batch_stats, opt_state = state

        def loss_fn(params):
            logits, updates = model.apply({"params": params, "batch_stats": batch_stats}, x, train=True,
                                          mutable=["batch_stats"])
            return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean(), updates["batch_stats"]

        (loss, batch_stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return (optax.apply_updates(params, updates), batch_stats, opt_state), loss

    def run(n):
        nonlocal state
        for _ in range(n):
            state, loss = train_step(state, x, y)
        loss.block_until_ready()
        return n

    run(2)  # compile
    return run


def torch_eager(batch_size: int):
    """The PyTorch seed network's train step in eager mode."""
    import torch

    from torch_reference import SeedEffNet

    torch.manual_seed(0)
    model = SeedEffNet()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    x, y = torch.randn(batch_size, 3, 32, 32), torch.randint(0, 10, (batch_size,))
    loss_fn = torch.nn.CrossEntropyLoss()

    def run(n):
        for _ in range(n):
            optimizer.zero_grad(set_to_none=True)
            loss_fn(model(x), y).backward()
            optimizer.step()
        return n

    run(2)
    return run


def peak_rss_mb() -> float:
    with open("/proc/self/status") as status:
        return int(next(line for line in status if line.startswith("VmHWM")).split()[1]) / 1024


def serve(kind: str, batch_size: int) -> None:
    """Worker: answers ``S`` (seconds to measure) with a JSON line of images/s and peak RSS."""
    run = jax_plain_script(batch_size) if kind.startswith("effnet-jax") else torch_eager(batch_size)
    print("ready", flush=True)
    for line in sys.stdin:
        seconds = float(line)
        start = time.perf_counter()
        steps = run(1)
        per_step = time.perf_counter() - start
        n = max(3, int(seconds / per_step))
        start = time.perf_counter()
        run(n)
        rate = n * batch_size / (time.perf_counter() - start)
        print(json.dumps({"rate": rate, "peak_mb": peak_rss_mb(), "steps": steps + n}), flush=True)


WORKERS = {
    "effnet-jax plain script": {},
    "effnet-jax plain script, allocator tuning off": {"EFFNET_JAX_NO_ALLOCATOR_TUNING": "1"},
    "PyTorch eager": {},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--serve", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve, args.batch_size)
        return
    base = {k: v for k, v in os.environ.items() if k not in ("GLIBC_TUNABLES", "EFFNET_JAX_NO_ALLOCATOR_TUNING")}
    workers = {}
    for name, extra in WORKERS.items():
        process = subprocess.Popen([sys.executable, __file__, "--serve", name, "--batch-size", str(args.batch_size)],
                                   stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env={**base, **extra})
        assert process.stdout.readline().strip() == "ready"
        workers[name] = process
    results = {name: [] for name in workers}
    for _ in range(args.rounds):
        for name, process in workers.items():
            time.sleep(1.0)  # let the previous worker's threads go idle
            process.stdin.write(f"{args.seconds}\n")
            process.stdin.flush()
            results[name].append(json.loads(process.stdout.readline()))
    for process in workers.values():
        process.stdin.close()
        process.wait()
    torch_rate = statistics.median(r["rate"] for r in results["PyTorch eager"])
    print(f"\nbatch {args.batch_size}, median of {args.rounds} rounds of {args.seconds:.0f} s, one process each\n")
    print("| loop | train img/s | vs PyTorch eager | peak RSS MB |")
    print("|---|---:|---:|---:|")
    for name, rows in results.items():
        rate = statistics.median(r["rate"] for r in rows)
        print(f"| {name} | {rate:,.0f} | {rate / torch_rate:.2f}x | {max(r['peak_mb'] for r in rows):,.0f} |")


if __name__ == "__main__":
    main()
