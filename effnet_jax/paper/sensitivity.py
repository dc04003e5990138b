"""The report of a study table (``--table sensitivity``): what the paper's comparisons depend on.

Each row of a study trains one vmapped sweep: every learning rate of the table x every seed, each
member with its own batch order, the test accuracy logged at every epoch's end (``log.
test_every_epoch``), so short and long training are read from the same run. For each of the
table's comparisons (``a - b``) and each learning rate, and at each model's own best learning rate
(chosen by mean *validation* accuracy at that epoch, never by test), the report gives the
difference of mean test accuracies over seeds, its standard error, and the verdict rule of the
paper tables (``report.verdict``: beyond noise when more than 2 standard errors).

Writes ``report.md``, ``report.json`` and ``difference_vs_epochs.png`` (the difference against
epochs, one line per learning rate, the paper's value marked).
"""

from __future__ import annotations

import math
import os
from typing import Any

import numpy as np

from effnet_jax.files import write_json, write_text
from effnet_jax.paper.layout import read_manifest, read_timing, row_finished
from effnet_jax.paper.report import verdict
from effnet_jax.paper.tables import Table, get_table, row_config

BEST = "best"  # each model at its own best learning rate (by validation)
SHORT_EPOCHS = 3  # the length the existing Fashion-MNIST comparison trained


def _curves(directory: str, config) -> dict[float, dict[int, dict[str, list[float]]]]:
    """``{learning rate: {epoch: {"test": [...], "val": [...]}}}`` in percent, one value per
    finite member, from a row's ``metrics.jsonl``."""
    from effnet_jax.sweeps.spec import expand_members
    from effnet_jax.training.logs import read_metrics

    members = {m.index: m for m in expand_members(config)}
    curves: dict[float, dict[int, dict[str, list[float]]]] = {}
    for record in read_metrics(directory) if os.path.isdir(directory) else []:
        if record.get("kind") != "epoch" or "test_accuracy" not in record:
            continue
        for i, index in enumerate(record["members"]):
            if record["diverged"][i]:
                continue
            point = curves.setdefault(members[index].hparams["learning_rate"], {}).setdefault(
                record["epoch"], {"test": [], "val": []})
            point["test"].append(100 * record["test_accuracy"][i])
            if "val_accuracy" in record:
                point["val"].append(100 * record["val_accuracy"][i])
    return curves


def _difference(a: list[float], b: list[float]) -> tuple[float, float]:
    """Mean of ``a`` minus mean of ``b`` and its standard error (independent seeds)."""
    variance = lambda values: float(np.var(values, ddof=1)) / len(values) if len(values) > 1 else 0.0
    return float(np.mean(a) - np.mean(b)), math.sqrt(variance(a) + variance(b))


def _best_rate(curves, epoch: int) -> float | None:
    """The learning rate with the highest mean validation accuracy at ``epoch``."""
    scored = [(float(np.mean(c[epoch]["val"])), rate) for rate, c in curves.items() if c.get(epoch, {}).get("val")]
    return max(scored)[1] if scored else None


def compare(table: Table, rows: dict[str, dict[str, Any]], seeds: int, epochs: int) -> list[dict[str, Any]]:
    """Per comparison of ``table``: the paper's difference and, per learning rate (and ``best``),
    one point per epoch where both rows have every seed: difference, standard error, verdict."""
    comparisons = []
    for a, b in table.comparisons:
        ra, rb = rows[a], rows[b]
        paper = ra["paper_accuracy"] - rb["paper_accuracy"] if None not in (ra["paper_accuracy"],
                                                                          rb["paper_accuracy"]) else None
        series: dict[str, list[dict[str, Any]]] = {}
        for rate in [*table.learning_rates, BEST]:
            points = []
            for epoch in range(1, epochs + 1):
                rate_a = _best_rate(ra["curves"], epoch) if rate == BEST else rate
                rate_b = _best_rate(rb["curves"], epoch) if rate == BEST else rate
                ta = ra["curves"].get(rate_a, {}).get(epoch, {}).get("test", [])
                tb = rb["curves"].get(rate_b, {}).get(epoch, {}).get("test", [])
                if len(ta) < seeds or len(tb) < seeds:  # a seed still training (or diverged)
                    continue
                difference, error = _difference(ta, tb)
                points.append({"epoch": epoch, "difference": difference, "standard_error": error,
                               "rate_a": rate_a, "rate_b": rate_b,
                               "verdict": verdict(difference, error, paper) if paper is not None else None})
            series[_label(rate)] = points
        comparisons.append({"a": ra["label"], "b": rb["label"], "paper_difference": paper, "series": series,
                            "depends_on": depends_on(series, table.learning_rates, epochs)})
    return comparisons


