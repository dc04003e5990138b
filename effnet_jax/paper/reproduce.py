"""``reproduce(table, workdir)``: train every row of a paper table, resumably, then report.

Layout of the workdir::

    reproduce.json          table, dataset, epochs, seeds, overrides, every command run
    <row>/                  one sweep workdir per row (results.csv once the row is finished)
    <row>/wall_time.json    seconds spent on the row, per invocation, and on what machine
    report.md, report.json, accuracy_vs_flops.png    (``effnet_jax.paper.report``)

A report written elsewhere (``--output``) takes the finished rows' records with it
(``records/``: the manifest and each row's config, metrics, results and wall time, no
checkpoints), so a committed report can be re-derived, and a study resumed on another machine
skips the rows already done once they are copied into its workdir.

Re-running the same command skips finished rows and resumes an interrupted one from its last
checkpoint (the sweep's own resume); a run with another table or dataset in the same workdir is
refused, and a row whose config changed (other epochs, seeds or overrides) is refused by the
sweep's workdir check, before anything trains.
"""

from __future__ import annotations

import logging
import os
import platform
import shutil
import time
from typing import Any, Sequence

from effnet_jax.config import validate_config
from effnet_jax.errors import ConfigError, WorkdirError
from effnet_jax.files import read_json, write_json
from effnet_jax.paper.layout import FINISHED, MANIFEST, WALL_TIME, read_manifest, row_finished
from effnet_jax.paper.report import write_report
from effnet_jax.paper.tables import DEFAULT_SEEDS, get_table, row_config
from effnet_jax.training.experiment import check_workdir

_log = logging.getLogger("effnet_jax")
RECORDS = "records"  # what a report written elsewhere takes with it (``copy_records``)
ROW_RECORDS = ("config.json", "metrics.jsonl", FINISHED, WALL_TIME)


def _update_manifest(workdir: str, settings: dict[str, Any], command: str | None) -> None:
    path = os.path.join(workdir, MANIFEST)
    manifest = read_manifest(workdir) if os.path.exists(path) else {}
    for key in ("table", "dataset", "architecture"):
        if key in manifest and manifest[key] != settings[key]:
            raise WorkdirError(f"workdir {workdir!r} holds the reproduction of {key} {manifest[key]!r}, "
                               f"not {settings[key]!r}: use another workdir")
    commands = manifest.get("commands", []) + ([command] if command else [])
    os.makedirs(workdir, exist_ok=True)
    write_json(path, {**settings, "commands": commands}, indent=2, sort_keys=True)


def machine() -> dict[str, Any]:
    """What computes here: host, CPU model and cores, JAX backend and device count."""
    import jax

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    except OSError:
        pass
    return {"host": platform.node(), "cpu": cpu, "cpu_cores": os.cpu_count(),
            "backend": jax.default_backend(), "devices": jax.device_count(),
            "device_kind": jax.devices()[0].device_kind}


def _add_wall_time(directory: str, seconds: float, cpu_seconds: float, finished: bool) -> None:
    path = os.path.join(directory, WALL_TIME)
    record = {"invocations": []}
    if os.path.exists(path):
        try:
            record = read_json(path, "a row's wall times")
        except WorkdirError as error:  # bookkeeping only: start it again rather than stop the row
            _log.warning("%s; its earlier invocations are not counted", error)
    record["invocations"].append({"seconds": round(seconds, 1), "cpu_seconds": round(cpu_seconds, 1),
                                  "finished": finished,
                                  "ended": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **machine()})
    record["seconds"] = round(sum(i["seconds"] for i in record["invocations"]), 1)
    write_json(path, record, indent=2, sort_keys=True)


