"""One row of the paper's SVHN comparison as a sweep: 5 seeds, no augmentation.

The whole table (every row, resumable, with a report beside the paper's numbers) is one command:
  effnet-jax reproduce --table svhn --workdir runs/paper_svhn

This file is the same setup for a single model, to change by hand:
  effnet-jax sweep --config paper_svhn --workdir runs/svhn_effnet model.name=effnet

Adam at lr 1e-3 with beta1 = 0.75 as the paper reports, batch 128, 30 epochs (the paper gives no
epoch count), 5 runs differing in initialisation and batch order, as in effnet_jax.paper.tables.
"""

from effnet_jax.paper.tables import DATA_NAMES, get_table, row_config


def get_config():
    table = get_table("svhn")
    return row_config(table, table.row("effnet"), DATA_NAMES.get("svhn", "svhn"))
