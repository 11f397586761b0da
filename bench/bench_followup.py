"""Test-retest spread of the follow-up comparison (``bratseg followup``) over every labelled
case, and the time of one comparison.

For each case (``brats18/`` and ``brats-extra/``: 27 with an expert label) the follow-up is the
same patient "scanned again" in a clinical pose: its T1ce and FLAIR rotated (up to 8 degrees
about each axis) and shifted (up to 8 mm), resampled onto a 0.94 x 0.94 x 5 mm axial grid
(256 x 256 x 32) whose slices start at a random phase, each with its own pose (seeded per case,
so reruns build the same poses); the **expert label** is moved with the T1ce (nearest
neighbour). ``run_followup`` then compares the baseline (the expert label on the BraTS grid)
with the follow-up (the moved label, given with ``--followup-seg``): it skull-strips the posed
T1ce, registers it to the baseline T1ce, measures both maps, and classifies. No segmentation
error enters: what is measured is the error of measuring the same tumour on another grid
(5 mm slices) and of the registration, which any real follow-up carries on top of the model's.

Reported per case and summarised (median, mean |change|, 95th percentile |change| and the
largest): the percent change of the whole-tumour, tumour-core and enhancing volumes and of the
SPD measured on the follow-up's own grid (what ``followup.json`` reports), the same for the
follow-up label moved back onto the baseline grid through the registration found, the WT Dice
of that moved-back label with the original, the category (all should be stable disease), and
the seconds per comparison. ``--segment N`` also times N full comparisons that segment both
time points (the baseline on the fast path, the posed follow-up on the native path) of the
first case, and gives their changes.

Usage:
    nice -n 5 python bench/bench_followup.py --json outputs/bench_followup.json --segment 1
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
import zlib
from pathlib import Path

import nibabel as nib
import numpy as np
import SimpleITK as sitk

REPO = Path(__file__).resolve().parent.parent
DATA = Path(os.environ.get("BRATSEG_DATA", REPO.parent / "shared" / "data"))
GRID = ((256, 256, 32), (0.9375, 0.9375, 5.0))
MAX_ANGLE_DEG, MAX_SHIFT_MM = 8.0, 8.0
REGIONS = ("whole tumour", "tumour core", "enhancing tumour")


def labelled_cases() -> list[Path]:
    cases = []
    for folder in ("brats18", "brats-extra"):
        root = DATA / folder
        if root.is_dir():
            cases += sorted(p for p in root.iterdir() if (p / f"{p.name}_seg.nii.gz").is_file())
    return cases


def _pose(rng: np.random.Generator, centre: np.ndarray) -> sitk.Euler3DTransform:
    pose = sitk.Euler3DTransform()
    pose.SetCenter(tuple(float(c) for c in centre))
    pose.SetRotation(*np.radians(rng.uniform(-MAX_ANGLE_DEG, MAX_ANGLE_DEG, 3)))
    pose.SetTranslation(tuple(float(t) for t in rng.uniform(-MAX_SHIFT_MM, MAX_SHIFT_MM, 3)))
    return pose


def build_posed(case: Path, out: Path) -> tuple[Path, Path]:
    """The case's T1ce and FLAIR, each in its own random pose on a 5 mm grid, and the expert
    label moved with the T1ce. Returns (folder, label path)."""
    from bratseg.data.io import load_case
    from bratseg.data.layout import case_from_folder
    from bratseg.native.space import BRATS_AFFINE, to_sitk

    volumes = load_case(case_from_folder(case))
    rng = np.random.default_rng(zlib.crc32(case.name.encode()))
    out.mkdir(parents=True, exist_ok=True)
    size, spacing = GRID
    poses = {}
    for modality in ("t1ce", "flair"):
        image = to_sitk(volumes.images[modality], BRATS_AFFINE)
        centre = np.array(image.TransformContinuousIndexToPhysicalPoint((119.5, 119.5, 77.0)))
        poses[modality] = _pose(rng, centre)
        grid = sitk.Image(size, sitk.sitkFloat32)
        grid.SetSpacing(spacing)
        phase = np.array([0.0, 0.0, rng.uniform(-spacing[2] / 2, spacing[2] / 2)])
        grid.SetOrigin(tuple(centre + phase - (np.array(size) - 1) / 2 * np.array(spacing)))
        moved = sitk.Resample(image, grid, poses[modality], sitk.sitkLinear, 0.0, sitk.sitkFloat32)
        sitk.WriteImage(moved, str(out / f"posed_{modality}.nii.gz"))
        if modality == "t1ce":
            from bratseg.data.labels import to_brats2020

            label = to_sitk(to_brats2020(volumes.label), BRATS_AFFINE)
            moved_label = sitk.Resample(label, grid, poses[modality], sitk.sitkNearestNeighbor, 0, sitk.sitkUInt8)
            sitk.WriteImage(moved_label, str(out.parent / f"{case.name}_posed_seg.nii.gz"))
    return out, out.parent / f"{case.name}_posed_seg.nii.gz"


def _change(before: float, after: float) -> float | None:
    return None if before <= 0 else 100.0 * (after - before) / before


def compare(case: Path, work: Path) -> dict:
    from bratseg.followup import FILES, run_followup
    from bratseg.measurement.rano import measure, measure_file

    posed, posed_seg = build_posed(case, work / case.name / "posed")
    seg = case / f"{case.name}_seg.nii.gz"
    start = time.perf_counter()
    result = run_followup(None, case, posed, work / case.name / "out", baseline_seg=seg, followup_seg=posed_seg)
    seconds = time.perf_counter() - start
    baseline = measure_file(seg)
    back_img = nib.load(str(work / case.name / "out" / FILES["followup_seg_on_baseline"]))
    back_labels = np.asarray(back_img.dataobj)
    back = measure(back_labels, back_img.affine)
    original = np.asarray(nib.load(str(seg)).dataobj)
    dice = 2 * float(((original > 0) & (back_labels > 0)).sum()) / float((original > 0).sum() + (back_labels > 0).sum())
    row = {
        "case": case.name,
        "response": result.response,
        "seconds": round(seconds, 1),
        "baseline_spd_mm2": round(baseline.spd_mm2, 1),
        "baseline_et_cm3": baseline.volumes_cm3["enhancing tumour"],
        "own_grid": {**{r: result.change["volumes_percent"][r] for r in REGIONS}, "spd": result.change["spd_percent"]},
        "moved_back": {
            **{r: _change(baseline.volumes_cm3[r], back.volumes_cm3[r]) for r in REGIONS},
            "spd": _change(baseline.spd_mm2, back.spd_mm2),
        },
        "moved_back_wt_dice": round(dice, 4),
        "registration": result.registration,
    }
    print(json.dumps(row), flush=True)
    return row


def summarise(values: list[float | None]) -> dict:
    present = [v for v in values if v is not None]
    if not present:
        return {"n": 0}
    absolute = sorted(abs(v) for v in present)
    return {
        "n": len(present),
        "median": round(statistics.median(present), 2),
        "mean_abs": round(statistics.fmean(absolute), 2),
        "p95_abs": round(float(np.percentile(absolute, 95)), 2),
        "max_abs": round(absolute[-1], 2),
    }


def segmented(case: Path, work: Path, runs: int) -> list[dict]:
    """Full comparisons of ``case`` with its posed copy, both segmented."""
    from bratseg.followup import run_followup
    from bratseg.inference.predictor import Segmenter
    from bratseg.reporting.followup_report import write_followup_report

    posed, _ = build_posed(case, work / case.name / "posed")
    segmenter = Segmenter.from_pretrained()
    rows = []
    for run in range(runs):
        start = time.perf_counter()
        out = work / case.name / f"segmented_{run}"
        result = run_followup(segmenter, case, posed, out, report=write_followup_report)
        rows.append(
            {
                "case": case.name,
                "seconds": round(time.perf_counter() - start, 1),
                "response": result.response,
                "change": result.change,
                "registration": result.registration,
                "confidence": result.confidence,
            }
        )
        print(json.dumps(rows[-1]), flush=True)
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", type=Path, help="folder for the posed cases (default: a temporary one)")
    parser.add_argument("--json", type=Path, help="write every row and the summary here")
    parser.add_argument("--limit", type=int, help="only the first N cases")
    parser.add_argument("--segment", type=int, default=0, help="also time N comparisons that segment both")
    args = parser.parse_args()
    cases = labelled_cases()[: args.limit]
    if not cases:
        print(f"no labelled cases under {DATA}", file=sys.stderr)
        return 1
    work = args.work or Path(tempfile.mkdtemp(prefix="bench_followup_"))
    rows = [compare(case, work) for case in cases]
    summary = {
        grid: {key: summarise([row[grid][key] for row in rows]) for key in (*REGIONS, "spd")}
        for grid in ("own_grid", "moved_back")
    }
    summary["moved_back_wt_dice"] = summarise([row["moved_back_wt_dice"] for row in rows])
    summary["stable"] = sum(row["response"] == "stable disease" for row in rows)
    summary["cases"] = len(rows)
    summary["seconds"] = summarise([row["seconds"] for row in rows])
    full = segmented(cases[0], work, args.segment) if args.segment else []
    print(json.dumps(summary, indent=2))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"rows": rows, "summary": summary, "segmented": full}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
