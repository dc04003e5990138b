"""Every model through every training path: one step per call, the library's loop, a sweep.

Run:
  python experiments/benchmarks/model_paths.py [--models effnet baseline ...]
      [--inputs fashion_mnist cifar10] [--batch-size 128] [--seconds 2] [--rounds 3] [--members 5]
      [--jsonl FILE] [--markdown FILE]
  python experiments/benchmarks/model_paths.py --tables-from results/model_paths_*.jsonl

For each registered model and ``my_net`` (the README's own-model example: plain 3x3 ``nn.Conv``,
``nn.BatchNorm``, ReLU, max-pool, widths 32/64/128), at 28x28x1 and 32x32x3, batch 128, Adam:

* ``single``: ``jit(train_step)``, one step per call (what a research script's loop runs);
* ``loop``: ``jit(make_multi_step(train_step))``, ``train.steps_per_dispatch`` steps per call in a
  ``lax.scan`` (what ``effnet-jax train`` runs);
* ``sweep``: a ``--members`` population (what ``effnet-jax sweep`` runs, vmapped in the groups it
  chooses), in model-images/s: members x images per second, to compare with one model's rate;
* ``pytorch``: PyTorch eager of the same network where this file defines one (the seed for
  EffNet; layer-for-layer equivalents of baseline, MobileNet, ShuffleNet and my_net), NCHW.

Each framework and input runs in its own worker process (neither framework's thread pools sit
in the other's process). The three JAX paths of a model are all compiled and warmed up first,
then take turns for ``--rounds`` rounds of ``--seconds`` each (at least two calls), so that a drift
of the machine's speed (another tenant, the clock) hits every path alike; one step per call is
timed at both ends of each round (the mean), since a slow model's sweep call lasts ~50 s; each
path's figure is its median round, and its ratio to one step per call the median of the rounds'
ratios (paired: a drift between rounds does not move it).
Prints one JSON line per (model, input) with images/s (median and every round), compile seconds
and the ratios, then a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from path_tables import INPUTS, add_ratios, readme_table, table  # noqa: E402

TORCH_MODELS = ("effnet", "baseline", "mobilenet", "shufflenet", "my_net")


def timed_rate(call, images_per_call: int, seconds: float, warm_up: bool = True) -> float:
    """Images/s of ``call()`` (blocks until done) over at least ``seconds``, after a warm-up."""
    if warm_up:
        call()
    calls, start = 0, time.perf_counter()
    while calls < 2 or time.perf_counter() - start < seconds:
        call()
        calls += 1
    return calls * images_per_call / (time.perf_counter() - start)


def interleaved_rates(calls: dict, seconds: float, rounds: int, bracket: bool = False) -> dict[str, list[float]]:
    """Each path's images/s in every round, the paths taking turns within a round (all compiled
    and warmed up first), so a drift of the machine's speed hits every path alike.

    ``bracket``: the first path (the reference the others are divided by) is timed at both ends
    of every round and its round figure is the mean of the two, so a drift during a long path
    (a 5-member sweep of a slow model takes ~50 s a call) hits the reference as much as it."""
    for call, _ in calls.values():
        call()
    rates = {path: [] for path in calls}
    reference = next(iter(calls))
    for _ in range(rounds):
        for path, (call, images) in calls.items():
            rates[path].append(timed_rate(call, images, seconds, warm_up=False))
        if bracket:
            call, images = calls[reference]
            rates[reference][-1] = (rates[reference][-1] + timed_rate(call, images, seconds, warm_up=False)) / 2
    return rates


# --------------------------------------------------------------------------- JAX worker
def register_my_net():
    """The README's own-model example, registered as ``my_net``."""
    import flax.linen as nn

    import effnet_jax

    @effnet_jax.register_model("my_net")
    class MyNet(effnet_jax.ImageClassifier):
        widths: tuple[int, ...] = (32, 64, 128)

        def features(self, x, train):
            for i, width in enumerate(self.widths):
                x = nn.Conv(width, (3, 3), use_bias=False, name=f"conv_{i}")(x)
                x = nn.BatchNorm(use_running_average=not train, momentum=self.bn_momentum, name=f"bn_{i}")(x)
                x = nn.max_pool(nn.relu(x), (2, 2), (2, 2))
            return x


