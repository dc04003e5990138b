"""The tables of ``model_paths.py``: each path's ratio to one step per call (paired by round),
the full Markdown table and the README's (one line per model, the inputs side by side)."""

from __future__ import annotations

import statistics

INPUTS = {"fashion_mnist": (28, 28, 1), "cifar10": (32, 32, 3)}


def ratio(a, b):
    return round(a / b, 2) if a and b else None


def add_ratios(row: dict) -> dict:
    """Sets each path's ratio to one step per call: every round's (the paths ran side by side in
    it), and as the headline their median, a paired figure that a drift between rounds does not
    move (the ratio of the paths' median rates mixes rounds); and the loop's ratio to PyTorch."""
    for path in ("loop", "sweep"):
        rounds = [ratio(a, b) for a, b in zip(row[f"{path}_rounds"], row["single_rounds"])]
        row[f"{path}_over_single_rounds"] = rounds
        row[f"{path}_over_single"] = round(statistics.median(rounds), 2)
    row["loop_over_pytorch"] = ratio(row["loop_img_per_s"], row.get("pytorch_img_per_s"))
    return row


def spread(row, path: str) -> str:
    """``path``'s median ratio to one step per call, with the lowest and highest round's."""
    rounds = row[f"{path}_over_single_rounds"]
    return f"{row[f'{path}_over_single']:.2f}x ({min(rounds):.2f}-{max(rounds):.2f})"


def table(rows, header: str) -> str:
    """The Markdown table of merged rows."""
    lines = [header, "",
             "| model | input | one step per call | library loop | loop / single (rounds) | sweep (model-img/s) | "
             "sweep / single (rounds) | PyTorch eager | loop / PyTorch | compile single / loop (s) |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        torch_rate = r.get("pytorch_img_per_s")
        torch_cell = f"{torch_rate:,.0f}" if torch_rate else "-"
        versus_torch = f"{r['loop_over_pytorch']:.2f}x" if torch_rate else "-"
        lines.append(
            f"| {r['model']} | {r['input']} | {r['single_img_per_s']:,.0f} | {r['loop_img_per_s']:,.0f} | "
            f"{spread(r, 'loop')} | {r['sweep_img_per_s']:,.0f} | "
            f"{spread(r, 'sweep')} | {torch_cell} | {versus_torch} | "
            f"{r['single_compile_s']:.1f} / {r['loop_compile_s']:.1f} |")
    return "\n".join(lines)


def readme_table(rows) -> str:
    """The README's table: one line per model, each input's paths side by side (images/s, and in
    brackets the ratio to one step per call, or for PyTorch the loop's ratio to it)."""
    inputs = list(dict.fromkeys(r["input"] for r in rows))
    by_model = {}
    for r in rows:
        by_model.setdefault(r["model"], {})[r["input"]] = r
    shape = lambda name: "x".join(map(str, INPUTS.get(name, ())))
    head = "| model | " + " | ".join(f"{shape(i)} {p}" for i in inputs
                                     for p in ("one step", "loop", "5-member sweep", "PyTorch eager")) + " |"
    lines = [head, "|---|" + "---:|" * (4 * len(inputs))]
    for model, per_input in by_model.items():
        cells = []
        for name in inputs:
            r = per_input.get(name)
            if r is None:
                cells += ["-"] * 4
                continue
            torch_rate = r.get("pytorch_img_per_s")
            cells += [f"{r['single_img_per_s']:,.0f}",
                      f"{r['loop_img_per_s']:,.0f} ({r['loop_over_single']:.2f}x)",
                      f"{r['sweep_img_per_s']:,.0f} ({r['sweep_over_single']:.2f}x)",
                      f"{torch_rate:,.0f} ({r['loop_over_pytorch']:.2f}x)" if torch_rate else "-"]
        lines.append(f"| {model} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