def _label(rate) -> str:
    return rate if rate == BEST else f"{rate:g}"


def depends_on(series: dict[str, list[dict[str, Any]]], rates, epochs: int) -> str:
    """What the verdict depends on, over the learning rates at ``SHORT_EPOCHS`` and ``epochs``."""
    lengths = sorted({min(SHORT_EPOCHS, epochs), epochs})
    found = {(_label(rate), p["epoch"]): p["verdict"] for rate in rates for p in series[_label(rate)]
             if p["epoch"] in lengths}
    if len(found) < len(rates) * len(lengths):
        return "not yet known (rows unfinished)"
    holds = {key for key, value in found.items() if value == "holds"}
    if len(holds) == len(found):
        return "nothing tried here: it holds at every learning rate and length"
    if not holds:
        reversed_ = all(value.startswith("reversed") for value in found.values())
        return "nothing tried here: it " + ("is reversed" if reversed_ else "does not hold beyond noise") + \
            " at every learning rate and length"
    by_rate = all(len({(label, e) in holds for e in lengths}) == 1 for label in map(_label, rates))
    by_length = all(len({(_label(r), e) in holds for r in rates}) == 1 for e in lengths)
    where = ", ".join(f"lr {k} at {e} epochs" for k, e in sorted(holds))
    if by_rate and not by_length:
        return f"the learning rate (it holds only at {where})"
    if by_length and not by_rate:
        return f"the training length (it holds only at {where})"
    return f"both the learning rate and the training length (it holds only at {where})"


def collect(workdir: str) -> dict[str, Any]:
    """Everything the study's report shows, read from ``workdir``."""
    manifest = read_manifest(workdir)
    table = get_table(manifest["table"])
    seeds, epochs = manifest["seeds"], manifest["epochs"]
    rows = {}
    for row in table.rows:
        config = row_config(table, row, manifest["dataset"], epochs, seeds, manifest["overrides"])
        directory = os.path.join(workdir, row.slug)
        curves = _curves(directory, config)
        done = min((max(c, default=0) for c in curves.values()), default=0) if len(curves) == len(
            table.learning_rates) else 0
        paper = row.paper(row.architecture)
        timing = read_timing(directory)
        rows[row.slug] = {"label": row.label, "curves": curves, "epochs_done": done,
                          "finished": row_finished(directory, table.members(seeds)),
                          "wall_seconds": timing.seconds, "cpu_seconds": timing.cpu_seconds,
                          "machines": timing.machines,
                          "paper_accuracy": paper[0] if paper else None}
    return {"table": table.name, "title": table.title, "dataset": manifest["dataset"], "epochs": epochs,
            "seeds": seeds, "learning_rates": list(table.learning_rates), "overrides": manifest["overrides"],
            "commands": manifest.get("commands", []), "rows": rows, "comparisons": compare(table, rows, seeds, epochs)}


def _cell(points: list[dict[str, Any]], epoch: int) -> str:
    point = next((p for p in points if p["epoch"] == epoch), None)
    if point is None:
        return "(not yet)"
    rates = f" (lr {point['rate_a']:g} / {point['rate_b']:g})" if point["rate_a"] != point["rate_b"] else ""
    return f"{point['difference']:+.2f} ± {point['standard_error']:.2f}, {point['verdict']}{rates}"


