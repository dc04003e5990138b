"""The report of a reproduction: our accuracies beside the paper's, a plot, and a verdict.

``write_report(workdir)`` reads what ``reproduce`` left in ``workdir`` (finished rows and the
progress of unfinished ones) and writes:

* ``report.md``: per row, test accuracy mean +- std over seeds (sample std), validation
  accuracy, parameters and FLOPs (ours, analytic, at the input size trained on) beside the
  paper's accuracy and FLOPs; then each comparison the paper's claims rest on, with our
  difference, its standard error and the verdict; then the commands, epochs, hardware and
  wall time;
* ``report.json``: the same numbers, for scripts;
* ``accuracy_vs_flops.png``: one point per model with error bars over seeds, the paper's
  points beside ours.

A comparison "holds" when our difference has the paper's sign and exceeds twice its standard
error (``sqrt(std_a**2 / n_a + std_b**2 / n_b)``); "holds within noise" when the sign agrees
but the difference is smaller; "reversed within noise" and "reversed" likewise.
"""

from __future__ import annotations

import json
import logging
import math
import os
from typing import Any

import numpy as np

from effnet_jax.files import write_json, write_text
from effnet_jax.paper.layout import read_manifest, read_results, read_timing
from effnet_jax.paper.tables import Table, get_table, row_config

_log = logging.getLogger("effnet_jax")
REPORT_FILES = ("report.md", "report.json", "accuracy_vs_flops.png")
_DATASET_NAMES = {"cifar10": "CIFAR-10", "svhn": "SVHN", "gtsrb": "GTSRB", "fashion_mnist": "Fashion-MNIST",
                  "mnist": "MNIST", "svhn_cropped": "SVHN"}


def _progress(directory: str) -> str:
    """``not started``, or how many epochs an unfinished row has done."""
    path = os.path.join(directory, "metrics.jsonl")
    epochs = []
    if os.path.exists(path):
        with open(path) as f:
            for line in f:
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:
                    continue
                if record.get("kind") == "epoch":
                    epochs.append(record.get("epoch", 0))
    if not os.path.exists(os.path.join(directory, "config.json")):
        return "not started"
    return f"started: {max(epochs, default=0)} epoch(s) done"


def _mean_std(values: list[float]) -> tuple[float | None, float | None]:
    if not values:
        return None, None
    return float(np.mean(values)), float(np.std(values, ddof=1)) if len(values) > 1 else 0.0


def _model_cost(config) -> tuple[int, int]:
    """Parameters and FLOPs (per image, at the trained input size) of a row's model."""
    from effnet_jax.data.catalog import dataset_info
    from effnet_jax.summary import summarize
    from effnet_jax.training.experiment import build_model

    summary = summarize(build_model(config), dataset_info(config.data.name).image_shape)
    return summary.total_params, summary.total_flops


def collect(workdir: str) -> dict[str, Any]:
    """Everything the report shows, read from ``workdir`` (finished rows and progress)."""
    manifest = read_manifest(workdir)
    table = get_table(manifest["table"])
    dataset = manifest["dataset"]
    paper_dataset = manifest.get("architecture") or table.architecture(dataset)
    rows = []
    for row in table.rows:
        config = row_config(table, row, dataset, manifest["epochs"], manifest["seeds"], manifest["overrides"],
                            paper_dataset)
        params, flops = _model_cost(config)
        directory = os.path.join(workdir, row.slug)
        entry: dict[str, Any] = {"slug": row.slug, "label": row.label, "params": params, "flops": flops,
                                 "paper_accuracy": None, "paper_flops": None}
        paper = row.paper(paper_dataset)
        if paper:
            entry["paper_accuracy"], entry["paper_flops"] = paper
        members = read_results(directory, table.members(manifest["seeds"]))
        if members is not None:
            ok = [m for m in members if m["diverged"] != "True"]
            test = [100 * float(m["test_accuracy"]) for m in ok]
            val = [100 * float(m["val_accuracy"]) for m in ok if m.get("val_accuracy")]
            entry.update(status="finished", seeds=len(members), diverged=len(members) - len(ok), test=test,
                         backend=members[0].get("backend"), devices=members[0].get("devices"),
                         implementation=members[0].get("implementation"))
            entry["test_mean"], entry["test_std"] = _mean_std(test)
            entry["val_mean"], entry["val_std"] = _mean_std(val)
        else:
            entry["status"] = _progress(directory)
        timing = read_timing(directory)
        if timing.seconds is not None:
            entry["wall_seconds"], entry["machines"] = timing.seconds, timing.machines
        rows.append(entry)
    return {"table": table.name, "title": table.title, "dataset": dataset, "paper_dataset": paper_dataset,
            "epochs": manifest["epochs"], "seeds": manifest["seeds"], "overrides": manifest["overrides"],
            "commands": manifest.get("commands", []), "rows": rows,
            "comparisons": compare(table, rows)}


def verdict(difference: float, standard_error: float, paper_difference: float) -> str:
    """How our ``difference`` (a - b) stands against the paper's sign, in standard errors."""
    agrees = (difference > 0) == (paper_difference > 0)
    beyond_noise = abs(difference) > 2 * standard_error
    if agrees:
        return "holds" if beyond_noise else "holds within noise"
    return "reversed" if beyond_noise else "reversed within noise"


