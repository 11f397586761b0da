"""The ``bratseg`` command: one sub-command per stage.

bratseg cache DATA_DIR --out CACHE_DIR
bratseg train --cache CACHE_DIR --out RUN_DIR [--config FILE] [--epochs N] [--resume]
bratseg export RUN_DIR --out MODEL_DIR [--checkpoint last] [--confidence-threshold T] [--push-to-hub ID]
bratseg predict CASE_OR_DATA_DIR --output OUT [--model MODEL_DIR]
bratseg evaluate --pred PRED --ref REF --out REPORT_DIR
bratseg report CASE_DIR --out report.pdf [--model MODEL_DIR] [--seg SEG.nii.gz]
bratseg serve [--host H] [--port P] [--model MODEL_DIR] [--data-root DIR]
bratseg measure SEG.nii.gz [--json]
bratseg followup BASELINE FOLLOWUP --out DIR

Each command lives in a module of this package (``bratseg/cli/<command>.py``) with
``add_parser(subparsers)``, which registers its arguments and its handler; the handler calls
the stage's API. ``COMMANDS`` lists them in the order ``bratseg --help`` shows; ``predict`` and
``report`` are registered here.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable

from bratseg.errors import BratsegError

# Every command, in the order of `bratseg --help`. Each module is imported when the parser is
# built and must stay light (no torch import at module level) so that `bratseg --help` is quick.
COMMANDS: tuple[str, ...] = (
    "cache", "train", "export", "predict", "evaluate", "report", "serve", "measure", "followup",
)  # fmt: skip


def _cmd_predict(args: argparse.Namespace) -> None:
    if args.server is not None:
        _predict_on_server(args)
        return
    from bratseg.inference.cli_predict import run_predict

    run_predict(args)


# What a server cannot be asked (options that change the model, its settings or the outputs),
# with the value each has when not given.
_LOCAL_ONLY = {
    "model": None, "flair": None, "t1": None, "t1ce": None, "t2": None, "keep_intermediate": None, "tta": False,
    "precision": "auto", "threads": None, "batch_size": None, "uncertainty": False, "figures": None,
}  # fmt: skip


def _predict_on_server(args: argparse.Namespace) -> None:
    """``bratseg predict CASE --output OUT.nii.gz --server URL``: no torch, no model here."""
    from bratseg.serving.client import predict_remote

    given = [name for name, unset in _LOCAL_ONLY.items() if getattr(args, name, unset) != unset]
    if given:
        options = ", ".join("--" + name.replace("_", "-") for name in given)
        raise BratsegError(f"{options}: not with --server (the server's model and settings apply)")
    if args.case is None or not args.output.name.lower().endswith((".nii", ".nii.gz")):
        raise BratsegError("--server predicts one case: give its folder (or .zip) and --output OUT.nii.gz")
    result = predict_remote(args.server, args.case, args.output, preprocess=args.preprocess)
    if not args.quiet:
        shown = ("whole tumour", "tumour core", "enhancing tumour")  # as a local call prints them
        volumes = ", ".join(f"{name} {result.volumes[name]:.1f} cm3" for name in shown if name in result.volumes)
        print(f"{args.case.name}: {volumes} -> {result.output} (by {args.server})")
    for warning in result.warnings:
        print(f"{args.case.name}: warning: {warning}", file=sys.stderr)


def _add_predict(sub: argparse._SubParsersAction) -> None:
    from bratseg.inference.cli_predict import add_predict_parser  # light: no torch import

    add_predict_parser(sub).set_defaults(func=_cmd_predict)


def _cmd_report(args: argparse.Namespace) -> None:
    from bratseg.reporting.cli_report import run_report

    run_report(args)


def _add_report(sub: argparse._SubParsersAction) -> None:
    from bratseg.reporting.cli_report import add_report_parser

    add_report_parser(sub).set_defaults(func=_cmd_report)


# The commands registered in this module; every other one by bratseg.cli.<command>.add_parser.
_HERE: dict[str, Callable[[argparse._SubParsersAction], None]] = {"predict": _add_predict, "report": _add_report}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bratseg", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name in COMMANDS:
        add = _HERE.get(name) or importlib.import_module(f"bratseg.cli.{name}").add_parser
        add(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except BratsegError as exc:
        print(f"bratseg {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except FileExistsError as exc:
        print(f"bratseg {args.command}: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
