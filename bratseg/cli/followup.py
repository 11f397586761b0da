"""``bratseg followup BASELINE FOLLOWUP --out DIR``: compare a follow-up scan with its baseline.

Both time points are anything ``bratseg predict`` takes (a BraTS-space case folder, raw NIfTI,
a DICOM study); each is segmented on its own path, or its label map is given with
``--baseline-seg`` / ``--followup-seg``. Writes ``DIR/followup.json``, the label maps on the
baseline grid, the difference map (:mod:`bratseg.followup`) and ``DIR/report.pdf``
(:mod:`bratseg.reporting.followup_report`), and prints the category and the changes.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "followup",
        help="compare a follow-up scan with its baseline: RANO measurements, changes, response category",
        description="Segment (or take the label maps of) two time points, register the follow-up to the baseline "
        "(rigid, T1ce to T1ce, brain-masked), measure both as RANO does and give the changes and the RANO 2.0 "
        "response category from the imaging alone (clinical criteria, steroids and confirmation scans are not part "
        "of it). Writes followup.json, the label maps, a difference map and report.pdf to --out.",
    )
    p.add_argument("baseline", type=Path, metavar="BASELINE", help="baseline case folder, raw NIfTI folder or DICOM")
    p.add_argument("followup", type=Path, metavar="FOLLOWUP", help="follow-up case folder, raw NIfTI folder or DICOM")
    p.add_argument("--out", type=Path, required=True, help="output folder")
    p.add_argument("--model", help="model folder or Hugging Face Hub id (default: the shipped model)")
    p.add_argument("--baseline-seg", type=Path, help="use this label map for the baseline instead of segmenting")
    p.add_argument("--followup-seg", type=Path, help="use this label map for the follow-up instead of segmenting")
    p.add_argument(
        "--preprocess",
        choices=("auto", "native", "none"),
        default="auto",
        help="auto: BraTS-space input as it is, anything else through the native pipeline (as bratseg predict)",
    )
    p.add_argument("--no-report", action="store_true", help="do not write report.pdf")
    p.add_argument("--quiet", action="store_true", help="print the category line only")
    p.set_defaults(func=run_followup_command)
    return p


def run_followup_command(args: argparse.Namespace) -> None:
    from bratseg.followup import run_followup
    from bratseg.reporting.followup_report import write_followup_report

    segmenter = None
    if args.baseline_seg is None or args.followup_seg is None:
        from bratseg.inference.predictor import Segmenter

        segmenter = Segmenter.from_pretrained(args.model)  # a folder, a Hub id, or None: the shipped model
    elif args.model is not None:
        print("bratseg followup: note: both label maps given, --model is not used", file=sys.stderr)

    def log(line: str) -> None:
        if not args.quiet:
            print(line, file=sys.stderr, flush=True)

    result = run_followup(
        segmenter,
        args.baseline,
        args.followup,
        args.out,
        baseline_seg=args.baseline_seg,
        followup_seg=args.followup_seg,
        preprocess=args.preprocess,
        log=log,
        report=None if args.no_report else write_followup_report,
    )
    flag = " [FLAGGED: review carefully]" if result.flagged else ""
    print(f"response (imaging only): {result.response}{flag}")
    if args.quiet:
        return
    for reason in result.reasons:
        print(f"  {reason}")
    b, f = result.baseline, result.followup
    spd = result.change["spd_percent"]
    print(f"SPD {b.spd_mm2:.1f} -> {f.spd_mm2:.1f} mm2 ({'n/a' if spd is None else f'{spd:+.1f} %'})")
    for region, before in b.volumes_cm3.items():
        change = result.change["volumes_percent"][region]
        text = "n/a" if change is None else f"{change:+.1f} %"
        print(f"{region}: {before:.2f} -> {f.volumes_cm3[region]:.2f} cm3 ({text})")
    for name, source in result.sources.items():
        for warning in source["warnings"]:
            print(f"{name}: warning: {warning}")
    for note in result.notes:
        print(f"note: {note}")
    report = "" if args.no_report else ", report.pdf"
    print(f"results in {result.out_dir} (followup.json, label maps, difference.nii.gz{report})")
