"""Benchmark the native pipeline (bratseg.inference.native_path.segment_native): seconds per step, peak memory
and accuracy on three cases, for this checkout and (``--baseline SRC``) another checkout of the
code measured in the same run, alternating, so that both see the same machine load.

Cases (built once under ``--work``, never inside the repository):
- ``half``: a BraTS case (Brats18_2013_11_1 by default) moved onto a 0.5 x 0.5 x 1 mm grid
  (480 x 480 x 155, four sequences on one grid, skull-stripped: a common clinical 3-D
  acquisition), its expert label moved with it (nearest neighbour);
- ``iso``: the same case on 1 mm isotropic grids in two rigid poses (T1ce and T1 in one,
  FLAIR and T2 in the other): a 1 mm 3-D case whose sequences need registering;
- ``tcga``: the raw TCGA-FG-6692 scans (with skull, 5.5 mm slices, each sequence on its own
  grid), scored against the reference pipeline's outputs.

Each run is a fresh child process (model load included; its ``ru_maxrss`` when the pipeline
returns is the peak memory):
seconds per step of ``segment_native``, its total, the child's wall time from start to exit,
and accuracy: Dice against the moved expert label (``half``, ``iso``), or the brain masks' Dice
and the atlas transform's distance to the reference's (``tcga``); and, with ``--baseline``, how
far this checkout's result lies from the baseline's (label Dice, atlas transform distance).

Usage:
    git worktree add /tmp/bratseg_before COMMIT   # the code to compare with; it shares this .venv
    python bench/bench_native.py --runs 3 --baseline /tmp/bratseg_before --json outputs/bench_native.json
    python bench/bench_native.py --cases tcga --runs 1          # this checkout alone
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine_load import MachineLoad  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
DATA = Path(os.environ.get("BRATSEG_DATA", REPO.parent / "shared" / "data"))
TCGA = DATA / "native" / "TCGA-FG-6692"
TCGA_SUFFIXES = {"flair": "_fla", "t1ce": "_t1c", "t1": "_t1", "t2": "_t2"}
CASES = ("half", "tcga", "iso")
# (angles about x, y, z in degrees, translation in mm) of native point -> BraTS point, per pose.
ISO_POSES = {"a": ((4.0, -3.0, 6.0), (4.0, -6.0, 3.0)), "b": ((-3.0, 2.0, -5.0), (-5.0, 3.0, -6.0))}


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2.0 * float((a & b).sum()) / max(float(a.sum() + b.sum()), 1.0)


# --- building the cases -------------------------------------------------------------------


def build_cases(work: Path, brats_case: Path) -> dict[str, dict[str, Path]]:
    """The input files of each case (built once), and ``truth`` where there is a label."""
    cases = {"tcga": {m: next(TCGA.glob(f"*{s}.nii.gz")) for m, s in TCGA_SUFFIXES.items()}}
    for name, builder in (("half", _build_half), ("iso", _build_iso)):
        folder = work / name
        files = {m: folder / f"{m}.nii.gz" for m in ("flair", "t1ce", "t1", "t2", "truth")}
        if not all(f.exists() for f in files.values()):
            folder.mkdir(parents=True, exist_ok=True)
            print(f"building the {name} case in {folder}", flush=True)
            builder(brats_case, files)
        cases[name] = files
    return cases


def _brats_images(brats_case: Path):
    from bratseg.data.io import load_case
    from bratseg.data.labels import to_brats2020
    from bratseg.data.layout import case_from_folder
    from bratseg.native.space import BRATS_AFFINE, to_sitk

    volumes = load_case(case_from_folder(brats_case))
    images = {m: to_sitk(d.astype(np.float32), BRATS_AFFINE) for m, d in volumes.images.items()}
    return images, to_sitk(to_brats2020(volumes.label).astype(np.uint8), BRATS_AFFINE)  # 0/1/2/4, as the output


def _write(image, path: Path, dtype) -> None:
    import nibabel as nib

    from bratseg.native.space import to_array, to_nifti_affine

    data = to_array(image)
    data = np.rint(data).astype(dtype) if np.issubdtype(dtype, np.integer) else data.astype(dtype)
    nib.save(nib.Nifti1Image(data, to_nifti_affine(image)), str(path))


def _build_half(brats_case: Path, files: dict[str, Path]) -> None:
    import SimpleITK as sitk

    images, label = _brats_images(brats_case)
    grid = sitk.Image(480, 480, 155, sitk.sitkUInt8)
    grid.SetSpacing((0.5, 0.5, 1.0))
    grid.SetDirection(label.GetDirection())
    # The same field of view: the first 0.5 mm voxel centre 0.25 mm inside the first 1 mm voxel's edge.
    grid.SetOrigin(label.TransformContinuousIndexToPhysicalPoint((-0.25, -0.25, 0.0)))
    for modality, image in images.items():
        moved = sitk.Resample(image, grid, sitk.Transform(), sitk.sitkBSpline, 0.0, sitk.sitkFloat32)
        _write(sitk.Maximum(moved, 0.0), files[modality], np.int16)
    truth = sitk.Resample(label, grid, sitk.Transform(), sitk.sitkNearestNeighbor, 0, sitk.sitkUInt8)
    _write(truth, files["truth"], np.uint8)


def _build_iso(brats_case: Path, files: dict[str, Path]) -> None:
    import SimpleITK as sitk

    images, label = _brats_images(brats_case)
    centre = np.array(label.TransformContinuousIndexToPhysicalPoint((119.5, 119.5, 77.0)))
    size = np.array((240, 256, 176))
    grid = sitk.Image([int(s) for s in size], sitk.sitkUInt8)
    grid.SetOrigin(tuple(centre - (size - 1) / 2))
    poses = {}
    for name, (angles, shift) in ISO_POSES.items():
        pose = sitk.Euler3DTransform()
        pose.SetCenter(tuple(centre))
        pose.SetRotation(*np.radians(angles))
        pose.SetTranslation(shift)
        poses[name] = pose
    for modality, image in images.items():
        pose = poses["a" if modality in ("t1ce", "t1") else "b"]
        moved = sitk.Resample(image, grid, pose, sitk.sitkBSpline, 0.0, sitk.sitkFloat32)
        _write(sitk.Maximum(moved, 0.0), files[modality], np.int16)
    truth = sitk.Resample(label, grid, poses["a"], sitk.sitkNearestNeighbor, 0, sitk.sitkUInt8)
    _write(truth, files["truth"], np.uint8)


# --- one run, in a child process ----------------------------------------------------------


def child(case: str, files: dict[str, str], out: Path) -> None:
    """One run of ``segment_native`` in this (fresh) process: timings, peak memory, results."""
    t_start = time.perf_counter()
    import nibabel as nib

    import bratseg

    try:
        from bratseg.inference.native_path import segment_native
    except ImportError:  # a baseline checkout from before the native path's move into inference
        from bratseg.native import segment_native

    segmenter = bratseg.from_pretrained()
    load_s = time.perf_counter() - t_start
    images = {m: Path(p) for m, p in files.items() if m != "truth"}
    t0 = time.perf_counter()
    result = segment_native(segmenter, images)
    total = time.perf_counter() - t0
    view = getattr(result, "native", result)  # a baseline's result holds the view's fields itself
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # before the scoring below
    labels = np.asanyarray(view.labels.dataobj)
    report = {
        "case": case,
        "bratseg": str(Path(bratseg.__file__).parent),
        "load_s": load_s,
        "total_s": total,
        "steps_s": dict(view.timings),
        "cpu_s": dict(view.cpu_seconds),  # this process's CPU time per step: what load inflates least
        "steps": result.steps,
        "peak_rss_mb": peak_mb,
        "atlas_to_reference": view.atlas_to_reference.tolist(),
        "process_s": time.perf_counter() - t_start,
    }
    if "truth" in files:
        truth = np.asanyarray(nib.load(files["truth"]).dataobj)
        report["dice"] = _region_dice(labels, truth)
    else:
        report["reference"] = _tcga_accuracy(view, getattr(result, "model_space", None) or result.brats)
    np.save(out.with_suffix(".npy"), labels.astype(np.uint8))
    out.write_text(json.dumps(report, indent=2) + "\n")


def _region_dice(labels: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    """Dice per BraTS region (labels 0/1/2/4)."""
    regions = {"WT": (1, 2, 4), "TC": (1, 4), "ET": (4,)}
    return {name: round(_dice(np.isin(labels, v), np.isin(truth, v)), 4) for name, v in regions.items()}


def _tcga_accuracy(result, model_space) -> dict[str, float]:
    import nibabel as nib

    ref = TCGA / "reference"
    hdbet = np.asanyarray(nib.load(ref / "hdbet_native_t1c_brain_mask.nii.gz").dataobj) > 0
    brats_ref = np.asanyarray(nib.load(ref / "brats_space_brain_mask.nii.gz").dataobj) > 0
    ours_brats = np.zeros(brats_ref.shape, dtype=bool)
    for data in model_space.volumes.images.values():
        ours_brats |= data != 0
    distance = _distance_mm(result.atlas_to_reference, np.loadtxt(ref / "atlas_to_native_t1c_affine.txt"))
    return {
        "brain_mask_dice_vs_hdbet": round(_dice(np.asanyarray(result.brain_mask.dataobj) > 0, hdbet), 4),
        "brats_space_mask_dice_vs_reference": round(_dice(ours_brats, brats_ref), 4),
        "atlas_mean_mm_vs_reference": round(float(distance.mean()), 2),
        "atlas_max_mm_vs_reference": round(float(distance.max()), 2),
    }


def _distance_mm(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """How far two atlas-to-scan matrices put the atlas's brain points apart (mm)."""
    import nibabel as nib

    from bratseg.native.space import BRATS_AFFINE

    # Brain points of BraTS space (the reference pipeline's BraTS-space mask), for every case.
    mask = np.asanyarray(nib.load(TCGA / "reference" / "brats_space_brain_mask.nii.gz").dataobj) > 0
    voxels = np.argwhere(mask)[::37]
    points = np.c_[voxels, np.ones(len(voxels))] @ BRATS_AFFINE.T
    return np.linalg.norm((points @ np.asarray(a).T - points @ np.asarray(b).T)[:, :3], axis=1)


