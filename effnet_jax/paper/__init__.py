"""The paper's numbers, its tables as runnable experiments, and reports beside them.

* ``numbers``: the accuracies and FLOPs Freeman et al. report, and our FLOPs beside them;
* ``tables``: each table's rows (model and options) and the config that trains a row;
* ``reproduce``: trains every row of a table as a 5-seed vmapped sweep, resumably;
* ``report``: mean +- std per row beside the paper, a plot against FLOPs, and a verdict;
* ``sensitivity``: a study table's report: each comparison per learning rate and epoch.
"""

from effnet_jax.paper.numbers import (
    PAPER_DATASETS,
    PAPER_RESULTS,
    FlopsComparison,
    compare_flops,
    flops_table_markdown,
)
from effnet_jax.paper.tables import TABLES, Row, Table, row_config

__all__ = [
    "PAPER_DATASETS",
    "PAPER_RESULTS",
    "FlopsComparison",
    "Row",
    "TABLES",
    "Table",
    "compare_flops",
    "flops_table_markdown",
    "row_config",
]
