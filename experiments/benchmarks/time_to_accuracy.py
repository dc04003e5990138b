"""Seconds to 90% test accuracy on the real Fashion-MNIST: effnet-jax vs a plain PyTorch loop.

Run:
  python experiments/benchmarks/time_to_accuracy.py [--target 0.90] [--max-epochs 5]

Both train the seed EffNet (28x28x1 input, 2,304-wide head) with Adam, lr 1e-3 and a cosine
decay over ``--max-epochs``, batch 128, on the same 55,000 training images in the same
per-epoch order, and evaluate the 10,000 test images after every epoch: PyTorch with its
BatchNorm running averages, effnet-jax as the library evaluates (``train.bn_statistics_batches``:
statistics of the current network on 32 fixed training batches; ``--running-averages`` for the
running averages instead). The clock counts training, the statistics pass and evaluation
(compilation included for effnet-jax); the first epoch reaching the target stops it. Prints a
table.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "tests"))


def load(validation_size: int):
    from effnet_jax.config import apply_overrides, default_config, lock
    from effnet_jax.training.experiment import load_data

    config = apply_overrides(lock(default_config()), ["data.name=fashion_mnist", f"data.validation_size={validation_size}"])
    return config, load_data(config)


def run_jax(config, data, target, max_epochs, batch_size, running_averages=False):
    import jax

    from effnet_jax.config import apply_overrides
    from effnet_jax.data.pipeline import eval_batches, train_chunks
    from effnet_jax.training.experiment import build_run
    from effnet_jax.training.optim import default_hparams
    from effnet_jax.training.state import create_train_state
    from effnet_jax.training.steps import averages, make_evaluate, make_multi_step

    config = apply_overrides(config, [f"train.epochs={max_epochs}", f"train.batch_size={batch_size}", "optimizer.schedule=cosine",
                                      f"train.bn_statistics_batches={0 if running_averages else 32}"])
    start = time.perf_counter()
    run = build_run(config, data)
    state = create_train_state(run.model, run.tx, jax.random.PRNGKey(0), run.sample)
    steps = jax.jit(make_multi_step(run.train_step), donate_argnums=0)
    evaluate = jax.jit(make_evaluate(run.eval_step))
    statistics = run.statistics_images()  # the library's evaluation: BatchNorm statistics of the current network
    estimate = jax.jit(run.estimate_batch_stats, donate_argnums=0) if statistics is not None else None
    test = jax.device_put(eval_batches(data.test, 1000))
    hparams = default_hparams(config)
    history = []
    for epoch in range(max_epochs):
        for chunk in train_chunks(data.train, batch_size, 0, epoch, 0, 20):
            state, _ = steps(state, jax.device_put(chunk), hparams)
        if estimate is not None:
            state = estimate(state, statistics)
        accuracy = averages(jax.device_get(evaluate(state, test)))["accuracy"]
        history.append((epoch + 1, time.perf_counter() - start, accuracy))
        print(f"effnet-jax epoch {epoch + 1}: {accuracy:.4f} at {history[-1][1]:.0f} s", flush=True)
        if accuracy >= target:
            break
    return history


def run_torch(data, target, max_epochs, batch_size):
    import numpy as np
    import torch

    from effnet_jax.data.catalog import dataset_info
    from effnet_jax.data.pipeline import epoch_order, steps_per_epoch
    from torch_reference import SeedEffNet

    torch.set_num_threads(os.cpu_count() or 1)
    torch.manual_seed(0)
    info = dataset_info("fashion_mnist")
    normalize = lambda images: (torch.from_numpy(np.array(images)).permute(0, 3, 1, 2).float() / 255 - info.mean[0]) / info.std[0]
    start = time.perf_counter()
    model = SeedEffNet(in_channels=1, feature_hw=3, momentum=0.01)  # = our bn_momentum 0.99
    # Our seed EffNet on 28x28 drops the 7th column (VALID); PyTorch's reference does the same.
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    spe = steps_per_epoch(len(data.train), batch_size)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 0.5 * (1 + math.cos(math.pi * min(s, spe * max_epochs) / (spe * max_epochs))))
    loss_fn = torch.nn.CrossEntropyLoss()
    test_x, test_y = normalize(data.test.images), torch.from_numpy(data.test.labels).long()
    history = []
    for epoch in range(max_epochs):
        model.train()
        order = epoch_order(0, epoch, len(data.train))[: spe * batch_size].reshape(spe, batch_size)
        for indices in order:
            x, y = normalize(data.train.images[indices]), torch.from_numpy(data.train.labels[indices]).long()
            optimizer.zero_grad(set_to_none=True)
            loss_fn(model(x), y).backward()
            optimizer.step()
            schedule.step()
        model.eval()
        with torch.no_grad():
            correct = sum(int((model(test_x[i:i + 1000]).argmax(1) == test_y[i:i + 1000]).sum())
                          for i in range(0, len(test_y), 1000))
        accuracy = correct / len(test_y)
        history.append((epoch + 1, time.perf_counter() - start, accuracy))
        print(f"PyTorch epoch {epoch + 1}: {accuracy:.4f} at {history[-1][1]:.0f} s", flush=True)
        if accuracy >= target:
            break
    return history


def main():
    from effnet_jax.host import restart_with_hugepages

    restart_with_hugepages()  # as the effnet-jax CLI runs (glibc huge pages for XLA:CPU scratch)
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--target", type=float, default=0.90)
    parser.add_argument("--max-epochs", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--running-averages", action="store_true",
                        help="evaluate effnet-jax with BatchNorm running averages, as PyTorch does (default: the "
                             "library's evaluation, statistics of the current network on 32 training batches)")
    args = parser.parse_args()
    config, data = load(validation_size=5000)
    results = {"effnet-jax": run_jax(config, data, args.target, args.max_epochs, args.batch_size, args.running_averages),
               "PyTorch eager": run_torch(data, args.target, args.max_epochs, args.batch_size)}
    print(f"\n| implementation | epochs | seconds to {100 * args.target:.0f}% test accuracy | final test accuracy |")
    print("|---|---:|---:|---:|")
    for name, history in results.items():
        epoch, seconds, accuracy = history[-1]
        reached = f"{seconds:.0f}" if accuracy >= args.target else f"not reached in {seconds:.0f}"
        print(f"| {name} | {epoch} | {reached} | {100 * accuracy:.2f}% |")


if __name__ == "__main__":
    main()
