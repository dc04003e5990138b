"""One step per call against the library's multi-step loop for one model, interleaved in one process.

Run:
  python experiments/benchmarks/loop_vs_single.py MODEL DATASET     # e.g. baseline fashion_mnist

Both programs are compiled before anything is timed; then 5 rounds each run 20 single steps and
one 20-step loop call on the same batches, so a drift of the machine's speed hits both alike.
Prints the median images/s of each and every round's ratio (``model_paths.py`` times each path
right after compiling it, one after another).
"""
import statistics, sys, time
from effnet_jax.host import tune_cpu
tune_cpu(many_steps_per_call=True)
import jax, numpy as np
from effnet_jax.config import apply_overrides, default_config, lock
from effnet_jax.data import ArraySplit, DataSplits, dataset_info
from effnet_jax.training.experiment import build_run
from effnet_jax.training.optim import default_hparams
from effnet_jax.training.state import create_train_state
from effnet_jax.training.steps import make_multi_step
name, dataset = sys.argv[1], sys.argv[2]
info = dataset_info(dataset); k, b = 20, 128
rng = np.random.default_rng(0)
split = ArraySplit(rng.integers(0, 256, (k * b, *info.image_shape), dtype=np.uint8), rng.integers(0, 10, (k * b,)).astype(np.int32))
config = apply_overrides(lock(default_config()), [f"model.name={name}", f"data.name={dataset}", "data.validation_size=0"])
run = build_run(config, DataSplits(info, split, None, split))
batches = jax.device_put({"image": split.images.reshape(k, b, *info.image_shape), "label": split.labels.reshape(k, b)})
one = jax.tree.map(lambda a: a[0], batches)
hp = default_hparams(config, run.model.dropout_rate)
single = jax.jit(run.train_step, donate_argnums=0); loop = jax.jit(make_multi_step(run.train_step), donate_argnums=0)
s1 = create_train_state(run.model, run.tx, jax.random.PRNGKey(0), run.sample); s2 = create_train_state(run.model, run.tx, jax.random.PRNGKey(0), run.sample)
s1, m = single(s1, one, hp); jax.block_until_ready(m); s2, m = loop(s2, batches, hp); jax.block_until_ready(m)
rates = {"single": [], "loop": []}
for _ in range(5):
    t = time.perf_counter()
    for _ in range(k):
        s1, m = single(s1, one, hp)
    jax.block_until_ready(m); rates["single"].append(k * b / (time.perf_counter() - t))
    t = time.perf_counter(); s2, m = loop(s2, batches, hp); jax.block_until_ready(m); rates["loop"].append(k * b / (time.perf_counter() - t))
print(name, dataset, {p: round(statistics.median(v)) for p, v in rates.items()}, "loop/single per round:", [round(l / s, 2) for s, l in zip(rates["single"], rates["loop"])])
