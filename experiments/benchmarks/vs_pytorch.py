"""effnet-jax against the PyTorch seed network: training and inference throughput, side by side.

Run:
  python experiments/benchmarks/vs_pytorch.py [--batch-sizes 32 128 256] [--rounds 5]
      [--markdown experiments/benchmarks/results_cpu.md]

At each batch size (32x32x3 images, or 28x28x1 with ``--input fashion_mnist``; 10 classes, Adam;
the same uint8 images for every implementation, Fashion-MNIST's real ones where Debian's copy
is installed: ``image_batch``) it times the effnet-jax compiled train
step and inference, the tests' PyTorch seed network in eager mode (the seed's NCHW tensors, and
channels_last, the layout NHWC data permuted to NCHW has, which PyTorch's CPU convolutions run
1.4-1.8x faster), and with ``torch.compile`` where it works. Each implementation lives in its own worker process (so neither framework's
thread pools or allocator sit in the other's process), all started before measuring; the
driver then measures them in turn, round after round, so machine noise hits all alike. It
reports images/s (median over rounds), the ratio to PyTorch eager, compile (first call) time,
and peak memory (device statistics on accelerators; on CPU the worker's peak resident memory),
and writes a Markdown table. On a GPU it runs PyTorch on CUDA too.

Every worker runs with the same environment: by default with glibc's huge pages for large
allocations (``effnet_jax.host``, as the ``effnet-jax`` CLI runs), ``--no-hugepages`` without;
and every worker tunes glibc's allocator on CPU hosts (``effnet_jax.host.tune_allocator``, as
``effnet_jax.tune_cpu`` does): PyTorch gains from that too (28x28x1, batch 128: ~870 vs ~780 img/s), so the
baseline runs at its best. On 1-channel images the "NCHW" input is channels_last as well:
with one channel both layouts are the same bytes, and PyTorch takes the strides of the
permuted NHWC data as channels_last (on contiguous ``randn`` it ran ~1.8x slower).
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
SETTLE_SECONDS = 1.0  # pause between frameworks: OpenMP threads spin a while after PyTorch ops
sys.path.insert(0, os.path.join(HERE, "..", "..", "tests"))  # the tests' PyTorch seed network


INPUTS = {"cifar10": (32, 32, 3), "fashion_mnist": (28, 28, 1)}  # --input: the image shape of a dataset


def image_batch(dataset: str, batch_size: int):
    """``(images, labels, source)``: the batch every framework is fed, as uint8 NHWC images.

    Fashion-MNIST's first ``batch_size`` training images where Debian's copy is installed (never
    a download), else uniform random uint8 images of the dataset's shape. Both frameworks
    normalise the same bytes (effnet-jax in its step, PyTorch as its loop does); PyTorch gets
    them as NHWC data permuted to NCHW, as a data loader gives them, since its speed depends on
    the strides it is fed (see the module docstring).
    """
    import numpy as np

    from effnet_jax.data.idx import DEBIAN_FASHION_MNIST_DIR, load_idx_split

    source = image_source(dataset)
    if source.startswith("real"):
        images, labels = load_idx_split(DEBIAN_FASHION_MNIST_DIR, "train")
        return images[:batch_size], labels[:batch_size].astype(np.int32), source
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (batch_size, *INPUTS[dataset]), dtype=np.uint8)
    return images, rng.integers(0, 10, (batch_size,)).astype(np.int32), source


def image_source(dataset: str) -> str:
    """What ``image_batch`` feeds for ``dataset``: real Fashion-MNIST images or random bytes."""
    from effnet_jax.data.idx import DEBIAN_FASHION_MNIST_DIR, idx_files_present

    real = dataset == "fashion_mnist" and idx_files_present(DEBIAN_FASHION_MNIST_DIR)
    return "real fashion_mnist images" if real else "random uint8 images"


def normalized_images(images, dataset: str):
    """uint8 NHWC ``images`` scaled to [0, 1] and normalised with the dataset's channel statistics
    (float32 NHWC), as a research script feeds its model."""
    import numpy as np

    from effnet_jax.data import dataset_info

    info = dataset_info(dataset)
    return ((images.astype(np.float32) / 255 - np.float32(info.mean)) / np.float32(info.std)).astype(np.float32)


def torch_images(images, dataset: str):
    """``normalized_images`` as the PyTorch loops feed them: permuted to NCHW (a
    channels_last-strided view, as NHWC data gives)."""
    import torch

    return torch.from_numpy(normalized_images(images, dataset)).permute(0, 3, 1, 2)


def jax_runner(batch_size: int, dtype: str = "float32", steps_per_dispatch: int | None = None,
               implementation: str = "auto", dataset: str = "cifar10"):
    """(train_fn, infer_fn, compile_seconds) for effnet-jax at ``batch_size``: the library's own
    training path (``steps_per_dispatch`` steps per compiled ``lax.scan`` call, by default the
    training config's, with donated state), with the layer ``implementation`` given."""
    import jax
    import numpy as np

    from effnet_jax.config import apply_overrides, default_config, lock
    from effnet_jax.data import ArraySplit, DataSplits, dataset_info
    from effnet_jax.training.experiment import build_run
    from effnet_jax.training.optim import default_hparams
    from effnet_jax.training.state import create_train_state
    from effnet_jax.training.steps import make_multi_step

    info = dataset_info(dataset)
    images, labels, _ = image_batch(dataset, batch_size)
    split = ArraySplit(images, labels)
    config = apply_overrides(lock(default_config()), [
        f"data.name={dataset}", "data.validation_size=0", f"train.batch_size={batch_size}",
        f"model.options.dtype='{dtype}'", f"model.options.implementation='{implementation}'"])
    run = build_run(config, DataSplits(info, split, None, split))
    state = create_train_state(run.model, run.tx, jax.random.PRNGKey(0), run.sample)
    hparams = default_hparams(config)
    k = steps_per_dispatch or config.train.steps_per_dispatch
    chunk = jax.device_put({"image": np.broadcast_to(images, (k, *images.shape)).copy(),
                            "label": np.broadcast_to(labels, (k, *labels.shape)).copy()})
    steps = jax.jit(make_multi_step(run.train_step), donate_argnums=0)
    eval_batch = jax.device_put({"image": images, "label": labels, "mask": np.ones((batch_size,), np.float32)})
    infer = jax.jit(run.eval_step)
    started = time.perf_counter()
    state, metrics = steps(state, chunk, hparams)
    jax.block_until_ready(metrics)
    jax.block_until_ready(infer(state, eval_batch))
    compile_s = time.perf_counter() - started

    def train(n):  # n train steps, rounded up to whole dispatches; returns the steps run
        nonlocal state
        dispatches = -(-n // k)
        for _ in range(dispatches):
            state, m = steps(state, chunk, hparams)
        jax.block_until_ready(m)
        return dispatches * k

    def inference(n):
        for _ in range(n):
            out = infer(state, eval_batch)
        jax.block_until_ready(out)
        return n

    return train, inference, compile_s


def torch_runner(batch_size: int, compiled: bool, dataset: str = "cifar10", channels_last: bool = False):
    """(train_fn, infer_fn, compile_seconds) for the PyTorch seed network (on 28x28x1 its head
    takes the 3x3 map, as ours: the seed's VALID conv drops the 7th column)."""
    import torch

    from torch_reference import SeedEffNet

    device = "cuda" if torch.cuda.is_available() else "cpu"
    torch.manual_seed(0)
    height, width, channels = INPUTS[dataset]
    model = SeedEffNet(in_channels=channels, feature_hw=height // 8).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    images, labels, _ = image_batch(dataset, batch_size)
    x = torch_images(images, dataset).to(device)
    if channels_last:  # NHWC in memory: what NHWC data permuted to NCHW gives, 1.4-1.8x faster on this CPU
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    else:  # the seed's contiguous NCHW tensors
        x = x.contiguous()
    y = torch.from_numpy(labels).long().to(device)
    loss_fn = torch.nn.CrossEntropyLoss()

    forward = torch.compile(model) if compiled else model

    def train_step():
        optimizer.zero_grad(set_to_none=True)
        loss = loss_fn(forward(x), y)
        loss.backward()
        optimizer.step()
        return loss

    def infer_step():
        with torch.no_grad():
            return forward(x)

    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    started = time.perf_counter()
    model.train(); train_step(); model.eval(); infer_step(); sync()
    compile_s = time.perf_counter() - started

    def train(n):
        model.train()
        for _ in range(n):
            train_step()
        sync()
        return n

    def inference(n):
        model.eval()
        for _ in range(n):
            infer_step()
        sync()
        return n

    return train, inference, compile_s


def rate(fn, batch_size: int, seconds: float, granularity: int = 10) -> float:
    """Images/s of ``fn(n)`` with ``n`` (a multiple of ``granularity``) sized to run ``seconds``;
    ``fn`` returns how many steps it actually ran (train steps come in whole dispatches)."""
    start = time.perf_counter()
    ran = fn(granularity)
    once = max((time.perf_counter() - start) / ran, 1e-5)
    n = max(1, int(seconds / once / granularity)) * granularity
    start = time.perf_counter()
    ran = fn(n)
    return ran * batch_size / (time.perf_counter() - start)


def peak_memory_mb(framework: str) -> float | None:
    """Peak memory of this worker: the device's peak on accelerators, else peak resident memory."""
    if framework == "jax":
        import jax

        stats = jax.devices()[0].memory_stats() or {}
        if "peak_bytes_in_use" in stats:
            return stats["peak_bytes_in_use"] / 2**20
    else:
        import torch

        if torch.cuda.is_available():
            return torch.cuda.max_memory_allocated() / 2**20
    # VmHWM of this process (not ru_maxrss, which a child inherits from its parent).
    with open("/proc/self/status") as status:
        line = next(line for line in status if line.startswith("VmHWM"))
    return int(line.split()[1]) / 1024


def serve(implementation: str, batch_size: int, jax_dtype: str, dataset: str) -> None:
    """Worker: builds one implementation, then answers ``train S`` / ``infer S`` / ``peak`` lines
    on stdin with one JSON line each on stdout."""
    from effnet_jax.host import tune_allocator

    tune_allocator()  # every worker, PyTorch's too: the same allocator for both frameworks
    if implementation == "effnet-jax":
        train, infer, compile_s = jax_runner(batch_size, jax_dtype, dataset=dataset)
    else:
        import torch

        torch.set_num_threads(os.cpu_count() or 1)
        train, infer, compile_s = torch_runner(batch_size, implementation == "PyTorch torch.compile", dataset,
                                               channels_last=implementation.endswith("channels_last"))
    framework = "jax" if implementation == "effnet-jax" else "torch"
    print(json.dumps({"compile_s": compile_s}), flush=True)
    for line in sys.stdin:
        command, *rest = line.split()
        if command == "peak":
            answer = peak_memory_mb(framework)
        else:
            answer = rate(train if command == "train" else infer, batch_size, float(rest[0]))
        print(json.dumps({"value": answer}), flush=True)


class Worker:
    """The driver's handle on one worker process."""

    def __init__(self, implementation: str, batch_size: int, jax_dtype: str, env: dict[str, str],
                 dataset: str = "cifar10"):
        self.process = subprocess.Popen(
            [sys.executable, os.path.abspath(__file__), "--serve", implementation, "--batch-sizes", str(batch_size),
             "--jax-dtype", jax_dtype, "--input", dataset], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
            env=env)
        self.compile_s = self._answer()["compile_s"]

    def _answer(self) -> dict:
        while True:
            line = self.process.stdout.readline()
            if not line:
                raise RuntimeError(f"worker exited with {self.process.wait()}")
            if line.startswith("{"):
                return json.loads(line)

    def ask(self, command: str) -> float:
        self.process.stdin.write(command + "\n")
        self.process.stdin.flush()
        return self._answer()["value"]

    def close(self) -> None:
        self.process.stdin.close()
        self.process.wait()


def worker_environment(hugepages: bool) -> dict[str, str]:
    """The environment every worker gets: this one, with glibc's huge pages (and the CLI's arena
    limit) on, or huge pages off."""
    from effnet_jax import host  # imported here: the package brings JAX, kept out of torch workers

    env = dict(os.environ)
    kept = [t for t in env.pop("GLIBC_TUNABLES", "").split(":") if t and not t.startswith(host.HUGEPAGE_KEY)]
    if kept:
        env["GLIBC_TUNABLES"] = ":".join(kept)
    if hugepages:
        return host.hugepage_environment(env, host.glibc_version(), host.transparent_hugepage_mode(),
                                         malloc_arenas=host.MANY_STEPS_PER_CALL_ARENAS) or env
    env["GLIBC_TUNABLES"] = ":".join([*kept, f"{host.HUGEPAGE_KEY}=0"])
    return env


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[32, 128, 256])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=3.0, help="per measurement")
    parser.add_argument("--no-compile", action="store_true", help="skip torch.compile")
    parser.add_argument("--jax-dtype", default="float32", help="effnet-jax compute dtype (bfloat16 on accelerators)")
    parser.add_argument("--markdown", default=None, help="also write the table to this file")
    parser.add_argument("--no-hugepages", action="store_true",
                        help="run every worker without glibc huge pages (default: with, where available)")
    parser.add_argument("--input", choices=sorted(INPUTS), default="cifar10",
                        help="image shape: cifar10 (32x32x3, default) or fashion_mnist (28x28x1)")
    parser.add_argument("--serve", default=None, help=argparse.SUPPRESS)  # worker mode (internal)
    args = parser.parse_args()
    if args.serve:
        return serve(args.serve, args.batch_sizes[0], args.jax_dtype, args.input)

    import jax
    import torch

    from effnet_jax import host

    device = jax.devices()[0]
    env = worker_environment(not args.no_hugepages)
    hugepages = host.HUGEPAGE_TUNABLE in env.get("GLIBC_TUNABLES", "")
    names = ["effnet-jax", "PyTorch eager", "PyTorch eager channels_last"] + (
        [] if args.no_compile else ["PyTorch torch.compile"])
    rows = []
    for batch_size in args.batch_sizes:
        workers = {}
        for name in names:
            try:
                workers[name] = Worker(name, batch_size, args.jax_dtype, env, args.input)
            except RuntimeError as error:  # e.g. no C++ compiler for inductor
                print(f"{name} unavailable at batch {batch_size}: {error}", file=sys.stderr)
        train_rates = {name: [] for name in workers}
        infer_rates = {name: [] for name in workers}
        for _ in range(args.rounds):  # every implementation once per round
            for name, worker in workers.items():
                time.sleep(SETTLE_SECONDS)
                train_rates[name].append(worker.ask(f"train {args.seconds}"))
                infer_rates[name].append(worker.ask(f"infer {args.seconds}"))
        base_train = statistics.median(train_rates["PyTorch eager"])
        base_infer = statistics.median(infer_rates["PyTorch eager"])
        for name, worker in workers.items():
            tr, inf = statistics.median(train_rates[name]), statistics.median(infer_rates[name])
            rows.append({"batch": batch_size, "implementation": name, "train_img_s": tr, "train_ratio": tr / base_train,
                         "infer_img_s": inf, "infer_ratio": inf / base_infer, "compile_s": worker.compile_s,
                         "peak_mb": worker.ask("peak")})
            worker.close()
            print(json.dumps(rows[-1]), flush=True)
    shape = "x".join(map(str, INPUTS[args.input]))
    title = (f"EffNet seed network, {shape} ({args.input}, {image_source(args.input)}), Adam; {device.platform} ({device.device_kind}), "
             f"{os.cpu_count()} CPU cores, jax {jax.__version__}, torch {torch.__version__}; "
             f"median of {args.rounds} rounds, one worker process per implementation; glibc huge pages "
             f"{'on' if hugepages else 'off'} for every worker")
    lines = [title, "", "| batch | implementation | train img/s | vs eager | inference img/s | vs eager | "
             "first call (compile) s | peak memory MB |", "|---:|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        peak = f"{r['peak_mb']:.0f}" if r["peak_mb"] else "n/a"
        lines.append(f"| {r['batch']} | {r['implementation']} | {r['train_img_s']:,.0f} | {r['train_ratio']:.2f}x | "
                     f"{r['infer_img_s']:,.0f} | {r['infer_ratio']:.2f}x | {r['compile_s']:.1f} | {peak} |")
    table = "\n".join(lines)
    print("\n" + table)
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(table + "\n")


if __name__ == "__main__":
    main()
