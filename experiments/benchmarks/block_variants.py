"""What a researcher's change to the EffNet block costs in training throughput.

Run:
  python experiments/benchmarks/block_variants.py [--seconds 3] [--rounds 5] [--batch-size 128]
      [--input fashion_mnist|cifar10] [--jsonl FILE] [--markdown FILE]

The seed EffNet on Fashion-MNIST's shape (28x28x1; ``--input cifar10``: 32x32x3), batch 128,
Adam, through the library's loop (``make_multi_step`` of ``build_run``'s step:
``train.steps_per_dispatch`` steps per call, what ``effnet-jax train`` runs), with the block
changed the usual ways:

* ``stock``: the paper's block (LeakyReLU 0.3, 3-tap depthwise kernels);
* ``gelu``: ``model.options.act=gelu``;
* ``se``: ``model.options.se_ratio=0.25`` (squeeze-excite before the projection);
* ``gelu+se``: both;
* ``kernel5``: ``model.options.kernel_size=5``;
* ``subclass``: an ``EffNetBlock`` subclass whose ``__call__`` adds a learned per-channel scale
  to the stock block (``super().__call__``): not the declared block, so it runs layer by layer.

All variants are compiled first, then take turns for ``--rounds`` rounds (a drift of the
machine's speed hits each alike); each figure is the median round. PyTorch eager trains the seed
network (``tests/torch_reference.py``) on the same shape in its own process, for reference.
On a grey image the stock block's first layers run in a closed form that only a LeakyReLU or a
ReLU allows (``effnet_jax/fast/one_channel.py``); a colour image shows the changes without it.
Prints one JSON line per variant (``variant``, ``img_per_s``, ``ratio_to_stock``, what computed
it, every round), then a Markdown table.
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
sys.path.insert(0, HERE)
from model_paths import chunk_run, commit, cpu_model, emit, interleaved_rates, publish, torch_rows  # noqa: E402
from path_tables import ratio  # noqa: E402

VARIANTS = {
    "stock": [],
    "gelu": ["model.options.act=gelu"],
    "se": ["model.options.se_ratio=0.25"],
    "gelu+se": ["model.options.act=gelu", "model.options.se_ratio=0.25"],
    "kernel5": ["model.options.kernel_size=5"],
    "subclass": ["model.name=effnet_layer_scale"],
}
INPUTS = {"fashion_mnist": "28x28x1", "cifar10": "32x32x3"}


def register_subclass():
    """``effnet_layer_scale``: EffNet of a block subclass that changes ``__call__``."""
    from typing import Any

    import flax.linen as nn
    import jax.numpy as jnp

    import effnet_jax
    from effnet_jax.models import EffNet, EffNetBlock

    class LayerScaleBlock(EffNetBlock):
        @nn.compact
        def __call__(self, x, train: bool):
            x = super().__call__(x, train)
            return x * self.param("layer_scale", lambda key, shape: jnp.ones(shape), (self.features,))

    @effnet_jax.register_model("effnet_layer_scale")
    class EffNetLayerScale(EffNet):
        block: Any = LayerScaleBlock

    return EffNetLayerScale


def jax_rows(dataset: str, batch_size: int, seconds: float, rounds: int) -> list[dict]:
    """One dict per variant: the loop's images/s (median and rounds), compile seconds, kernels."""
    import jax
    import numpy as np

    from effnet_jax.training.optim import default_hparams
    from effnet_jax.training.state import create_train_state
    from effnet_jax.training.steps import make_multi_step

    register_subclass()
    rng = np.random.default_rng(0)
    rows, calls = {}, {}
    for variant, overrides in VARIANTS.items():
        config, run, batches = chunk_run(["model.name=effnet", *overrides], dataset, batch_size, rng)
        k = config.train.steps_per_dispatch
        hparams = default_hparams(config, run.model.dropout_rate)
        state = create_train_state(run.model, run.tx, jax.random.PRNGKey(0), run.sample)
        started = time.perf_counter()
        compiled = jax.jit(make_multi_step(run.train_step), donate_argnums=0).lower(state, batches, hparams).compile()
        rows[variant] = {"variant": variant, "overrides": overrides, "kernels": run.kernels,
                         "params": int(sum(x.size for x in jax.tree.leaves(state.params))),
                         "steps_per_dispatch": k, "compile_s": round(time.perf_counter() - started, 2)}
        holder = [state]

        def call(compiled=compiled, holder=holder, batches=batches, hparams=hparams):
            holder[0], metrics = compiled(holder[0], batches, hparams)
            jax.block_until_ready(metrics)
        calls[variant] = (call, k * batch_size)
    for variant, rates in interleaved_rates(calls, seconds, rounds).items():
        rows[variant]["img_per_s"] = round(statistics.median(rates), 1)
        rows[variant]["rounds"] = [round(rate, 1) for rate in rates]
    return list(rows.values())