def compare(table: Table, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The table's comparisons between finished rows, each with our difference, its standard
    error, the paper's difference and the verdict."""
    by_slug = {r["slug"]: r for r in rows}
    results = []
    for a, b in table.comparisons:
        ra, rb = by_slug[a], by_slug[b]
        if ra["status"] != "finished" or rb["status"] != "finished" or ra["paper_accuracy"] is None:
            continue
        difference = ra["test_mean"] - rb["test_mean"]
        error = math.sqrt(ra["test_std"] ** 2 / len(ra["test"]) + rb["test_std"] ** 2 / len(rb["test"]))
        paper_difference = ra["paper_accuracy"] - rb["paper_accuracy"]
        results.append({"a": ra["label"], "b": rb["label"], "difference": difference, "standard_error": error,
                        "spread": max(ra["test_std"], rb["test_std"]), "paper_difference": paper_difference,
                        "verdict": verdict(difference, error, paper_difference)})
    return results


def _fmt(value, pattern: str) -> str:
    return "" if value is None else format(value, pattern)


def _markdown(data: dict[str, Any]) -> str:
    ours, paper = _DATASET_NAMES.get(data["dataset"], data["dataset"]), _DATASET_NAMES[data["paper_dataset"]]
    lines = [f"# {data['title']}", "",
             f"Ours: {ours}, {data['epochs']} epochs, {data['seeds']} seeds per model (each a member of one "
             f"vmapped sweep, differing in initialisation and batch order). Paper: {paper}, mean of 5 runs.", "",
             f"| model | params | FLOPs (ours) | test accuracy % (mean ± std) | validation % | "
             f"paper accuracy % ({paper}) | paper FLOPs ({paper}) | status |",
             "|---|---:|---:|---:|---:|---:|---:|---|"]
    for r in data["rows"]:
        test = f"{r['test_mean']:.2f} ± {r['test_std']:.2f}" if r.get("test_mean") is not None else ""
        val = f"{r['val_mean']:.2f} ± {r['val_std']:.2f}" if r.get("val_mean") is not None else ""
        status = r["status"] + (f", {r['diverged']} diverged" if r.get("diverged") else "")
        lines.append(f"| {r['label']} | {r['params']:,} | {r['flops']:,} | {test} | {val} | "
                     f"{_fmt(r['paper_accuracy'], '.2f')} | {_fmt(r['paper_flops'], ',.0f')} | {status} |")
    lines += ["", "## Verdict", ""]
    if data["comparisons"]:
        lines += ["| comparison | ours (points) | standard error | largest seed std | paper (points) | verdict |",
                  "|---|---:|---:|---:|---:|---|"]
        for c in data["comparisons"]:
            lines.append(f"| {c['a']} - {c['b']} | {c['difference']:+.2f} | {c['standard_error']:.2f} | "
                         f"{c['spread']:.2f} | {c['paper_difference']:+.2f} | {c['verdict']} |")
        held = sum(c["verdict"] == "holds" for c in data["comparisons"])
        lines += ["", f"The paper's ordering holds beyond seed noise (difference > 2 standard errors, with its "
                      f"sign) in {held} of {len(data['comparisons'])} comparisons."]
    else:
        lines.append("No comparison yet: it needs both of its rows finished.")
    total = sum(r.get("wall_seconds", 0.0) for r in data["rows"])
    machines = sorted({m for r in data["rows"] for m in r.get("machines", [])})
    commands = list(dict.fromkeys(data["commands"]))  # a command re-run to resume is listed once
    runs = len(data["commands"])
    resumed = f" (run {runs} times: each run resumes where the last stopped)" if runs > len(commands) else ""
    lines += ["", "## How it was run" + resumed, "", "```"] + (commands or ["(no command recorded)"]) + ["```", "",
              f"Overrides: {', '.join(data['overrides']) or 'none'}. Hardware: {'; '.join(machines) or 'n/a'}. "
              f"Wall time: {total / 3600:.2f} h in all ("
              + ", ".join(f"{r['label']} {r['wall_seconds'] / 60:.0f} min" for r in data["rows"] if "wall_seconds" in r)
              + ")."]
    return "\n".join(lines) + "\n"


def _plot(data: dict[str, Any], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 5))
    for i, r in enumerate(data["rows"]):
        color = f"C{i % 10}"
        if r.get("test_mean") is not None:
            ax.errorbar(r["flops"], r["test_mean"], yerr=r["test_std"], fmt="o", color=color, capsize=4,
                        label=f"{r['label']} (ours)")
        if r["paper_accuracy"] is not None:
            ax.scatter(r["paper_flops"], r["paper_accuracy"], marker="s", facecolors="none", edgecolors=color,
                       label=f"{r['label']} (paper)")
    ax.set_xscale("log")
    ours, paper = _DATASET_NAMES.get(data["dataset"], data["dataset"]), _DATASET_NAMES[data["paper_dataset"]]
    ax.set(xlabel="FLOPs per image", ylabel="test accuracy %",
           title=f"{data['table']}: ours on {ours} (dots, ± std over seeds)\npaper on {paper} (squares)")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0))  # beside the axes: no point hidden
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_report(workdir: str, output: str | None = None) -> str:
    """Writes ``report.md``, ``report.json`` and ``accuracy_vs_flops.png`` for the reproduction in
    ``workdir`` into ``output`` (default: the workdir); returns the Markdown's path."""
    data = collect(workdir)
    output = output or workdir
    os.makedirs(output, exist_ok=True)
    write_json(os.path.join(output, "report.json"), data, indent=2)
    _plot(data, os.path.join(output, "accuracy_vs_flops.png"))
    path = os.path.join(output, "report.md")
    write_text(path, _markdown(data))
    return path
