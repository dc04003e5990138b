"""The sensitivity study: one vmapped sweep per model over learning rates x seeds with the test
accuracy of every epoch, and a report of each comparison per learning rate and training length."""

import json
import os
import shutil

import numpy as np
import pytest

from effnet_jax import cli
from effnet_jax.paper import sensitivity
from effnet_jax.paper.tables import get_table, row_config
from effnet_jax.sweeps.spec import expand_members

TINY = ["data.source=tfds", "data.validation_size=16", "train.batch_size=8", "train.eval_batch_size=12", "train.steps_per_dispatch=2",
        "model.options.widths=(4,8,8)", "log.progress=False"]


def test_the_study_command_trains_every_rate_and_seed_logs_test_per_epoch_and_reports(mock_data, tmp_path, capsys):
    workdir = tmp_path / "study"
    command = ["reproduce", "--table", "sensitivity", "--dataset", "cifar10", "--workdir", str(workdir),
               "--epochs", "2", "--seeds", "2", "--rows", "effnet_svhn,mobilenet_svhn", *TINY]
    assert cli.main(command) == 0
    capsys.readouterr()
    for slug in ("effnet_svhn", "mobilenet_svhn"):
        records = [json.loads(line) for line in open(workdir / slug / "metrics.jsonl")]
        members = sorted({m for r in records for m in r["members"]})
        assert members == list(range(6))  # 3 learning rates x 2 seeds
        assert [r["epoch"] for r in records if r["members"][0] == 0] == [1, 2]
        assert all(len(r["test_accuracy"]) == len(r["members"]) for r in records)
    report = json.loads((workdir / "report.json").read_text())
    comparison = report["comparisons"][0]
    assert (comparison["a"], comparison["b"]) == ("EffNet, SVHN widths", "MobileNet, SVHN widths")
    assert sorted(comparison["series"]) == ["0.0003", "0.001", "0.003", "best"]
    assert all([p["epoch"] for p in points] == [1, 2] for points in comparison["series"].values())
    assert comparison["paper_difference"] == pytest.approx(88.51 - 85.64, abs=0.01)
    text = (workdir / "report.md").read_text()
    assert "## EffNet, SVHN widths - MobileNet, SVHN widths (paper: +2.87)" in text and "| best |" in text
    assert (workdir / "difference_vs_epochs.png").stat().st_size > 0
    row = report["rows"]["effnet_svhn"]  # a row's own CPU time is kept next to its wall time
    assert 0 < row["cpu_seconds"] and 0 < row["wall_seconds"]
    assert "| wall time | CPU time |" in text
    assert "finished earlier, skipped" in _rerun(command, capsys)  # finished rows are not trained again

    # A report written elsewhere takes the finished rows' records (no checkpoints): the report
    # re-derives from them, and a workdir they are copied into skips those rows.
    committed = tmp_path / "committed"
    assert cli.main(["report", "--workdir", str(workdir), "--output", str(committed)]) == 0
    records = committed / "records"
    assert sorted(os.listdir(records)) == ["effnet_svhn", "mobilenet_svhn", "reproduce.json"]
    assert sorted(os.listdir(records / "effnet_svhn")) == ["config.json", "metrics.jsonl", "results.csv", "wall_time.json"]
    assert cli.main(["report", "--workdir", str(records), "--output", str(committed)]) == 0
    assert json.loads((committed / "report.json").read_text())["comparisons"] == report["comparisons"]
    capsys.readouterr()
    resumed = tmp_path / "resumed"
    shutil.copytree(records, resumed)
    log = _rerun([*command[:command.index("--workdir") + 1], str(resumed), *command[command.index("--workdir") + 2:]], capsys)
    assert log.count("finished earlier, skipped") == 2


def _rerun(command, capsys):
    import logging

    records = []
    handler = logging.Handler()
    handler.emit = lambda record: records.append(record.getMessage())
    logging.getLogger("effnet_jax").addHandler(handler)
    try:
        assert cli.main(command) == 0
    finally:
        logging.getLogger("effnet_jax").removeHandler(handler)
    capsys.readouterr()
    return "\n".join(records)


