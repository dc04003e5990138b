"""A researcher's own training loop against the PyTorch seed network, each in its own process.

Run:
  python experiments/benchmarks/research_loop.py [--batch-size 128] [--rounds 3] [--seconds 8]

Three effnet-jax paths, beside PyTorch eager on the same batch (``vs_pytorch.image_batch``: the
same uint8 images, normalised, for every worker): the CLI's own step
(``effnet-jax train``: 20 steps per ``lax.scan`` dispatch, glibc huge pages); the README's loop
on the library's multi-step API (``make_train_step`` + ``make_multi_step``, 20 steps per
dispatch, no environment variables); and the plain script a researcher writes from the README
(the public ``effnet_jax.EffNet()``, ``optax.adam(1e-3)``, one ``jax.jit`` step of
``value_and_grad`` per call, no environment variables). The last two run as the README's one
line of tuning leaves them (``effnet_jax.tune_cpu(many_steps_per_call=False)``: glibc's allocator
keeps XLA:CPU's scratch mapped, ``effnet_jax.host``, and the compiler's leftover heap holes are
sealed after each compile, ``effnet_jax.heap``) and without the sealing
(``EFFNET_JAX_NO_HEAP_SEAL=1``); the plain script also with all that tuning switched off
(``EFFNET_JAX_NO_ALLOCATOR_TUNING=1``). Workers run in
turn, round after round; the table shows medians of train images/s, ratios to PyTorch eager and
each worker's peak resident memory, and the median and range of each round's ratio (a worker's
rate over PyTorch's in the same round, so that a slow drift of the machine's speed cancels) and
the largest share of the machine's CPU time its hypervisor took (steal) during any of its rounds.
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
sys.path.insert(0, HERE)
from vs_pytorch import image_batch, jax_runner, normalized_images, torch_images  # noqa: E402 (the same images for all)


def jax_plain_script(batch_size: int):
    """A step function and its state: exactly what a research script writes."""
    import jax
    import jax.numpy as jnp
    import optax

    import effnet_jax

    model = effnet_jax.EffNet()
    images, labels, _ = image_batch("cifar10", batch_size)
    x, y = jnp.asarray(normalized_images(images, "cifar10")), jnp.asarray(labels)
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


def jax_library_steps(batch_size: int, steps_per_dispatch: int = 20):
    """The README's loop on the library's steps: ``make_train_step`` + ``make_multi_step``
    (``lax.scan`` over ``steps_per_dispatch`` steps, state donated), the public model, optax."""
    import jax
    import jax.numpy as jnp
    import numpy as np
    import optax

    import effnet_jax
    from effnet_jax.training import init_train_state, make_multi_step, make_train_step

    model, tx = effnet_jax.EffNet(), optax.adam(1e-3)
    state = init_train_state(model, tx, jax.random.key(0), jnp.zeros((1, 32, 32, 3)))
    run_steps = jax.jit(make_multi_step(make_train_step(model, tx)), donate_argnums=0)
    images, y, _ = image_batch("cifar10", batch_size)
    x = normalized_images(images, "cifar10")
    k = steps_per_dispatch
    batches = jax.device_put({"image": np.broadcast_to(x, (k, *x.shape)).copy(),
                              "label": np.broadcast_to(y, (k, *y.shape)).copy()})

    def run(n):  # n steps, rounded up to whole dispatches; returns the steps run
        nonlocal state
        dispatches = -(-n // k)
        for _ in range(dispatches):
            state, metrics = run_steps(state, batches, {})
        jax.block_until_ready(metrics)
        return dispatches * k

    run(1)  # compile
    return run


def jax_cli_path(batch_size: int):
    """``effnet-jax train``'s own step (``vs_pytorch.jax_runner``: the config's optimizer and
    preprocessing, 20 steps per dispatch); its worker starts with glibc's huge pages, as the
    command restarts itself."""
    return jax_runner(batch_size)[0]


def torch_eager(batch_size: int):
    """The PyTorch seed network's train step in eager mode."""
    import torch

    from torch_reference import SeedEffNet

    torch.manual_seed(0)
    model = SeedEffNet()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    images, labels, _ = image_batch("cifar10", batch_size)
    x, y = torch_images(images, "cifar10").contiguous(), torch.from_numpy(labels).long()  # the seed's NCHW
    loss_fn = torch.nn.CrossEntropyLoss()

    def run(n):
        for _ in range(n):
            optimizer.zero_grad(set_to_none=True)
            loss_fn(model(x), y).backward()
            optimizer.step()
        return n

    run(2)
    return run


