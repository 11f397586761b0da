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
the stage's API. ``COMMANDS`` lists them in the order ``bratseg --help`` shows.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from typing import NoReturn

from bratseg.errors import BratsegError

# Every command, in the order of `bratseg --help`. Each module is imported when the parser is
# built and must stay light (no torch import at module level) so that `bratseg --help` is quick.
COMMANDS: tuple[str, ...] = (
    "cache", "soft-targets", "train", "export", "predict", "evaluate", "report", "serve", "measure", "followup",
)  # fmt: skip


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bratseg", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name in COMMANDS:
        importlib.import_module(f"bratseg.cli.{name.replace('-', '_')}").add_parser(sub)
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


def console_main() -> NoReturn:
    """The installed ``bratseg`` command (and ``python -m bratseg``): :func:`main`, then a
    direct exit. With torch loaded, the interpreter's finalization takes about 0.45 s
    (BENCHMARKS.md), a tenth of a one-case ``bratseg predict``, and does nothing a finished
    command needs: every output is written, closed and renamed into place before
    :func:`main` returns, and the standard streams and logging are flushed here. An exception
    leaves the ordinary way, with its traceback."""
    code = main()
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    logging.shutdown()
    os._exit(code)


if __name__ == "__main__":
    console_main()
