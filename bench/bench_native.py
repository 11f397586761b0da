"""Benchmark the native pipeline (bratseg.native.segment_native) on the raw TCGA-FG-6692 case:
seconds per step and in total, and the accuracy figures against the reference pipeline.

Per run: the whole pipeline in this process (wall seconds, and this process's CPU seconds,
which other processes on a busy machine inflate least) (the model loaded once, before the first run; the
first run also loads deepbet's networks). Reports each step's median over the runs after the
first, the first run, and, from the last run: the brain mask's Dice against HD-BET on the native
T1ce, the BraTS-space brain mask's Dice against the reference, and the distance between our
atlas-to-native transform and the reference one over the brain.

Usage:
    python bench/bench_native.py [--case DIR] [--runs 4] [--threads N] [--json OUT.json]

The case defaults to ``$BRATSEG_DATA/native/TCGA-FG-6692`` (``../shared/data`` beside the
checkout). Take figures on a quiet machine: the load report says what other processes used.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine_load import MachineLoad  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
DEFAULT_CASE = Path(os.environ.get("BRATSEG_DATA", REPO.parent / "shared" / "data")) / "native" / "TCGA-FG-6692"
SUFFIXES = {"flair": "_fla", "t1ce": "_t1c", "t1": "_t1", "t2": "_t2"}


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2.0 * float((a & b).sum()) / max(float(a.sum() + b.sum()), 1.0)


def accuracy(result, case: Path) -> dict[str, float]:
    from bratseg.native.space import BRATS_AFFINE

    ref = case / "reference"
    hdbet = np.asanyarray(nib.load(ref / "hdbet_native_t1c_brain_mask.nii.gz").dataobj) > 0
    brats_ref = np.asanyarray(nib.load(ref / "brats_space_brain_mask.nii.gz").dataobj) > 0
    ours_brats = np.zeros(brats_ref.shape, dtype=bool)
    for data in result.brats.volumes.images.values():
        ours_brats |= data != 0
    matrix = np.loadtxt(ref / "atlas_to_native_t1c_affine.txt")
    voxels = np.argwhere(brats_ref)[::37]
    points = np.c_[voxels, np.ones(len(voxels))] @ BRATS_AFFINE.T
    distance = np.linalg.norm((points @ result.atlas_to_reference.T - points @ matrix.T)[:, :3], axis=1)
    return {
        "brain_mask_dice_vs_hdbet": round(_dice(np.asanyarray(result.brain_mask.dataobj) > 0, hdbet), 4),
        "brats_space_mask_dice_vs_reference": round(_dice(ours_brats, brats_ref), 4),
        "atlas_transform_mean_mm_vs_reference": round(float(distance.mean()), 2),
        "atlas_transform_max_mm_vs_reference": round(float(distance.max()), 2),
        "whole_tumour_cm3": result.region_volumes()["whole tumour"],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--case", type=Path, default=DEFAULT_CASE)
    parser.add_argument("--runs", type=int, default=4, help="runs in all; the first is reported apart")
    parser.add_argument("--threads", type=int, help="torch and ITK threads (default: one per core)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    if not args.case.is_dir():
        print(f"case not found: {args.case} (set BRATSEG_DATA)", file=sys.stderr)
        return 2
    files = {m: next(args.case.glob(f"*{s}.nii.gz")) for m, s in SUFFIXES.items()}

    t0 = time.perf_counter()
    import SimpleITK as sitk

    import bratseg
    from bratseg.native import segment_native

    if args.threads:
        sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(args.threads)
    segmenter = bratseg.from_pretrained(threads=args.threads)
    load_s = time.perf_counter() - t0
    load = MachineLoad()
    runs, cpu_runs = [], []
    for i in range(args.runs):
        t = time.perf_counter()
        result = segment_native(segmenter, files)
        total = time.perf_counter() - t
        runs.append({"total": total, **result.timings})
        cpu_runs.append({"total": sum(result.cpu_seconds.values()), **result.cpu_seconds})
        print(
            f"run {i + 1}: {total:.2f} s  " + ", ".join(f"{k} {v:.2f}" for k, v in result.timings.items()), flush=True
        )
    load.stop()
    warm = runs[1:] or runs
    medians = {k: round(statistics.median(r[k] for r in warm), 2) for k in runs[0]}
    cpu_medians = {k: round(statistics.median(r[k] for r in (cpu_runs[1:] or cpu_runs)), 2) for k in cpu_runs[0]}
    report = {
        "case": args.case.name,
        "import_and_model_load_s": round(load_s, 2),
        "first_run_s": {k: round(v, 2) for k, v in runs[0].items()},
        "median_s": medians,
        "median_cpu_s": cpu_medians,
        "runs_in_median": len(warm),
        "accuracy": accuracy(result, args.case),
        "warnings": result.warnings,
    }
    print(json.dumps(report, indent=2))
    print(load.report())
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
