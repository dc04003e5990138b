"""The paper's reported FLOPs and accuracies, and our FLOPs beside them.

Numbers are transcribed from Freeman et al. (arXiv 1801.06434), Tables 2 and 3 (see
``shared/reference/PAPER.md``). FLOPs are 2 x multiply-adds of the conv and FC layers, which is
how ``effnet_jax.summary`` counts them.
"""

from __future__ import annotations

import dataclasses

from effnet_jax.models.registry import DATASET_INPUT_SHAPES, create_model
from effnet_jax.summary import summarize

PAPER_DATASETS = ("cifar10", "svhn", "gtsrb")

# (model name, overrides) -> {dataset: (paper accuracy %, paper FLOPs)}
PAPER_RESULTS: dict[tuple[str, tuple[tuple[str, int], ...]], dict[str, tuple[float, float]]] = {
    ("baseline", ()): {"cifar10": (82.78, 80.3e6), "svhn": (91.08, 3563.5e3), "gtsrb": (94.48, 2326.5e3)},
    ("mobilenet", ()): {"cifar10": (77.48, 5.8e6), "svhn": (85.64, 773.4e3), "gtsrb": (88.15, 533.0e3)},
    ("shufflenet", ()): {"cifar10": (77.30, 4.7e6), "svhn": (82.73, 733.1e3), "gtsrb": (88.99, 540.7e3)},
    ("effnet", ()): {"cifar10": (80.20, 11.4e6), "svhn": (88.51, 517.6e3), "gtsrb": (91.79, 344.1e3)},
    ("effnet_v2style", (("expansion", 6),)): {
        "cifar10": (83.20, 44.1e6), "svhn": (87.80, 2254.8e3), "gtsrb": (93.74, 1208.3e3)},
    ("mobilenet_v2", (("expansion", 6),)): {
        "cifar10": (79.10, 42.0e6), "svhn": (87.16, 2130.4e3), "gtsrb": (92.82, 1159.2e3)},
    ("effnet_v2style", (("expansion", 4),)): {
        "cifar10": (82.45, 31.1e6), "svhn": (87.49, 1729.5e3), "gtsrb": (92.30, 956.4e3)},
    ("mobilenet_v2", (("expansion", 4),)): {
        "cifar10": (78.91, 29.2e6), "svhn": (86.93, 1646.6e3), "gtsrb": (91.56, 934.9e3)},
    ("effnet_v2style", (("expansion", 2),)): {
        "cifar10": (81.67, 18.1e6), "svhn": (87.30, 1204.2e3), "gtsrb": (90.40, 704.5e3)},
    ("mobilenet_v2", (("expansion", 2),)): {
        "cifar10": (76.47, 16.4e6), "svhn": (86.71, 1162.8e3), "gtsrb": (90.74, 710.7e3)},
    ("mob_imp", (("expansion", 6),)): {
        "cifar10": (84.25, 44.0e6), "svhn": (88.78, 2506.7e3), "gtsrb": (93.25, 1408.0e3)},
}


@dataclasses.dataclass(frozen=True)
class FlopsComparison:
    """Our analytic FLOPs and parameters for one (model, dataset) beside the paper's FLOPs."""

    model: str
    dataset: str
    params: int
    ours: int
    paper: float

    @property
    def difference(self) -> float:
        """Relative difference ``ours / paper - 1``."""
        return self.ours / self.paper - 1.0


def _label(name: str, overrides: tuple[tuple[str, int], ...]) -> str:
    return name + "".join(f" t={value}" for _, value in overrides)


def compare_flops() -> list[FlopsComparison]:
    """Our FLOPs for every model and dataset the paper reports, in the paper's order."""
    rows = []
    for (name, overrides), per_dataset in PAPER_RESULTS.items():
        for dataset in PAPER_DATASETS:
            model = create_model(name, dataset=dataset, **dict(overrides))
            summary = summarize(model, DATASET_INPUT_SHAPES[dataset])
            rows.append(
                FlopsComparison(
                    model=_label(name, overrides),
                    dataset=dataset,
                    params=summary.total_params,
                    ours=summary.total_flops,
                    paper=per_dataset[dataset][1],
                )
            )
    return rows


def flops_table_markdown(rows: list[FlopsComparison] | None = None) -> str:
    """The comparison as a Markdown table."""
    rows = compare_flops() if rows is None else rows
    lines = [
        "| model | dataset | params | our FLOPs | paper FLOPs | difference |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r.model} | {r.dataset} | {r.params:,} | {r.ours:,} | {r.paper:,.0f} "
            f"| {100 * r.difference:+.2f}% |"
        )
    return "\n".join(lines)