def worker(framework: str, args) -> list[dict]:
    """One framework's rows from a fresh process (neither's thread pools in the other's)."""
    command = [sys.executable, __file__, "--worker", framework, "--batch-size", str(args.batch_size),
               "--input", args.input, "--seconds", str(args.seconds), "--rounds", str(args.rounds)]
    out = subprocess.run(command, check=True, stdout=subprocess.PIPE, text=True).stdout
    return [json.loads(line) for line in out.splitlines() if line.startswith("{")]


def table(rows, torch_rate, header: str) -> str:
    """The Markdown table of the variants."""
    lines = [header, "",
             "| variant | what computes the block | img/s | / stock (rounds) | / PyTorch eager (seed) | params | "
             "compile (s) |", "|---|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['variant']} | {r['kernels']} | {r['img_per_s']:,.0f} | {r['ratio_to_stock']:.2f}x "
                     f"({min(r['ratio_to_stock_rounds']):.2f}-{max(r['ratio_to_stock_rounds']):.2f}) | "
                     f"{r['ratio_to_pytorch']:.2f}x | {r['params']:,} | {r['compile_s']:.1f} |")
    lines.append(f"| PyTorch eager, seed block | | {torch_rate:,.0f} | | 1.00x | | |")
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--input", choices=tuple(INPUTS), default="fashion_mnist",
                        help="the dataset whose image shape to train on")
    parser.add_argument("--seconds", type=float, default=3.0, help="timed seconds per variant and round")
    parser.add_argument("--rounds", type=int, default=5, help="rounds in which the variants take turns")
    parser.add_argument("--jsonl", help="also append the JSON lines to this file")
    parser.add_argument("--markdown", help="also write the table to this file")
    parser.add_argument("--worker", choices=("jax", "torch"), help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.worker == "jax":
        from effnet_jax.host import tune_cpu

        tune_cpu(many_steps_per_call=True)  # as the effnet-jax CLI runs
        rows = jax_rows(args.input, args.batch_size, args.seconds, args.rounds)
    elif args.worker == "torch":
        rows = torch_rows(["effnet"], args.input, args.batch_size, args.seconds * args.rounds)
    if args.worker:
        for row in rows:
            print(json.dumps(row), flush=True)
        return

    stamp = {"date": time.strftime("%Y-%m-%d"), "cpu": cpu_model(), "cores": os.cpu_count(), "commit": commit(),
             "batch_size": args.batch_size, "input": INPUTS[args.input]}
    rows = worker("jax", args)
    torch_rate = worker("torch", args)[0]["pytorch_img_per_s"]
    stock = rows[0]
    for row in rows:
        row.update(stamp, pytorch_img_per_s=torch_rate)
        row["ratio_to_stock"] = ratio(row["img_per_s"], stock["img_per_s"])
        row["ratio_to_stock_rounds"] = [ratio(a, b) for a, b in zip(row["rounds"], stock["rounds"])]
        row["ratio_to_pytorch"] = ratio(row["img_per_s"], torch_rate)
        emit(row, args.jsonl)
    header = (f"EffNet block variants, training images/s through the library's loop, {stamp['input']}, batch "
              f"{args.batch_size}, Adam; {stamp['date']}, {stamp['cpu']} ({stamp['cores']} cores), commit "
              f"{stamp['commit']}; median of {args.rounds} interleaved rounds of {args.seconds:g} s")
    publish(table(rows, torch_rate, header), args.markdown)


if __name__ == "__main__":
    main()
