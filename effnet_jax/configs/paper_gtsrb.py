"""One row of the paper's GTSRB comparison as a sweep: 5 seeds, no augmentation.

The whole table (every row, resumable, with a report beside the paper's numbers) is one command:
  effnet-jax reproduce --table gtsrb --workdir runs/paper_gtsrb

This file is the same setup for a single model, to change by hand:
  effnet-jax sweep --config paper_gtsrb --workdir runs/gtsrb_effnet model.name=effnet

Adam at lr 1e-3 with beta1 = 0.75 as the paper reports, batch 128, 30 epochs (the paper gives no
epoch count), 5 runs differing in initialisation and batch order, as in effnet_jax.paper.tables.
"""

from effnet_jax.paper.tables import get_table, row_config


def get_config():
    table = get_table("gtsrb")
    return row_config(table, table.row("effnet"), "gtsrb")