# --- the parent: alternate versions, collect medians ------------------------------------------


def run_child(src: Path, case: str, files: dict[str, Path], out: Path) -> dict:
    env = dict(os.environ, PYTHONPATH=str(src))
    arguments = [json.dumps({m: str(p) for m, p in files.items()}), str(out)]
    command = [sys.executable, str(Path(__file__).resolve()), "--child", case, *arguments]
    subprocess.run(command, env=env, check=True, cwd=src)
    return json.loads(out.read_text())


def summarise(runs: list[dict]) -> dict:
    steps = list(runs[0]["steps_s"])
    median = {k: round(statistics.median(r["steps_s"][k] for r in runs), 2) for k in steps}
    summary = {
        "median_s": median,
        "median_total_s": round(statistics.median(r["total_s"] for r in runs), 2),
        "median_process_s": round(statistics.median(r["process_s"] for r in runs), 2),
        "median_peak_rss_mb": round(statistics.median(r["peak_rss_mb"] for r in runs)),
        "totals_s": [round(r["total_s"], 2) for r in runs],
        "steps": runs[-1]["steps"],
    }
    for key in ("dice", "reference"):
        if key in runs[-1]:
            summary[key] = runs[-1][key]
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", default=",".join(CASES), help=f"comma-separated, of {', '.join(CASES)}")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--baseline", type=Path, help="another checkout of bratseg, measured alternately")
    parser.add_argument("--brats-case", type=Path, default=DATA / "brats18" / "Brats18_2013_11_1")
    parser.add_argument("--work", type=Path, default=REPO / "outputs" / "bench_native")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args, rest = parser.parse_known_args(argv)
    if args.child:
        child(args.child, json.loads(rest[0]), Path(rest[1]))
        return 0
    if not TCGA.is_dir() or not args.brats_case.is_dir():
        print(f"data not found under {DATA} (set BRATSEG_DATA)", file=sys.stderr)
        return 2
    cases = build_cases(args.work, args.brats_case)
    versions = {"after": REPO} | ({"before": args.baseline.resolve()} if args.baseline else {})
    results: dict[str, dict[str, list[dict]]] = {}
    load = MachineLoad()
    for case in args.cases.split(","):
        for i in range(args.runs):
            for version, src in versions.items():
                out = args.work / "runs" / f"{case}_{version}_{i}.json"
                out.parent.mkdir(parents=True, exist_ok=True)
                report = run_child(src, case, cases[case], out)
                results.setdefault(case, {}).setdefault(version, []).append(report)
                if args.json:  # every run so far, in case a long benchmark is cut short
                    args.json.parent.mkdir(parents=True, exist_ok=True)
                    args.json.with_suffix(".runs.json").write_text(json.dumps(results, indent=1) + "\n")
                print(
                    f"{case} {version} run {i + 1}: {report['total_s']:.1f} s, peak {report['peak_rss_mb']:.0f} MB, "
                    + ", ".join(f"{k} {v:.1f}" for k, v in report["steps_s"].items()),
                    flush=True,
                )
    load.stop()
    summary = {}
    for case, by_version in results.items():
        summary[case] = {version: summarise(runs) for version, runs in by_version.items()}
        if "before" in by_version:
            after, before = by_version["after"][-1], by_version["before"][-1]
            labels_after = np.load(args.work / "runs" / f"{case}_after_{args.runs - 1}.npy")
            labels_before = np.load(args.work / "runs" / f"{case}_before_{args.runs - 1}.npy")
            summary[case]["after_vs_before"] = {
                "labels": _region_dice(labels_after, labels_before),
                "atlas_mean_mm": round(
                    float(_distance_mm(after["atlas_to_reference"], before["atlas_to_reference"]).mean()), 2
                ),
                "speed-up": round(
                    summary[case]["before"]["median_total_s"] / summary[case]["after"]["median_total_s"], 2
                ),
                "memory_ratio": round(
                    summary[case]["after"]["median_peak_rss_mb"] / summary[case]["before"]["median_peak_rss_mb"], 2
                ),
            }
    print(json.dumps(summary, indent=2))
    print(load.report())
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"summary": summary, "load": load.report()}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