def chunk_run(overrides, dataset: str, batch_size: int, rng):
    """``(config, run, batches)``: the library's run of the default config with ``overrides`` on
    ``dataset``'s shape, and one chunk (``train.steps_per_dispatch`` steps) of random batches on
    the device (``[K, B, H, W, C]`` uint8 images, as the loader gives them)."""
    import jax
    import numpy as np

    from effnet_jax.config import apply_overrides, default_config, lock
    from effnet_jax.data import ArraySplit, DataSplits, dataset_info
    from effnet_jax.training.experiment import build_run

    info = dataset_info(dataset)
    config = apply_overrides(lock(default_config()), [
        f"data.name={dataset}", "data.validation_size=0", f"train.batch_size={batch_size}", *overrides])
    k = config.train.steps_per_dispatch
    split = ArraySplit(rng.integers(0, 256, (k * batch_size, *info.image_shape), dtype=np.uint8),
                       rng.integers(0, info.num_classes, (k * batch_size,)).astype(np.int32))
    run = build_run(config, DataSplits(info, split, None, split))
    batches = jax.device_put({"image": split.images.reshape(k, batch_size, *info.image_shape),
                              "label": split.labels.reshape(k, batch_size)})
    return config, run, batches


def jax_rows(models, dataset: str, batch_size: int, seconds: float, members: int, rounds: int):
    """Yields one dict per model: single / loop / sweep images/s (the median of the rounds, and
    every round's) and compile seconds."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    from effnet_jax.sweeps.population import init_population, make_population_multi_step
    from effnet_jax.sweeps.runner import choose_group_size, stacked_hparams
    from effnet_jax.sweeps.spec import Member
    from effnet_jax.training.optim import default_hparams
    from effnet_jax.training.state import create_train_state
    from effnet_jax.training.steps import make_multi_step

    register_my_net()
    rng = np.random.default_rng(0)
    for name in models:
        own_widths = ["model.options.widths=(32,64,128)"] if name == "my_net" else []  # the README's, not the preset's
        config, run, batches = chunk_run([f"model.name={name}", *own_widths], dataset, batch_size, rng)
        k = config.train.steps_per_dispatch
        one = jax.tree.map(lambda a: a[0], batches)
        hparams = default_hparams(config, run.model.dropout_rate)
        row = {"model": name, "input": dataset, "steps_per_dispatch": k,
               "params": int(sum(x.size for x in jax.tree.leaves(
                   jax.eval_shape(lambda: run.model.init(jax.random.PRNGKey(0), run.sample))["params"])))}

        calls = {}

        def compile_path(path, step, state, batch, step_hparams, images):
            started = time.perf_counter()
            compiled = jax.jit(step, donate_argnums=0).lower(state, batch, step_hparams).compile()
            row[f"{path}_compile_s"] = round(time.perf_counter() - started, 2)
            holder = [state]

            def call():
                holder[0], metrics = compiled(holder[0], batch, step_hparams)
                jax.block_until_ready(metrics)
            calls[path] = (call, images)

        sweep_members = [Member(i, i, i, {"learning_rate": 1e-3 * (1 + i)}) for i in range(members)]
        member_hparams = stacked_hparams(run, sweep_members)
        fresh_state = lambda: create_train_state(run.model, run.tx, jax.random.PRNGKey(0), run.sample)
        compile_path("single", run.train_step, fresh_state(), one, hparams, batch_size)
        compile_path("loop", make_multi_step(run.train_step), fresh_state(), batches, hparams, k * batch_size)
        keys = jnp.stack([jax.random.PRNGKey(i) for i in range(members)])
        population = jax.jit(init_population, static_argnums=(0, 1))(run.model, run.tx, keys, run.sample)
        group = choose_group_size(run, members)
        compile_path("sweep", make_population_multi_step(run.train_step, False, group), population, batches,
                     member_hparams, members * k * batch_size)  # model-images: every member trains on the chunk
        for path, rates in interleaved_rates(calls, seconds, rounds, bracket=True).items():
            row[f"{path}_img_per_s"] = round(statistics.median(rates), 1)
            row[f"{path}_rounds"] = [round(rate, 1) for rate in rates]
        row["sweep_group"] = group
        yield row


# --------------------------------------------------------------------------- PyTorch worker
def torch_model(name: str, shape):
    """PyTorch eager equivalents of the registered networks (LeakyReLU(0.3) then BatchNorm after
    every convolution, as ours; Flax momentum 0.99 is PyTorch's 0.01)."""
    import torch
    from torch import nn

    sys.path.insert(0, os.path.join(HERE, "..", "..", "tests"))
    from torch_reference import SeedEffNet

    height, _, channels = shape
    post = lambda c: [nn.LeakyReLU(0.3), nn.BatchNorm2d(c, momentum=0.01)]
    conv = lambda i, o, k=3, s=1, g=1: nn.Conv2d(i, o, k, s, padding=k // 2, groups=g, bias=False)
    if name == "effnet":
        return SeedEffNet(in_channels=channels, feature_hw=height // 8, momentum=0.01)
    widths = (32, 64, 128) if name == "my_net" else (64, 128, 256)
    layers, c = [], channels
    if name in ("baseline", "my_net"):
        for w in widths:
            norm = [nn.BatchNorm2d(w, momentum=0.01), nn.ReLU()] if name == "my_net" else post(w)
            layers += [conv(c, w), *norm, nn.MaxPool2d(2)]
            c = w
    else:
        layers += [conv(c, widths[0]), *post(widths[0]), nn.MaxPool2d(2)]
        c = widths[0]
        for w in widths[1:]:
            if name == "mobilenet":
                layers += [conv(c, c, 3, 2, c), *post(c), conv(c, w, 1), *post(w)]
            else:  # shufflenet: 4-group 1x1, shuffle, depthwise 3x3 stride 2, 4-group 1x1
                inner = -(-(-(-w // 4)) // 4) * 4
                layers += [conv(c, inner, 1, 1, 4), *post(inner), nn.ChannelShuffle(4),
                           conv(inner, inner, 3, 2, inner), *post(inner), conv(inner, w, 1, 1, 4), *post(w)]
            c = w
    trunk = nn.Sequential(*layers)
    with torch.no_grad():
        flat = trunk(torch.zeros(1, channels, *shape[:2])).numel()
    return nn.Sequential(trunk, nn.Flatten(), nn.Linear(flat, 10))


def torch_rows(models, dataset: str, batch_size: int, seconds: float):
    """Yields one dict per model PyTorch has here: eager training images/s."""
    import numpy as np
    import torch

    torch.set_num_threads(os.cpu_count() or 1)
    shape = INPUTS[dataset]
    rng = np.random.default_rng(0)
    x = torch.from_numpy(rng.random((batch_size, shape[2], *shape[:2]), dtype=np.float32))
    y = torch.from_numpy(rng.integers(0, 10, batch_size))
    for name in models:
        if name not in TORCH_MODELS:
            continue
        torch.manual_seed(0)
        model = torch_model(name, shape).train()
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
        loss_fn = torch.nn.CrossEntropyLoss()

        def call():
            optimizer.zero_grad(set_to_none=True)
            loss_fn(model(x), y).backward()
            optimizer.step()
        yield {"model": name, "input": dataset, "pytorch_img_per_s": round(timed_rate(call, batch_size, seconds), 1),
               "pytorch_params": sum(p.numel() for p in model.parameters())}


# --------------------------------------------------------------------------- driver
def worker(framework: str, models, dataset: str, args) -> list[dict]:
    """Runs one framework's rows in a fresh process (``--worker``) and returns them."""
    command = [sys.executable, __file__, "--worker", framework, "--inputs", dataset, "--models", *models,
               "--batch-size", str(args.batch_size), "--seconds", str(args.seconds), "--members", str(args.members),
               "--rounds", str(args.rounds)]
    out = subprocess.run(command, check=True, stdout=subprocess.PIPE, text=True).stdout
    return [json.loads(line) for line in out.splitlines() if line.startswith("{")]


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``), or the platform's description."""
    try:
        with open("/proc/cpuinfo") as f:
            return next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


def commit() -> str:
    """The checkout's short commit (``+dirty`` with uncommitted changes), or ``unknown``."""
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=HERE, capture_output=True, text=True,
                              check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=HERE,
                               capture_output=True, text=True).stdout.strip()
        return head + ("+dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def emit(row: dict, jsonl: str | None) -> None:
    """Prints ``row`` as one JSON line, and appends it to ``jsonl`` if given."""
    print(json.dumps(row), flush=True)
    if jsonl:
        with open(jsonl, "a") as f:
            f.write(json.dumps(row) + "\n")


def publish(text: str, markdown: str | None) -> None:
    """Prints the table ``text``, and writes it to ``markdown`` if given."""
    print("\n" + text)
    if markdown:
        with open(markdown, "w") as f:
            f.write(text + "\n")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=None, help="default: every registered model and my_net")
    parser.add_argument("--inputs", nargs="+", default=list(INPUTS), choices=list(INPUTS))
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--seconds", type=float, default=2.0, help="timed seconds per path and round")
    parser.add_argument("--rounds", type=int, default=3, help="rounds in which the JAX paths take turns")
    parser.add_argument("--members", type=int, default=5, help="sweep population size")
    parser.add_argument("--jsonl", help="also append the JSON lines to this file")
    parser.add_argument("--markdown", help="also write the table to this file")
    parser.add_argument("--tables-from", nargs="+", metavar="JSONL",
                        help="measure nothing: print both tables of these results files' rows")
    parser.add_argument("--worker", choices=("jax", "torch"), help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.tables_from:
        rows = []
        for path in args.tables_from:
            with open(path) as f:
                rows += [add_ratios(json.loads(line)) for line in f if line.startswith("{")]
        stamps = sorted({f"batch {r['batch_size']}, {r['members']} members; {r['date']}, {r['cpu']} "
                         f"({r['cores']} cores), commit {r['commit']}" for r in rows})
        print(table(rows, "Training images/s, Adam; " + "; ".join(stamps)))
        print("\n" + readme_table(rows))
        return

    if args.worker:
        if args.worker == "jax":
            from effnet_jax.host import tune_cpu

            tune_cpu(many_steps_per_call=True)  # as the effnet-jax CLI runs
            rows = jax_rows(args.models, args.inputs[0], args.batch_size, args.seconds, args.members, args.rounds)
        else:
            rows = torch_rows(args.models, args.inputs[0], args.batch_size, args.seconds)
        for row in rows:
            print(json.dumps(row), flush=True)
        return

    if args.models is None:
        from effnet_jax.models import list_models

        args.models = [*list_models(), "my_net"]
    stamp = {"date": time.strftime("%Y-%m-%d"), "cpu": cpu_model(), "cores": os.cpu_count(), "commit": commit(),
             "batch_size": args.batch_size, "members": args.members}
    merged = []
    for dataset in args.inputs:
        ours = worker("jax", args.models, dataset, args)
        theirs = {r["model"]: r for r in worker("torch", args.models, dataset, args)}
        for row in ours:
            row.update(theirs.get(row["model"], {}), **stamp)
            add_ratios(row)
            emit(row, args.jsonl)
            merged.append(row)
    header = (f"Training images/s, batch {args.batch_size}, Adam; {stamp['date']}, {stamp['cpu']} "
              f"({stamp['cores']} cores), commit {stamp['commit']}; sweep: {args.members} members; "
              f"JAX paths: median of {args.rounds} interleaved rounds of {args.seconds:g} s")
    publish(table(merged, header) + "\n\n" + readme_table(merged), args.markdown)


if __name__ == "__main__":
    main()
