"""``bratseg evaluate --pred PRED --ref REF --out REPORT_DIR``: BraTS metrics of predictions
against references.

The pairs come from ``--pred``/``--ref``, ``--pairs CSV`` or ``--pairs-in-folders DIR``
(:mod:`bratseg.evaluation.pairing`); scoring is :func:`bratseg.evaluation.evaluate_pairs`
and the report files :func:`bratseg.evaluation.write_report`. Progress and unpaired cases go
to stderr, the summary table to stdout.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from bratseg.evaluation import CaseResult, Evaluation, Pairing

_SCHEMES = ("auto", "brats2020", "brats2023")
_SCHEME_HELP = "label values on disk: brats2020 0/1/2/4, brats2023 0/1/2/3; auto: by file name, else by values"


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "evaluate",
        help="BraTS metrics of predictions against references",
        description="Dice, IoU, HD95, sensitivity and specificity of WT/TC/ET and per label; writes metrics.csv, "
        "cases.csv, missing.csv, summary.csv, summary.md and boxplot.png to --out. Give --pred and --ref, "
        "or --pairs, or --pairs-in-folders.",
    )
    p.add_argument("--pred", type=Path, help="label map or folder of label maps <case>.nii.gz")
    p.add_argument("--ref", type=Path, help="label map, folder of case folders, or folder of label files")
    p.add_argument("--pairs", type=Path, metavar="CSV", help="CSV with columns case,pred,ref (relative to the CSV)")
    p.add_argument(
        "--pairs-in-folders",
        type=Path,
        metavar="DIR",
        help="folder of case folders, each with one *_seg/*-seg reference and one prediction",
    )
    p.add_argument("--out", type=Path, required=True, help="report folder")
    p.add_argument("--ref-scheme", choices=list(_SCHEMES), default="auto", help=_SCHEME_HELP)
    p.add_argument("--pred-scheme", choices=list(_SCHEMES), default="auto", help=_SCHEME_HELP)
    p.set_defaults(func=run_evaluate)
    return p


def pairing_from_args(args: argparse.Namespace) -> Pairing:
    """The pairs the options name: exactly one of ``--pred``/``--ref``, ``--pairs`` and
    ``--pairs-in-folders`` (an :class:`~bratseg.evaluation.EvaluationError` otherwise)."""
    from bratseg.evaluation import EvaluationError, match_pairs, pairs_in_folders, read_pairs_csv

    pred, ref = getattr(args, "pred", None), getattr(args, "ref", None)
    pairs, in_folders = getattr(args, "pairs", None), getattr(args, "pairs_in_folders", None)
    modes = [
        name
        for name, given in (
            ("--pred/--ref", pred is not None or ref is not None),
            ("--pairs", pairs is not None),
            ("--pairs-in-folders", in_folders is not None),
        )
        if given
    ]
    if len(modes) != 1:
        got = f" (got {' and '.join(modes)})" if modes else ""
        raise EvaluationError(f"give either --pred and --ref, or --pairs CSV, or --pairs-in-folders DIR{got}")
    if pairs is not None:
        return read_pairs_csv(pairs)
    if in_folders is not None:
        return pairs_in_folders(in_folders)
    if pred is None or ref is None:
        raise EvaluationError("--pred and --ref go together: give both")
    return match_pairs(pred, ref)


def run_evaluate(args: argparse.Namespace) -> Evaluation:
    """The ``bratseg evaluate`` command: pair, score, write the report, print the summary."""
    from bratseg.evaluation import evaluate_pairs, summary_table, write_report

    pairing = pairing_from_args(args)
    for case_id, path in pairing.missing_pred:
        print(f"warning: {case_id}: no prediction for reference {path.name}; not evaluated", file=sys.stderr)
    for case_id, path in pairing.missing_ref:
        print(f"warning: {case_id}: no reference for prediction {path.name}; not evaluated", file=sys.stderr)

    def progress(i: int, n: int, result: CaseResult) -> None:
        wt = result.metrics["WT"]
        print(f"[{i}/{n}] {result.case_id}: WT Dice {wt['dice']:.3f}, HD95 {wt['hd95']:.2f} mm", file=sys.stderr)

    evaluation = evaluate_pairs(
        pairing, getattr(args, "pred_scheme", "auto"), getattr(args, "ref_scheme", "auto"), progress
    )
    paths = write_report(evaluation, args.out)
    print(summary_table(evaluation))
    missing = len(evaluation.missing_pred) + len(evaluation.missing_ref)
    note = f"; {missing} unpaired case(s) listed in {paths['missing'].name}" if missing else ""
    print(f"{len(evaluation.results)} case(s) evaluated; report written to {Path(args.out)}{note}")
    return evaluation