def reproduce(table: str, workdir: str, dataset: str | None = None, epochs: int | None = None,
              seeds: int = DEFAULT_SEEDS, rows: Sequence[str] | None = None, overrides: Sequence[str] = (),
              command: str | None = None, architecture: str | None = None) -> str:
    """Trains every row (or the ``rows`` named) of ``table`` on ``dataset`` in ``workdir``,
    skipping finished rows, then writes the report; returns the report's path.

    Args:
      table: ``cifar10``, ``svhn``, ``gtsrb`` or ``section6``.
      workdir: where the rows, their checkpoints and the report go.
      dataset: the dataset trained on (default: the table's; e.g. ``fashion_mnist``).
      epochs, seeds: per row (epochs: default the table's); every seed (at every learning rate
        of a study) is one member of the row's vmapped sweep.
      rows: row slugs to train (default: all); the report lists every row.
      overrides: ``key=value`` config overrides applied to every row (data paths, batch size...).
      command: the command line, recorded in ``reproduce.json`` and the report.
      architecture: ``section6`` only: the paper dataset whose widths the rows take.

    Raises:
      ValueError etc.: a bad table, row, dataset or override, or a workdir holding something
      else, before anything trains. ``Interrupted``: a signal stopped a row (saved; re-run).
    """
    from effnet_jax.sweeps import sweep

    spec = get_table(table)
    if architecture is not None and all(row.architecture for row in spec.rows):
        raise ConfigError(f"--architecture: the rows of table {table!r} have their own widths; leave it out")
    dataset = dataset or spec.default_dataset
    epochs = spec.default_epochs if epochs is None else epochs
    members = spec.members(seeds)
    architecture = spec.architecture(dataset, architecture)
    selected = [spec.row(slug) for slug in rows] if rows else list(spec.rows)
    configs = {row.slug: row_config(spec, row, dataset, epochs, seeds, overrides, architecture) for row in selected}
    for config in configs.values():  # every row's config checked before the first one trains
        validate_config(config)
    _update_manifest(workdir, {"table": table, "dataset": dataset, "architecture": architecture,
                               "epochs": epochs, "seeds": seeds,
                               "overrides": list(overrides)}, command)
    for row in selected:  # a row trained with another config is refused before any trains
        if os.path.exists(os.path.join(workdir, row.slug, "config.json")):
            check_workdir(os.path.join(workdir, row.slug), configs[row.slug], sweep=True)
    for number, row in enumerate(selected, 1):
        directory = os.path.join(workdir, row.slug)
        if row_finished(directory, members):
            _log.info("row %d/%d %s: finished earlier, skipped", number, len(selected), row.label)
            continue
        _log.info("row %d/%d %s: %d members, %d epochs on %s", number, len(selected), row.label, members, epochs,
                  dataset)
        start, cpu_start = time.monotonic(), time.process_time()
        try:
            sweep(configs[row.slug], directory)
        finally:
            if os.path.isdir(directory):
                _add_wall_time(directory, time.monotonic() - start, time.process_time() - cpu_start,
                               row_finished(directory, members))
    return write_reproduction_report(workdir)


def write_reproduction_report(workdir: str, output: str | None = None) -> str:
    """The report of the reproduction in ``workdir`` (``report.write_report`` for the paper's
    tables, ``sensitivity.write_report`` for a study), written into ``output`` (default: the
    workdir); returns the Markdown's path."""
    from effnet_jax.paper import sensitivity

    if output is not None:
        records = os.path.join(output, RECORDS)
        if os.path.abspath(workdir) not in (os.path.abspath(output), os.path.abspath(records)):  # not already there
            copy_records(workdir, records)
    if get_table(read_manifest(workdir)["table"]).learning_rates:
        return sensitivity.write_report(workdir, output)
    return write_report(workdir, output)


def copy_records(workdir: str, destination: str) -> list[str]:
    """Copies the manifest and each finished row's records (``ROW_RECORDS``) of the reproduction
    in ``workdir`` into ``destination`` (a workdir without checkpoints, which ``report`` reads as
    it reads the original); returns the rows copied. Unfinished rows are left out: their
    metrics without their checkpoints would be a row that cannot resume."""
    manifest = read_manifest(workdir)
    table = get_table(manifest["table"])
    os.makedirs(destination, exist_ok=True)
    shutil.copyfile(os.path.join(workdir, MANIFEST), os.path.join(destination, MANIFEST))
    copied = []
    for row in table.rows:
        source = os.path.join(workdir, row.slug)
        if not row_finished(source, table.members(manifest["seeds"])):
            continue
        os.makedirs(os.path.join(destination, row.slug), exist_ok=True)
        for name in ROW_RECORDS:
            if os.path.exists(os.path.join(source, name)):
                shutil.copyfile(os.path.join(source, name), os.path.join(destination, row.slug, name))
        copied.append(row.slug)
    return copied
