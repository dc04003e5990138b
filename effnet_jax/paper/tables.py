"""The paper's tables as experiments: their rows, and the config that trains one row.

Tables 2/3 (``cifar10``, ``svhn``, ``gtsrb``): Baseline, MobileNet, ShuffleNet and EffNet with
that dataset's widths. ``section6``: EffNet with MobileNetV2-style blocks against MobileNetV2
(expansion t = 6, 4, 2) and ``mob_imp``. The paper's "large" variants are left out: it gives
their FLOP budgets, not their widths.

A row trains as one sweep of ``seeds`` members (``jit(vmap(train_step))``) with the paper's
setup where it states one, and these choices where it is silent:

* Adam, learning rate 1e-3, beta1 0.75 (as reported), constant schedule, no weight decay, no
  augmentation, no pre-training (as reported);
* batch 128; 30 epochs by default (``--epochs``); 5,000 training images held out for
  validation (the same images for every seed); the reported accuracy is the test accuracy of
  the final parameters (no early stopping, as the paper describes none);
* BatchNorm: the Keras original's momentum 0.99 (Flax convention) and the library's precise
  statistics before each evaluation; LeakyReLU 0.3 (the seed's);
* seeds 0..4 differing in initialisation and in batch order (``sweep.per_member_shuffle``).

The widths follow the table (CIFAR-10: 64/128/256, SVHN: 12/24/48, GTSRB: 8/16/32 with dropout
0.5), whatever dataset the table is trained on: ``--table svhn --dataset fashion_mnist``
trains the SVHN networks on Fashion-MNIST. ``section6`` takes the widths of ``architecture`` if given
(``--architecture svhn``), else of the dataset it is trained on when that is one of the
paper's, else CIFAR-10's.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Iterable

import ml_collections

from effnet_jax.config import apply_overrides, default_config, lock
from effnet_jax.errors import ConfigError
from effnet_jax.models import DATASET_PRESETS, model_options
from effnet_jax.paper.numbers import PAPER_DATASETS, PAPER_RESULTS

DEFAULT_EPOCHS = 30
DEFAULT_SEEDS = 5
VALIDATION_SIZE = 5000
DATA_NAMES = {"svhn": "svhn_cropped"}  # the paper's dataset -> its TFDS name
PAPER_NAMES = {data: paper for paper, data in DATA_NAMES.items()}


@dataclasses.dataclass(frozen=True)
class Row:
    """One model of a table: its label, registered name and the options that define it."""

    label: str
    model: str
    options: tuple[tuple[str, Any], ...] = ()
    architecture: str | None = None  # the paper dataset whose widths the row takes, where rows mix them

    @property
    def slug(self) -> str:
        """Directory name of the row, e.g. ``effnet``, ``mobilenet_v2_t6`` or ``effnet_svhn``."""
        return self.model + "".join(f"_t{value}" if key == "expansion" else f"_{key}{value}"
                                    for key, value in self.options) + (f"_{self.architecture}" if self.architecture else "")

    def paper(self, dataset: str) -> tuple[float, float] | None:
        """The paper's (accuracy %, FLOPs) of this row on ``dataset``, if reported."""
        return PAPER_RESULTS.get((self.model, self.options), {}).get(dataset)


@dataclasses.dataclass(frozen=True)
class Table:
    """A table of the paper: rows, and the comparisons its claims rest on.

    ``comparisons`` are pairs of row slugs ``(a, b)``; the report tests whether the paper's
    sign of ``accuracy(a) - accuracy(b)`` holds in our runs.
    """

    name: str
    title: str
    rows: tuple[Row, ...]
    comparisons: tuple[tuple[str, str], ...]
    learning_rates: tuple[float, ...] = ()  # a study: each row sweeps these (x seeds), test logged per epoch
    default_epochs: int = DEFAULT_EPOCHS
    dataset: str | None = None  # what it trains on by default, where that is not the paper's own

    def architecture(self, dataset: str, choice: str | None = None) -> str:
        """The paper dataset whose widths (and dropout) the rows use when trained on ``dataset``:
        the table's own, or for ``section6`` ``choice``, else the dataset's, else CIFAR-10's.

        Raises:
          ValueError: a ``choice`` that is no paper dataset, or differs from a main table's own.
        """
        if choice is not None and choice not in PAPER_DATASETS:
            raise ConfigError(f"architecture must be one of {', '.join(PAPER_DATASETS)}, got {choice!r}")
        if self.name in PAPER_DATASETS:
            if choice not in (None, self.name):
                raise ConfigError(f"table {self.name!r} has the {self.name} architectures; to train them on "
                                  f"another dataset use --dataset, or --table {choice} for the {choice} ones")
            return self.name
        if choice is not None:
            return choice
        dataset = PAPER_NAMES.get(dataset, dataset)
        return dataset if dataset in PAPER_DATASETS else "cifar10"

    @property
    def default_dataset(self) -> str:
        """The dataset (TFDS name) the paper reports this table on (a study's own, if it has one)."""
        return self.dataset or DATA_NAMES.get(self.architecture("cifar10"), self.architecture("cifar10"))

    def row_architecture(self, row: Row, dataset: str, choice: str | None = None) -> str:
        """The paper dataset whose widths ``row`` takes: its own, else the table's."""
        return row.architecture or self.architecture(dataset, choice)

    def members(self, seeds: int) -> int:
        """Members of one row's sweep: every seed at every learning rate of a study."""
        return seeds * max(1, len(self.learning_rates))

    def row(self, slug: str) -> Row:
        """The row named ``slug``.

        Raises:
          ValueError: no such row (naming the table's rows).
        """
        for row in self.rows:
            if row.slug == slug:
                return row
        raise ConfigError(f"table {self.name!r} has no row {slug!r}; rows: {', '.join(r.slug for r in self.rows)}")


