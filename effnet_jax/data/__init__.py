"""Datasets: the catalog, loaders (TFDS, offline IDX), host batching and on-device preprocessing."""

from effnet_jax.data.catalog import DATASETS, DatasetInfo, dataset_info
from effnet_jax.data.pipeline import DataSplits, carve_validation, check_labels, eval_batches, subset, train_chunks
from effnet_jax.data.preprocess import make_preprocess
from effnet_jax.data.sources import ArraySplit, load_split

__all__ = [
    "ArraySplit",
    "DATASETS",
    "DataSplits",
    "DatasetInfo",
    "carve_validation",
    "check_labels",
    "dataset_info",
    "eval_batches",
    "load_split",
    "make_preprocess",
    "subset",
    "train_chunks",
]