def stolen_cpu_seconds() -> float:
    """CPU time the hypervisor has taken from this machine since boot, all CPUs (``/proc/stat``
    steal; 0 where there is none to read)."""
    try:
        with open("/proc/stat") as stat:
            return int(stat.readline().split()[8]) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return 0.0


def peak_rss_mb() -> float:
    with open("/proc/self/status") as status:
        return int(next(line for line in status if line.startswith("VmHWM")).split()[1]) / 1024


def serve(kind: str, batch_size: int) -> None:
    """Worker: answers ``S`` (seconds to measure) with a JSON line of images/s and peak RSS."""
    from effnet_jax.host import tune_cpu

    # The one line of process tuning the README gives a research script (no restart: the CLI
    # worker's huge pages come from its environment); PyTorch's worker gets it too, so that the
    # baseline runs with the same allocator.
    tune_cpu(many_steps_per_call=False)
    makers = {"cli": jax_cli_path, "steps": jax_library_steps, "plain": jax_plain_script, "torch": torch_eager}
    run = makers[WORKERS[kind][0]](batch_size)
    print("ready", flush=True)
    for line in sys.stdin:
        seconds = float(line)
        start = time.perf_counter()
        steps = run(1)
        per_step = (time.perf_counter() - start) / steps
        n = max(3, int(seconds / per_step))
        stolen, start = stolen_cpu_seconds(), time.perf_counter()
        n = run(n)
        wall = time.perf_counter() - start
        steal = (stolen_cpu_seconds() - stolen) / (wall * (os.cpu_count() or 1))
        print(json.dumps({"rate": n * batch_size / wall, "steal": steal, "peak_mb": peak_rss_mb(), "steps": steps + n}),
              flush=True)


WORKERS = {  # name: (what it runs, extra environment)
    "effnet-jax CLI path (effnet-jax train's step, huge pages)": ("cli", {"hugepages": "1"}),
    "effnet-jax library multi-step API (README loop)": ("steps", {}),
    "effnet-jax library multi-step API, heap sealing off": ("steps", {"EFFNET_JAX_NO_HEAP_SEAL": "1"}),
    "effnet-jax plain script": ("plain", {}),
    "effnet-jax plain script, heap sealing off": ("plain", {"EFFNET_JAX_NO_HEAP_SEAL": "1"}),
    "effnet-jax plain script, allocator tuning off": ("plain", {"EFFNET_JAX_NO_ALLOCATOR_TUNING": "1"}),
    "PyTorch eager": ("torch", {}),
}


def worker_env(base: dict[str, str], extra: dict[str, str]) -> dict[str, str]:
    """``base`` plus ``extra``; ``hugepages`` stands for glibc's huge-page tunable (as the CLI sets it)."""
    env = {**base, **{k: v for k, v in extra.items() if k != "hugepages"}}
    if extra.get("hugepages"):
        from effnet_jax import host

        env = host.hugepage_environment(env, host.glibc_version(), host.transparent_hugepage_mode(),
                                        malloc_arenas=host.MANY_STEPS_PER_CALL_ARENAS) or env
    return env


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
    base = {k: v for k, v in os.environ.items()
            if k not in ("GLIBC_TUNABLES", "EFFNET_JAX_NO_ALLOCATOR_TUNING", "EFFNET_JAX_NO_HEAP_SEAL")}
    workers = {}
    for name, (_, extra) in WORKERS.items():
        process = subprocess.Popen([sys.executable, __file__, "--serve", name, "--batch-size", str(args.batch_size)],
                                   stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                   env=worker_env(base, extra))
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
    torch_rows = results["PyTorch eager"]
    torch_rate = statistics.median(r["rate"] for r in torch_rows)
    print(f"\nbatch {args.batch_size}, median of {args.rounds} rounds of {args.seconds:.0f} s, one process each\n")
    print("| loop | train img/s | vs PyTorch eager | per-round ratios (median, range) | CPU stolen (max) | peak RSS MB |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, rows in results.items():
        rate = statistics.median(r["rate"] for r in rows)
        # Each round's rate over the same round's PyTorch rate: a drift in the machine's speed
        # slower than one round (~1 minute) cancels out of these.
        ratios = [r["rate"] / t["rate"] for r, t in zip(rows, torch_rows)]
        print(f"| {name} | {rate:,.0f} | {rate / torch_rate:.2f}x | {statistics.median(ratios):.2f}x "
              f"({min(ratios):.2f}-{max(ratios):.2f}) | {100 * max(r['steal'] for r in rows):.0f}% | "
              f"{max(r['peak_mb'] for r in rows):,.0f} |")


if __name__ == "__main__":
    main()