_MAIN_ROWS = (
    Row("Baseline", "baseline"),
    Row("MobileNet", "mobilenet"),
    Row("ShuffleNet", "shufflenet"),
    Row("EffNet", "effnet"),
)
_MAIN_COMPARISONS = (("effnet", "mobilenet"), ("effnet", "shufflenet"), ("baseline", "effnet"))


def _expanded(label: str, model: str, t: int) -> Row:
    return Row(f"{label} t={t}", model, (("expansion", t),))


TABLES: dict[str, Table] = {
    **{name: Table(name, f"Table 2/3, {title}: EffNet against MobileNet, ShuffleNet and a baseline",
                   _MAIN_ROWS, _MAIN_COMPARISONS)
       for name, title in (("cifar10", "CIFAR-10"), ("svhn", "SVHN"), ("gtsrb", "GTSRB"))},
    "section6": Table(
        "section6",
        "Section 6: EffNet with MobileNetV2-style blocks against MobileNetV2",
        tuple(_expanded(label, model, t) for t in (6, 4, 2)
              for label, model in (("EffNet", "effnet_v2style"), ("MobileNetV2", "mobilenet_v2")))
        + (_expanded("mob_imp", "mob_imp", 6),),
        (("effnet_v2style_t6", "mobilenet_v2_t6"), ("effnet_v2style_t4", "mobilenet_v2_t4"),
         ("effnet_v2style_t2", "mobilenet_v2_t2"), ("mob_imp_t6", "effnet_v2style_t6")),
    ),
    # What the paper's headline comparisons depend on: its one untuned learning rate and its
    # unstated training length (``effnet_jax.paper.sensitivity`` writes the report).
    "sensitivity": Table(
        "sensitivity",
        "Sensitivity: EffNet against MobileNet and ShuffleNet at three learning rates, over 10 epochs",
        (Row("EffNet, SVHN widths", "effnet", architecture="svhn"),
         Row("MobileNet, SVHN widths", "mobilenet", architecture="svhn"),
         Row("ShuffleNet, SVHN widths", "shufflenet", architecture="svhn"),
         Row("EffNet, CIFAR-10 widths", "effnet", architecture="cifar10"),
         Row("MobileNet, CIFAR-10 widths", "mobilenet", architecture="cifar10")),
        (("effnet_svhn", "mobilenet_svhn"), ("effnet_svhn", "shufflenet_svhn"), ("effnet_cifar10", "mobilenet_cifar10")),
        learning_rates=(3e-4, 1e-3, 3e-3), default_epochs=10, dataset="fashion_mnist",
    ),
}


def get_table(name: str) -> Table:
    """The table called ``name``.

    Raises:
      ValueError: unknown name (naming the valid ones).
    """
    if name not in TABLES:
        raise ConfigError(f"unknown table {name!r}; valid: {', '.join(TABLES)}")
    return TABLES[name]


def row_config(table: Table, row: Row, dataset: str, epochs: int = DEFAULT_EPOCHS,
               seeds: int = DEFAULT_SEEDS, overrides: Iterable[str] = (),
               architecture: str | None = None) -> ml_collections.ConfigDict:
    """The sweep config that trains ``row`` of ``table`` on ``dataset`` (see the module
    docstring for the setup) with the widths of ``architecture`` (see ``Table.architecture``),
    and ``overrides`` (``key=value``) applied last.

    Raises:
      ValueError: a non-positive epoch or seed count, an unknown dataset or a bad override.
    """
    if epochs <= 0 or seeds <= 0:
        raise ConfigError(f"epochs and seeds must be positive, got epochs={epochs}, seeds={seeds}")
    if dataset not in DATASET_PRESETS:
        raise ConfigError(f"unknown dataset {dataset!r}; valid: {', '.join(sorted(DATASET_PRESETS))}")
    c = default_config()
    c.model.name = row.model
    valid = model_options(row.model)
    preset = DATASET_PRESETS[table.row_architecture(row, dataset, architecture)]
    for key in ("widths", "dropout_rate"):  # the class count comes from the dataset trained on
        if key in preset and key in valid:
            c.model.options[key] = preset[key]
    for key, value in row.options:
        c.model.options[key] = value
    c.data.name = dataset
    c.data.augment = False
    c.data.validation_size = VALIDATION_SIZE
    c.train.epochs = epochs
    c.train.batch_size = 128
    c.optimizer.name = "adam"
    c.optimizer.learning_rate = 1e-3
    c.optimizer.b1 = 0.75
    c.optimizer.schedule = "constant"
    c.sweep.seeds = tuple(range(seeds))
    c.sweep.per_member_shuffle = True
    if table.learning_rates:
        c.sweep.grid.learning_rate = tuple(table.learning_rates)
        c.log.test_every_epoch = True
    return apply_overrides(lock(c), overrides)
