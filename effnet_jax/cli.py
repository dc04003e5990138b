"""The ``effnet-jax`` command line: parses arguments and calls the library, nothing more."""

from __future__ import annotations

import argparse
import errno
import os
import signal
import sys
from collections.abc import Sequence

from effnet_jax.errors import ConfigError


def _summary(args: argparse.Namespace) -> int:
    from effnet_jax.models import DATASET_INPUT_SHAPES, create_model
    from effnet_jax.summary import summarize

    model = create_model(args.model, dataset=args.dataset)
    shape = tuple(args.input_shape) if args.input_shape else DATASET_INPUT_SHAPES.get(args.dataset, (32, 32, 3))
    if any(size < 1 for size in shape):
        raise ConfigError(f"--input-shape takes three positive sizes H W C, got {' '.join(map(str, shape))}")
    print(summarize(model, shape).to_text())
    return 0


def _flops_report(args: argparse.Namespace) -> int:
    from effnet_jax.paper import flops_table_markdown

    print(flops_table_markdown())
    return 0


def _print_results(results: dict) -> None:
    import json

    print(json.dumps(results, indent=2, sort_keys=True), flush=True)  # a full device fails here, not at exit


def _train(args: argparse.Namespace) -> int:
    from effnet_jax import configs
    from effnet_jax.config import apply_overrides, check_overrides_unique
    from effnet_jax.parallel.distributed import initialize_from_args, leave
    from effnet_jax.training import train_and_evaluate
    from effnet_jax.training.signals import Interrupted

    check_overrides_unique(args.overrides)
    config = _with_imports(apply_overrides(configs.load(args.config), args.overrides), args)
    initialize_from_args(args)
    results = train_and_evaluate(config, args.workdir, max_steps=args.max_steps)
    leave()
    if results.get("interrupted"):  # reported as a sweep's stop is: one line, a second signal exits at once
        raise Interrupted(results["interrupted"], results["steps"], args.workdir)
    _print_results(results)
    return 0


def _sweep(args: argparse.Namespace) -> int:
    from effnet_jax import configs
    from effnet_jax.config import apply_overrides, check_overrides_unique
    from effnet_jax.sweeps import expand_members, sweep

    check_overrides_unique(args.overrides)
    config = _with_imports(apply_overrides(configs.load(args.config), args.overrides), args)
    rows = sweep(config, args.workdir, max_steps=args.max_steps)
    members = len(expand_members(config))
    if len(rows) < members:  # --max-steps stopped the chunk in training, checkpointed
        print(f"effnet-jax sweep: stopped at --max-steps {args.max_steps} with {len(rows)} of {members} members "
              f"finished; checkpoint saved in {args.workdir}; run the same command again to continue",
              file=sys.stderr)
        return 0
    print(open(f"{args.workdir}/results.md").read())
    print(f"{len(rows)} members; best configuration: {args.workdir}/best_config.json")
    return 0


def _reproduce(args: argparse.Namespace) -> int:
    import shlex

    from effnet_jax.config import check_overrides_unique
    from effnet_jax.paper.reproduce import reproduce

    check_overrides_unique(args.overrides)
    rows = [slug for part in args.rows for slug in part.split(",") if slug] if args.rows else None
    command = "effnet-jax " + shlex.join(sys.argv[1:] if args.argv is None else args.argv)
    report = reproduce(args.table, args.workdir, dataset=args.dataset, epochs=args.epochs, seeds=args.seeds,
                       rows=rows, overrides=args.overrides, command=command, architecture=args.architecture)
    print(open(report).read())
    print(f"report: {report} (report.json and its plot beside it)")
    return 0


def _report(args: argparse.Namespace) -> int:
    from effnet_jax.paper.reproduce import write_reproduction_report

    report = write_reproduction_report(args.workdir, args.output)
    print(open(report).read())
    return 0


def _eval(args: argparse.Namespace) -> int:
    from effnet_jax.training import evaluate_workdir

    if args.argv is None:  # run as the program (a caller of ``main(argv)`` keeps its own handler)
        _exit_at_once_on_ctrl_c("eval")
    _print_results(evaluate_workdir(args.workdir, args.checkpoint))
    return 0


