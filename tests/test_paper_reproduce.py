"""The paper's tables as experiments: row configs, reproduction end to end on mock data of each
dataset's shape (CIFAR-10, SVHN, GTSRB, section 6), resume, and the report's verdict."""

from __future__ import annotations

import json
import os

import pytest

from effnet_jax.cli import main
from effnet_jax.paper.report import verdict, write_report
from effnet_jax.paper.reproduce import reproduce
from effnet_jax.paper.tables import TABLES, get_table, row_config
from effnet_jax.sweeps.spec import expand_members

# Tiny networks on the 60 mock images per split: 44 to train, 16 to validate.
TINY = ["data.source=tfds", "data.validation_size=16", "train.batch_size=8", "train.eval_batch_size=16",
        "train.steps_per_dispatch=2", "train.bn_statistics_batches=0", "log.progress=False",
        "model.options.widths=(4, 8, 8)", "model.options.bn_momentum=0.5"]


def test_rows_follow_the_paper_setup_with_the_tables_widths():
    table = get_table("svhn")
    config = row_config(table, table.row("effnet"), "fashion_mnist", epochs=3)
    assert config.model.options.widths == (12, 24, 48)  # the SVHN networks, trained on Fashion-MNIST
    assert (config.optimizer.name, config.optimizer.learning_rate, config.optimizer.b1) == ("adam", 1e-3, 0.75)
    assert config.optimizer.schedule == "constant" and not config.data.augment
    assert config.train.epochs == 3 and config.data.name == "fashion_mnist"
    # 5 seeds, each with its own initialisation and its own batch order.
    assert [m.seed for m in expand_members(config)] == [0, 1, 2, 3, 4]
    assert config.sweep.per_member_shuffle
    gtsrb = row_config(get_table("gtsrb"), get_table("gtsrb").row("mobilenet"), "gtsrb")
    assert gtsrb.model.options.widths == (8, 16, 32) and gtsrb.model.options.dropout_rate == 0.5
    assert "num_classes" not in gtsrb.model.options  # 43 comes from the dataset


def test_section6_takes_the_widths_of_the_dataset_it_runs_on():
    table = get_table("section6")
    assert [r.slug for r in table.rows] == ["effnet_v2style_t6", "mobilenet_v2_t6", "effnet_v2style_t4",
                                            "mobilenet_v2_t4", "effnet_v2style_t2", "mobilenet_v2_t2", "mob_imp_t6"]
    assert row_config(table, table.rows[0], "svhn_cropped").model.options.widths == (12, 24, 48)
    assert row_config(table, table.rows[0], "fashion_mnist").model.options.widths == (64, 128, 256)
    assert row_config(table, table.rows[0], "svhn").model.options.expansion == 6
    # Every row has the paper's numbers on every paper dataset.
    for name, t in TABLES.items():
        for row in t.rows:
            assert row.paper(t.architecture("cifar10")) is not None, (name, row.slug)


def test_bad_table_row_or_counts_are_one_clear_error():
    with pytest.raises(ValueError, match="unknown table 'table9'"):
        get_table("table9")
    with pytest.raises(ValueError, match="has no row 'resnet'"):
        get_table("cifar10").row("resnet")
    with pytest.raises(ValueError, match="epochs and seeds must be positive"):
        row_config(get_table("cifar10"), get_table("cifar10").rows[0], "cifar10", epochs=0)


@pytest.mark.parametrize("difference, error, paper, expected", [
    (2.0, 0.5, 3.0, "holds"), (0.5, 0.5, 3.0, "holds within noise"),
    (-0.5, 0.5, 3.0, "reversed within noise"), (-2.0, 0.5, 3.0, "reversed"), (-2.0, 0.5, -1.0, "holds"),
])
def test_verdict_weighs_the_difference_against_its_standard_error(difference, error, paper, expected):
    assert verdict(difference, error, paper) == expected