def write_study(workdir, accuracy, seeds=3, epochs=3, dataset="fashion_mnist"):
    """A study workdir as the sweeps leave it, with test and validation accuracy
    ``accuracy(slug, rate, epoch) + seed noise`` for every member and epoch."""
    table = get_table("sensitivity")
    workdir.mkdir()
    (workdir / "reproduce.json").write_text(json.dumps(
        {"table": "sensitivity", "dataset": dataset, "architecture": None, "epochs": epochs, "seeds": seeds,
         "overrides": [], "commands": ["effnet-jax reproduce --table sensitivity ..."]}))
    for row in table.rows:
        members = expand_members(row_config(table, row, dataset, epochs, seeds))
        (workdir / row.slug).mkdir()
        with open(workdir / row.slug / "metrics.jsonl", "w") as f:
            for epoch in range(1, epochs + 1):
                values = [accuracy(row.slug, m.hparams["learning_rate"], epoch) + 0.001 * (m.seed - 1) for m in members]
                f.write(json.dumps({"kind": "epoch", "epoch": epoch, "step": epoch, "members": [m.index for m in members],
                                    "diverged": [False] * len(members), "test_accuracy": values,
                                    "val_accuracy": values}) + "\n")


def test_the_report_reads_each_rate_and_epoch_and_picks_the_best_rate_by_validation(tmp_path):
    def accuracy(slug, rate, epoch):
        if slug.startswith("effnet"):
            return 0.80 + 0.01 * epoch
        return {3e-4: 0.70, 1e-3: 0.90, 3e-3: 0.60}[rate]  # the rival is best at 1e-3

    workdir = tmp_path / "study"
    write_study(workdir, accuracy)
    path = sensitivity.write_report(str(workdir))
    data = json.loads((workdir / "report.json").read_text())
    series = data["comparisons"][0]["series"]
    at = lambda label, epoch: next(p for p in series[label] if p["epoch"] == epoch)
    assert at("0.0003", 3)["difference"] == pytest.approx(100 * (0.83 - 0.70))
    assert at("0.001", 1)["difference"] == pytest.approx(100 * (0.81 - 0.90))
    assert at("0.001", 1)["standard_error"] == pytest.approx(np.sqrt(2 * 0.1**2 / 3))  # seeds differ by 0.1 point
    assert at("0.001", 1)["verdict"] == "reversed" and at("0.0003", 3)["verdict"] == "holds"
    best = at("best", 3)  # EffNet: all rates tie, the highest wins the tie; MobileNet at its 1e-3
    assert best["rate_b"] == 1e-3 and best["difference"] == pytest.approx(100 * (0.83 - 0.90))
    assert data["comparisons"][0]["depends_on"].startswith("the learning rate (it holds only at lr 0.0003")
    text = open(path).read()
    assert "| 0.0003 | +13.00 ± 0.08, holds | +13.00 ± 0.08, holds |" in text
    assert os.path.exists(workdir / "difference_vs_epochs.png")


def test_unfinished_rows_are_reported_as_such(tmp_path):
    workdir = tmp_path / "study"
    write_study(workdir, lambda slug, rate, epoch: 0.5)
    os.remove(workdir / "mobilenet_svhn" / "metrics.jsonl")
    data = sensitivity.collect(str(workdir))
    assert data["rows"]["mobilenet_svhn"]["epochs_done"] == 0
    assert data["comparisons"][0]["depends_on"] == "not yet known (rows unfinished)"
    assert "(not yet)" in sensitivity.markdown(data)


@pytest.mark.parametrize("holds, expected", [
    ({("0.001", 3), ("0.001", 10)}, "the learning rate (it holds only at lr 0.001 at 3 epochs, lr 0.001 at 10 epochs)"),
    ({("0.0003", 10), ("0.001", 10), ("0.003", 10)}, "the training length"),
    ({("0.001", 10)}, "both the learning rate and the training length"),
    (set(), "nothing tried here: it is reversed at every learning rate and length"),
])
def test_what_the_claim_depends_on(holds, expected):
    rates = (3e-4, 1e-3, 3e-3)
    series = {f"{r:g}": [{"epoch": e, "verdict": "holds" if (f"{r:g}", e) in holds else "reversed"} for e in (3, 10)]
              for r in rates}
    assert sensitivity.depends_on(series, rates, 10).startswith(expected)
