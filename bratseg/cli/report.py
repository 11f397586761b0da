"""``bratseg report``: the PDF report of one case.

    bratseg report CASE_DIR --out report.pdf [--model MODEL_DIR] [--png panel.png]
    bratseg report CASE_DIR --seg SEG.nii.gz --out report.pdf [--confidence]

Without ``--seg`` the model runs and its prediction is reported; with it, that label map is
reported, and ``--confidence`` runs the model once for its confidence on the case
(:func:`bratseg.reporting.case_report.report_case`).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from bratseg.data.layout import nifti_stem
from bratseg.errors import ReportError


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """The ``report`` sub-command's arguments and handler."""
    p = subparsers.add_parser(
        "report",
        help="PDF report of a case: volumes, confidence, key slices",
        description="Write a one-page PDF report of a case: sequences used, preprocessing, region volumes, "
        "confidence score and flag, key slices in three planes, the model's name and weights hash. "
        "Research use only; not a medical device.",
    )
    p.add_argument("case", type=Path, metavar="CASE_DIR", help="the case folder (its images are shown)")
    p.add_argument("--out", "-o", type=Path, required=True, help="the PDF to write")
    p.add_argument(
        "--model", help="model folder or Hugging Face Hub id namespace/name[@revision] (default: the shipped model)"
    )
    p.add_argument("--seg", type=Path, metavar="SEG", help="report this label map instead of running the model")
    p.add_argument(
        "--confidence",
        action="store_true",
        help="with --seg: run the model for its probabilities, to report its confidence on the case",
    )
    p.add_argument("--png", type=Path, metavar="PNG", help="also write the key-slice panel as a PNG")
    p.set_defaults(func=run_report)
    return p


def run_report(args: argparse.Namespace) -> None:
    """Run ``bratseg report`` (errors are :class:`~bratseg.errors.BratsegError`)."""
    if nifti_stem(args.case) is not None and args.case.is_file():
        raise ReportError(
            f"{args.case}: a label map alone has no images to show; give the case folder and --seg {args.case.name}"
        )
    if args.confidence and args.seg is None:
        raise ReportError("--confidence goes with --seg (without --seg the model runs and scores anyway)")
    from bratseg.reporting.case_report import report_case

    out, confidence = report_case(
        args.case, args.out, model=args.model, seg=args.seg, confidence=args.confidence, png=args.png
    )
    line = f"report written to {out}"
    if confidence is not None:
        line += f"; {confidence.describe()}"
    print(line)
