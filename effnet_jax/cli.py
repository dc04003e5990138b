"""The ``effnet-jax`` command line: parses arguments and calls the library, nothing more."""

from __future__ import annotations

import argparse
import sys
from typing import Sequence


def _summary(args: argparse.Namespace) -> int:
    from effnet_jax.models import DATASET_INPUT_SHAPES, create_model
    from effnet_jax.summary import summarize

    model = create_model(args.model, dataset=args.dataset)
    shape = tuple(args.input_shape) if args.input_shape else DATASET_INPUT_SHAPES.get(args.dataset, (32, 32, 3))
    print(summarize(model, shape).to_text())
    return 0


def _flops_report(args: argparse.Namespace) -> int:
    from effnet_jax.paper import flops_table_markdown

    print(flops_table_markdown())
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every sub-command."""
    from effnet_jax.models import DATASET_PRESETS, list_models

    parser = argparse.ArgumentParser(prog="effnet-jax", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    summary = commands.add_parser("summary", help="per-layer shapes, parameters and FLOPs of a model")
    summary.add_argument("model", choices=list_models())
    summary.add_argument("--dataset", choices=sorted(DATASET_PRESETS), default=None,
                         help="width/class preset and input shape of a dataset (default: the seed, 32x32x3)")
    summary.add_argument("--input-shape", type=int, nargs=3, metavar=("H", "W", "C"),
                         help="override the input shape")
    summary.set_defaults(handler=_summary)

    report = commands.add_parser("flops-report", help="our FLOPs beside the paper's, every model and dataset")
    report.set_defaults(handler=_flops_report)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``effnet-jax`` script."""
    args = build_parser().parse_args(argv)
    try:
        return args.handler(args)
    except (ValueError, TypeError, FileNotFoundError, FileExistsError, PermissionError) as error:
        print(f"effnet-jax {args.command}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
