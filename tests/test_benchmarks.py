"""The benchmark scripts' tables are rebuilt from their results files without measuring."""

import json
import os
import subprocess
import sys

REPOSITORY = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))


def row(model, dataset, single, loop, sweep, torch=None):
    """A results line as the script writes it: the machine drifts between rounds (one step per
    call at 1x, 2x, 0.5x its median), the sweep beside it at 0.99x, 1.21x and 2.2x."""
    out = {"model": model, "input": dataset, "single_img_per_s": single, "loop_img_per_s": loop,
           "sweep_img_per_s": sweep, "single_compile_s": 3.0, "loop_compile_s": 3.5,
           "single_rounds": [single, 2 * single, single / 2], "loop_rounds": [loop, 2 * loop, loop / 2],
           "sweep_rounds": [0.9 * sweep, 2.2 * sweep, sweep],
           "date": "2026-12-07", "cpu": "AMD EPYC", "cores": 2, "commit": "abc1234", "batch_size": 128, "members": 5}
    if torch:
        out["pytorch_img_per_s"] = torch
    return out


def test_model_paths_tables_from_results_files(tmp_path):
    first, second = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    first.write_text(json.dumps(row("effnet", "fashion_mnist", 1000, 1500, 1200, 600)) + "\n"
                     + json.dumps(row("mobilenet", "fashion_mnist", 900, 990, 1080)) + "\n")
    second.write_text(json.dumps(row("effnet", "cifar10", 800, 1200, 880, 500)) + "\n")
    done = subprocess.run([sys.executable, os.path.join(REPOSITORY, "experiments", "benchmarks", "model_paths.py"),
                           "--tables-from", str(first), str(second)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert "batch 128, 5 members; 2026-12-07, AMD EPYC (2 cores), commit abc1234" in lines[0]
    # Ratios are each round's (paired), the headline their median (not 880 / 800 = 1.10x).
    assert "| effnet | cifar10 | 800 | 1,200 | 1.50x (1.50-1.50) | 880 | 1.21x (0.99-2.20) | 500 | 2.40x |" in done.stdout
    # The README's table: one line per model, the inputs side by side; a missing input is dashes.
    assert lines[lines.index(next(l for l in lines if l.startswith("| model | 28x28x1 one step"))) + 2:] == [
        "| effnet | 1,000 | 1,500 (1.50x) | 1,200 (1.32x) | 600 (2.50x) | 800 | 1,200 (1.50x) | 880 (1.21x) | 500 (2.40x) |",
        "| mobilenet | 900 | 990 (1.10x) | 1,080 (1.32x) | - | - | - | - | - |",
    ]
