"""Sweep results: ranked tables (CSV, Markdown), mean/std over seeds, plots, the best config."""

from __future__ import annotations

import csv
import io
import json
import os
from typing import Any

import numpy as np

from effnet_jax.config import config_from_dict, default_config, lock, shuffle_seed
from effnet_jax.files import write_json, write_text
from effnet_jax.sweeps.spec import SWEEPABLE, Member, swept_names


def member_config(config, m: Member):
    """The single-run config that trains ``m`` alone with the same seed and data order."""
    single = config_from_dict(json.loads(config.to_json_best_effort()))
    if not config.sweep.per_member_shuffle:
        single.data.shuffle_seed = shuffle_seed(config)
    single.seed = m.seed
    for name, value in m.hparams.items():
        *path, leaf = SWEEPABLE[name][0].split(".")
        node = single
        for key in path:
            node = node[key]
        node[leaf] = value
    single.sweep = default_config().sweep  # a single run: no sweep section
    return lock(single)


def _score(row: dict[str, Any]) -> float:
    """Ranking key: validation accuracy (test if no validation); diverged members last."""
    if row["diverged"]:
        return -1.0
    return row.get("val_accuracy", row.get("test_accuracy", 0.0))


def aggregate(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Mean and std over seeds of each configuration's metrics, best mean first."""
    groups: dict[int, list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault(row["config_id"], []).append(row)
    summary = []
    for config_id, members in groups.items():
        entry: dict[str, Any] = {"config_id": config_id, "runs": len(members),
                                 "diverged": sum(m["diverged"] for m in members)}
        entry.update({k: v for k, v in members[0].items() if k in SWEEPABLE})
        for key in ("val_accuracy", "test_accuracy"):
            values = [m[key] for m in members if key in m and not m["diverged"]]
            if values:
                entry[f"{key}_mean"] = float(np.mean(values))
                entry[f"{key}_std"] = float(np.std(values))
        summary.append(entry)
    key = "val_accuracy_mean" if any("val_accuracy_mean" in e for e in summary) else "test_accuracy_mean"
    return sorted(summary, key=lambda e: -e.get(key, -1.0))


def _markdown(rows: list[dict[str, Any]], columns: list[str]) -> str:
    def fmt(value):
        if isinstance(value, float):
            return f"{value:.4g}" if abs(value) < 1e-2 or abs(value) >= 1e3 else f"{value:.4f}"
        return "" if value is None else str(value)

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(fmt(row.get(c)) for c in columns) + " |" for row in rows]
    return "\n".join(lines)


def write_results(config, rows: list[dict[str, Any]], workdir: str) -> None:
    """``results.csv``, ``results.md``, ``accuracy_vs_<hparam>.png`` and ``best_config.json``."""
    ranked = sorted(rows, key=lambda r: -_score(r))
    names = swept_names(config)
    metrics = [k for k in ("val_loss", "val_accuracy", "test_loss", "test_accuracy") if k in rows[0]]
    columns = ["rank", "member", "config_id", "seed", *names, "diverged", *metrics]
    for rank, row in enumerate(ranked, 1):
        row["rank"] = rank
    table = io.StringIO()
    writer = csv.DictWriter(table, fieldnames=columns + ["diverged_at_step", "member_images_per_s", "name",
                                                         "backend", "devices", "implementation"],
                            extrasaction="ignore")
    writer.writeheader()
    writer.writerows(ranked)
    groups = aggregate(rows)
    group_columns = ["config_id", *names, "runs", "diverged",
                     *[c for c in ("val_accuracy_mean", "val_accuracy_std", "test_accuracy_mean", "test_accuracy_std")
                       if any(c in g for g in groups)]]
    markdown = [f"# Sweep: {config.model.name} on {config.data.name}\n\n"]
    if "implementation" in rows[0]:
        markdown.append(f"{len(rows)} members on {rows[0]['devices']} {rows[0]['backend']} device(s), "
                        f"{rows[0]['implementation']} implementation.\n\n")
    markdown += ["## Members, ranked\n\n", _markdown(ranked, columns),
                 "\n\n## Configurations: mean and std over seeds\n\n", _markdown(groups, group_columns) + "\n"]
    _plot(rows, names, os.path.join(workdir, "accuracy_vs_{}.png"))
    best_path = os.path.join(workdir, "best_config.json")
    if all(row["diverged"] for row in rows):  # nothing to recommend: no best_config.json at all
        markdown.append("\nEvery member diverged: no configuration is recommended.\n")
        if os.path.exists(best_path):
            os.remove(best_path)
    else:
        best = groups[0]
        seed_row = next(r for r in ranked if r["config_id"] == best["config_id"])
        best_member = Member(seed_row["member"], best["config_id"], seed_row["seed"], {n: seed_row[n] for n in names})
        write_json(best_path, json.loads(member_config(config, best_member).to_json_best_effort()),
                   indent=2, sort_keys=True)
    write_text(os.path.join(workdir, "results.md"), "".join(markdown))
    # Last: a reproduction takes results.csv as the sign that the row is finished.
    write_text(os.path.join(workdir, "results.csv"), table.getvalue())


def _plot(rows, names, pattern: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    key = "val_accuracy" if "val_accuracy" in rows[0] else "test_accuracy"
    for name in names:
        fig, ax = plt.subplots(figsize=(5, 4))
        ok = [r for r in rows if not r["diverged"]]
        ax.scatter([r[name] for r in ok], [r[key] for r in ok], alpha=0.6, label="member")
        means: dict[float, list[float]] = {}
        for r in ok:
            means.setdefault(r[name], []).append(r[key])
        xs = sorted(means)
        ax.plot(xs, [np.mean(means[x]) for x in xs], color="C1", marker="o", label="mean")
        failed = [r for r in rows if r["diverged"]]
        if failed:
            ax.scatter([r[name] for r in failed], [0.0] * len(failed), marker="x", color="C3", label="diverged")
        values = [r[name] for r in rows if r[name] > 0]
        if values and max(values) / min(values) > 20:
            ax.set_xscale("log")
        ax.set(xlabel=name, ylabel=key.replace("_", " "), title=f"{key.replace('_', ' ')} vs {name}")
        ax.grid(alpha=0.3)
        ax.legend()
        fig.tight_layout()
        fig.savefig(pattern.format(name), dpi=100)
        plt.close(fig)