def _positive_int(text: str) -> int:
    """An argument that counts steps: an integer >= 1 (0 would train nothing, or everything)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {value}")
    return value


def _exit_at_once_on_ctrl_c(command: str) -> None:
    """For the commands that only read (``eval``): Ctrl-C ends the process at once with one line.
    Python's KeyboardInterrupt would surface wherever the main thread is, inside JAX or Orbax,
    as a long traceback, or be caught there and lost; nothing needs saving, so nothing is lost."""

    def stop(signum, frame):
        sys.stderr.write(f"effnet-jax {command}: interrupted (Ctrl-C)\n")
        sys.stderr.flush()
        os._exit(128 + signal.SIGINT)

    signal.signal(signal.SIGINT, stop)


def _reopen_closed_streams() -> None:
    """Points a closed stdout or stderr (``effnet-jax ... >&-``: Python then has ``None``) at
    ``/dev/null``: the run's results still go to its workdir, and nothing fails on a write."""
    for name, fd in (("stdout", 1), ("stderr", 2)):
        if getattr(sys, name) is None:
            null = os.open(os.devnull, os.O_WRONLY)
            if null != fd:  # the lowest free descriptor: ``fd`` itself when it was closed
                os.dup2(null, fd)
                os.close(null)
            setattr(sys, name, open(fd, "w", closefd=False))


def _add_distributed_flags(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("multi-host (jax.distributed)")
    group.add_argument("--coordinator", metavar="HOST:PORT", help="address of process 0")
    group.add_argument("--num-processes", type=int, help="number of processes in the job")
    group.add_argument("--process-id", type=int, help="this process's index, 0 .. num-processes - 1")
    group.add_argument("--auto-distributed", action="store_true",
                       help="call jax.distributed.initialize() with no arguments (TPU pods, SLURM, ...)")


def _add_import_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--import", dest="imports", action="append", default=[], metavar="MODULE_OR_FILE",
                        help="import a module or .py file first (e.g. one that registers a model with "
                             "effnet_jax.register_model); repeatable")


def import_modules(names: Sequence[str]) -> list[str]:
    """Imports each of ``names`` (``--import``: a ``.py`` file or a module name on ``sys.path``)
    and returns them as a run records them (``model.imports``): files by absolute path. Raises
    FileNotFoundError (no such file) or ValueError (the module cannot be imported: its error)."""
    from effnet_jax.models.registry import import_module

    for name in names:
        import_module(name)
    return [os.path.abspath(name) if name.endswith(".py") else name for name in names]