@pytest.mark.slow
def test_cifar10_table_end_to_end_resumes_and_reports(mock_data, tmp_path, capsys):
    workdir = str(tmp_path / "cifar10")
    argv = ["reproduce", "--table", "cifar10", "--workdir", workdir, "--epochs", "1", "--seeds", "2",
            "--rows", "effnet,mobilenet", *TINY]
    assert main(argv) == 0
    report = open(os.path.join(workdir, "report.md")).read()
    data = json.load(open(os.path.join(workdir, "report.json")))
    rows = {r["slug"]: r for r in data["rows"]}
    assert rows["effnet"]["status"] == rows["mobilenet"]["status"] == "finished"
    assert rows["baseline"]["status"] == "not started"
    assert len(rows["effnet"]["test"]) == 2 and rows["effnet"]["test"][0] != rows["effnet"]["test"][1]
    assert rows["effnet"]["paper_accuracy"] == 80.20 and rows["effnet"]["paper_flops"] == 11.4e6
    assert rows["effnet"]["params"] > 0 and rows["effnet"]["flops"] > 0
    # The one comparison with both rows finished is judged; the others wait.
    assert [(c["a"], c["b"]) for c in data["comparisons"]] == [("EffNet", "MobileNet")]
    assert "| EffNet - MobileNet |" in report and "effnet-jax reproduce --table cifar10" in report
    assert os.path.getsize(os.path.join(workdir, "accuracy_vs_flops.png")) > 10_000
    # Re-running skips finished rows: nothing is retrained.
    stamp = os.path.getmtime(os.path.join(workdir, "effnet", "results.csv"))
    capsys.readouterr()
    assert main(argv) == 0
    assert os.path.getmtime(os.path.join(workdir, "effnet", "results.csv")) == stamp
    assert "finished earlier, skipped" in capsys.readouterr().err
    report = open(os.path.join(workdir, "report.md")).read()
    assert report.count("effnet-jax reproduce --table cifar10") == 1 and "(run 2 times:" in report
    # Another setup in the same workdir is refused before anything trains.
    assert main([*argv[:6], "2", *argv[7:]]) == 2
    assert "different config" in capsys.readouterr().err
    assert main(["reproduce", "--table", "svhn", "--workdir", workdir, *TINY]) == 2
    assert "holds the reproduction of table 'cifar10'" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.parametrize("table, dataset, rows, paper", [  # SVHN's data path through section 6
    ("gtsrb", None, "effnet", 91.79), ("section6", "svhn_cropped", "mobilenet_v2_t2", 86.71),
])
def test_every_table_runs_on_mock_data_of_its_dataset(mock_data, tmp_path, table, dataset, rows, paper):
    workdir = str(tmp_path / table)
    report = reproduce(table, workdir, dataset=dataset, epochs=1, seeds=2, rows=[rows], overrides=TINY)
    data = json.load(open(os.path.join(workdir, "report.json")))
    row = next(r for r in data["rows"] if r["slug"] == rows)
    assert row["status"] == "finished" and row["paper_accuracy"] == paper
    assert data["dataset"] == (dataset or {"svhn": "svhn_cropped"}.get(table, table))
    assert "wall_seconds" in row and os.path.exists(report)
    # The report can be rewritten elsewhere (e.g. into experiments/results/).
    write_report(workdir, str(tmp_path / "copy"))
    assert open(tmp_path / "copy" / "report.md").read() == open(report).read()


def test_section6_architecture_can_be_chosen_and_main_tables_keep_their_own():
    table = get_table("section6")
    config = row_config(table, table.rows[0], "fashion_mnist", architecture="svhn")
    assert config.model.options.widths == (12, 24, 48)
    with pytest.raises(ValueError, match="table 'cifar10' has the cifar10 architectures"):
        get_table("cifar10").architecture("fashion_mnist", "svhn")
    with pytest.raises(ValueError, match="architecture must be one of"):
        table.architecture("fashion_mnist", "imagenet")


def test_an_unfinished_row_reports_its_progress(tmp_path):
    from effnet_jax.paper.report import _progress

    row = tmp_path / "mobilenet"
    assert _progress(str(row)) == "not started"
    row.mkdir()
    (row / "config.json").write_text("{}")
    assert _progress(str(row)) == "started: 0 epoch(s) done"
    (row / "metrics.jsonl").write_text('{"kind": "epoch", "epoch": 1}\n{"kind": "epoch", "epoch": 2}\nnot json\n')
    assert _progress(str(row)) == "started: 2 epoch(s) done"