def markdown(data: dict[str, Any]) -> str:
    """The report's Markdown."""
    epochs, short = data["epochs"], min(SHORT_EPOCHS, data["epochs"])
    rates = ", ".join(f"{r:g}" for r in data["learning_rates"])
    lines = [f"# {data['title']}", "",
             f"Trained on {data['dataset']}: every model at learning rates {rates} x {data['seeds']} seeds, one "
             f"vmapped sweep per model (each member with its own batch order), {epochs} epochs, test accuracy "
             "logged at every epoch's end. `best`: each model at the learning rate with its best mean validation "
             "accuracy at that epoch. Differences are EffNet minus the rival in points of mean test accuracy, "
             "with the standard error over seeds; the verdict is the paper tables' rule (beyond noise: more "
             "than 2 standard errors).", "",
             "| model | epochs done | wall time | CPU time |", "|---|---:|---:|---:|"]
    for row in data["rows"].values():
        wall = f"{row['wall_seconds'] / 60:.0f} min" if row["wall_seconds"] else ""
        cpu = f"{row['cpu_seconds'] / 60:.0f} min" if row.get("cpu_seconds") else ""
        lines.append(f"| {row['label']} | {row['epochs_done']}{' (finished)' if row['finished'] else ''} | {wall} "
                     f"| {cpu} |")
    for c in data["comparisons"]:
        paper = f"{c['paper_difference']:+.2f}" if c["paper_difference"] is not None else "n/a"
        lines += ["", f"## {c['a']} - {c['b']} (paper: {paper})", "",
                  f"| learning rate | after {short} epochs | after {epochs} epochs |", "|---|---|---|"]
        for label, points in c["series"].items():
            lines.append(f"| {label} | {_cell(points, short)} | {_cell(points, epochs)} |")
        lines += ["", f"What the paper's claim depends on here: {c['depends_on']}."]
    total = sum(r["wall_seconds"] or 0.0 for r in data["rows"].values())
    machines = sorted({m for r in data["rows"].values() for m in r["machines"]})
    lines += ["", "## How it was run", "", "```", *(list(dict.fromkeys(data["commands"])) or ["(none recorded)"]),
              "```", "", f"Overrides: {', '.join(data['overrides']) or 'none'}. Hardware: "
              f"{'; '.join(machines) or 'n/a'}. Wall time so far: {total / 3600:.2f} h (it includes whatever "
              "shared the machine; CPU time, the process's own, is the row's cost).", "",
              "![difference against epochs](difference_vs_epochs.png)"]
    return "\n".join(lines) + "\n"


def plot(data: dict[str, Any], path: str) -> None:
    """The difference against epochs per comparison: one line per learning rate, the paper dashed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    comparisons = data["comparisons"]
    fig, axes = plt.subplots(1, len(comparisons), figsize=(5 * len(comparisons), 4), squeeze=False)
    for ax, c in zip(axes[0], comparisons):
        for label, points in c["series"].items():
            if points:
                x = [p["epoch"] for p in points]
                y = np.array([p["difference"] for p in points])
                error = np.array([p["standard_error"] for p in points])
                style = dict(color="black", linestyle="--") if label == BEST else {}
                ax.plot(x, y, marker="o", label=f"lr {label}", **style)
                ax.fill_between(x, y - 2 * error, y + 2 * error, alpha=0.15, **({"color": "black"} if label == BEST else {}))
        if c["paper_difference"] is not None:
            ax.axhline(c["paper_difference"], color="C3", linestyle=":", label="paper")
        ax.axhline(0, color="grey", linewidth=0.5)
        ax.set(xlabel="epochs", ylabel="difference (points)", title=f"{c['a']} - {c['b']}")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _jsonable(data: dict[str, Any]) -> dict[str, Any]:
    rows = {slug: {**row, "curves": {f"{rate:g}": {str(e): v for e, v in sorted(c.items())}
                                     for rate, c in row["curves"].items()}}
            for slug, row in data["rows"].items()}
    return {**data, "rows": rows}


def write_report(workdir: str, output: str | None = None) -> str:
    """Writes ``report.md``, ``report.json`` and ``difference_vs_epochs.png`` of the study in
    ``workdir`` into ``output`` (default: the workdir); returns the Markdown's path."""
    data = collect(workdir)
    output = output or workdir
    os.makedirs(output, exist_ok=True)
    write_json(os.path.join(output, "report.json"), _jsonable(data), indent=2)
    plot(data, os.path.join(output, "difference_vs_epochs.png"))
    path = os.path.join(output, "report.md")
    write_text(path, markdown(data))
    return path