def _with_imports(config, args: argparse.Namespace):
    """``config`` recording where its model comes from: this command's ``--import`` modules, or
    those the workdir's run recorded (a resume need not repeat them), imported here."""
    import json

    from effnet_jax.models.registry import ensure_registered

    imports = list(args.recorded_imports)
    saved = os.path.join(args.workdir, "config.json")
    if not imports and os.path.isfile(saved):
        try:
            with open(saved) as f:
                imports = list(json.load(f).get("model", {}).get("imports", []))
        except (OSError, ValueError, AttributeError):  # a damaged config.json: the workdir check names it
            imports = []
    ensure_registered(config.model.name, imports)
    config.model.imports = tuple(imports) or config.model.imports
    return config


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every sub-command."""
    from effnet_jax import __version__
    from effnet_jax.models import DATASET_PRESETS, list_models

    parser = argparse.ArgumentParser(prog="effnet-jax", description=__doc__)
    parser.add_argument("--version", action="version", version=f"effnet-jax {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    summary = commands.add_parser("summary", help="per-layer shapes, parameters and FLOPs of a model")
    summary.add_argument("model", help=f"a registered model: {', '.join(list_models())}, or one --import registers")
    summary.add_argument("--dataset", choices=sorted(DATASET_PRESETS), default=None,
                         help="width/class preset and input shape of a dataset (default: the seed, 32x32x3)")
    summary.add_argument("--input-shape", type=int, nargs=3, metavar=("H", "W", "C"),
                         help="override the input shape")
    _add_import_flag(summary)
    summary.set_defaults(handler=_summary)

    train = commands.add_parser("train", help="train and evaluate a config in a workdir (resumes)")
    train.add_argument("--config", required=True, help="a named config (fashion_mnist, paper_cifar10, ...: see effnet_jax/configs), a config .py file, or a workdir's config.json")
    train.add_argument("--workdir", required=True, help="directory for checkpoints, logs and reports")
    train.add_argument("--max-steps", type=_positive_int, default=None,
                       help="stop (with a checkpoint) after this many steps")
    train.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                       help="config overrides, e.g. train.epochs=3 optimizer.learning_rate=3e-3")
    _add_distributed_flags(train)
    _add_import_flag(train)
    train.set_defaults(handler=_train)

    sweep = commands.add_parser("sweep", help="train a population (seeds x hyperparameters) with vmap")
    sweep.add_argument("--config", required=True,
                       help="a config with a sweep section: a named one (sweep_fashion_mnist, paper_cifar10, ...) or a file")
    sweep.add_argument("--workdir", required=True)
    sweep.add_argument("--max-steps", type=_positive_int, default=None,
                       help="stop the members in training (with a checkpoint) after this many steps")
    sweep.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                       help="config overrides, e.g. sweep.seeds=(0,1,2) sweep.grid.learning_rate=(1e-3,3e-3)")
    _add_import_flag(sweep)
    sweep.set_defaults(handler=_sweep)

    evaluate = commands.add_parser("eval", help="evaluate a workdir's best checkpoint on the test set")
    evaluate.add_argument("--workdir", required=True)
    evaluate.add_argument("--checkpoint", choices=("best", "latest"), default="best")
    _add_import_flag(evaluate)
    evaluate.set_defaults(handler=_eval)

    from effnet_jax.paper.tables import DEFAULT_EPOCHS, DEFAULT_SEEDS, TABLES

    reproduce = commands.add_parser(
        "reproduce", help="train every row of a paper table (5 seeds each, vmapped; resumes) and report")
    reproduce.add_argument("--table", required=True, choices=sorted(TABLES))
    reproduce.add_argument("--workdir", required=True, help="one directory per row, and the report")
    reproduce.add_argument("--dataset", choices=sorted(DATASET_PRESETS), default=None,
                           help="train on this dataset instead of the table's (widths stay the table's)")
    reproduce.add_argument("--architecture", choices=("cifar10", "svhn", "gtsrb"), default=None,
                           help="section6: the paper dataset whose widths the rows take (default: the dataset's "
                                "own, else CIFAR-10's)")
    reproduce.add_argument("--epochs", type=_positive_int, default=None,
                           help=f"epochs per row (the paper gives none; default {DEFAULT_EPOCHS}, the study's 10)")
    reproduce.add_argument("--seeds", type=int, default=DEFAULT_SEEDS, help="runs per row (the paper's 5)")
    reproduce.add_argument("--rows", action="append", metavar="SLUG[,SLUG]",
                           help="train only these rows (e.g. effnet,mobilenet); the report lists all")
    reproduce.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                           help="config overrides for every row, e.g. data.data_dir=/data train.batch_size=256")
    _add_import_flag(reproduce)
    reproduce.set_defaults(handler=_reproduce)

    paper_report = commands.add_parser("report", help="rewrite a reproduction's report (rows finished so far)")
    paper_report.add_argument("--workdir", required=True, help="a workdir of effnet-jax reproduce")
    paper_report.add_argument("--output", default=None, help="directory for the report (default: the workdir); "
                              "elsewhere it also gets records/, the finished rows without checkpoints")
    paper_report.set_defaults(handler=_report, imports=[])

    report = commands.add_parser("flops-report", help="our FLOPs beside the paper's, every model and dataset")
    report.set_defaults(handler=_flops_report, imports=[])
    return parser


def _log_to_stderr() -> None:
    """The library's own log lines (e.g. which implementation a run uses) on stderr."""
    import logging

    class CurrentStderr(logging.StreamHandler):  # whatever sys.stderr is when a record comes
        stream = property(lambda self: sys.stderr, lambda self, value: None)

    logger = logging.getLogger("effnet_jax")
    if not logger.handlers:
        handler = CurrentStderr()
        handler.setFormatter(logging.Formatter("effnet-jax: %(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False  # once, not again through a root handler another library set up
    logging.getLogger("absl").setLevel(logging.ERROR)  # Orbax's notes on every read-only restore
    import warnings

    warnings.filterwarnings("ignore", message="coroutine .* was never awaited")  # Orbax, after a failed save
    for name in ("absl", "asyncio"):  # a full disk: Orbax's threads log each failed write; one line says it
        logging.getLogger(name).addFilter(lambda record: NO_SPACE not in record.getMessage()
                                          and NO_SPACE not in str(record.exc_info[1] if record.exc_info else ""))


def _quiet_closed_event_loops() -> None:
    """After a failed Orbax restore (a damaged checkpoint, reported in one line), TensorStore
    callbacks may still fire into the asyncio loop Orbax already closed; their tracebacks say
    nothing the report did not, so they are dropped (everything else is printed as usual)."""
    import threading

    def closed_loop(error) -> bool:
        return isinstance(error, RuntimeError) and str(error) == "Event loop is closed"

    unraisable, thread_hook = sys.unraisablehook, threading.excepthook
    sys.unraisablehook = lambda info: None if closed_loop(info.exc_value) else unraisable(info)
    threading.excepthook = lambda args: None if closed_loop(args.exc_value) else thread_hook(args)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``effnet-jax`` script (``argv``: arguments, default the command line).

    Run as a program (no ``argv``), it first tunes the process for XLA:CPU where that applies
    (``effnet_jax.host.tune_cpu``: a restart with huge pages, the scratch kept mapped), and keeps
    compiled programs for the next run (``effnet_jax.compilation_cache``).
    """
    _reopen_closed_streams()
    if argv is None:
        from effnet_jax.compilation_cache import enable_compilation_cache
        from effnet_jax.host import tune_cpu

        tune_cpu(many_steps_per_call=True)
        enable_compilation_cache()
    args = build_parser().parse_args(argv)
    args.argv = None if argv is None else list(argv)
    _log_to_stderr()
    _quiet_closed_event_loops()
    try:
        args.recorded_imports = import_modules(args.imports)
        return args.handler(args)
    except KeyboardInterrupt:  # before a command's own handling of signals is in place
        print(f"effnet-jax {args.command}: interrupted (Ctrl-C)", file=sys.stderr)
        return 128 + signal.SIGINT
    except Exception as error:
        code = report_error(args.command, error)
        if code is None:
            raise
        return code


NO_SPACE = "No space left on device"
TRAINING_COMMANDS = ("train", "sweep", "reproduce")


def _discard_unwritten_output() -> None:
    """Sends stdout to ``/dev/null``, so that the output a full device refused is not tried
    again (and refused again, with a traceback) when the interpreter exits."""
    null = os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, 1)
    os.close(null)


def disk_full_path(error: BaseException) -> str | None:
    """The path a full disk refused (or ``""`` if unnamed), or ``None`` for any other error.
    Orbax/TensorStore report a full disk as ``ValueError: RESOURCE_EXHAUSTED ... No space left
    on device`` naming a file under the checkpoint being written."""
    if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
        return error.filename or ""
    text = str(error)
    if NO_SPACE not in text:
        return None
    import re

    match = re.search(r'local file "([^"]+)"', text) or re.search(r"workdir '([^']+)'", text)
    return match.group(1).split(".orbax-checkpoint-tmp")[0] if match else ""


def report_error(command: str, error: Exception) -> int | None:
    """Prints one line for an error a user can act on (``effnet_jax.errors.EffNetJaxError``, or a
    full disk) and returns the exit status; ``None`` for anything else: a bug, in JAX, the library
    or a researcher's own code, whose traceback (file and line) is wanted."""
    from effnet_jax.errors import EffNetJaxError, SweepDiverged, TrainingDiverged

    full = disk_full_path(error)
    if full is not None and command in TRAINING_COMMANDS:
        where = f" (writing {full})" if full else ""
        message = (f"error: no space left on the device{where}; the checkpoints already complete are kept: "
                   "free space and run the same command again to resume")
        status = 2
    elif full is not None:  # e.g. ``eval > /dev/full``: the output could not be written
        message, status = f"error: no space left on the device (writing {full or 'the output'})", 2
        _discard_unwritten_output()
    elif hasattr(error, "exit_status"):  # a run stopped by a signal, after saving
        message, status = str(error), error.exit_status
        from effnet_jax.training.signals import exit_at_once_on_another_signal

        exit_at_once_on_another_signal()
    elif isinstance(error, EffNetJaxError):
        message, status = f"error: {error}", 1 if isinstance(error, (TrainingDiverged, SweepDiverged)) else 2
    else:
        return None
    print(f"effnet-jax {command}: {message}", file=sys.stderr)
    return status


if __name__ == "__main__":
    sys.exit(main())
