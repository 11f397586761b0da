"""The measurements behind the content checks (bratseg.inference.sequence_content, one_head)
and the DICOM study checks (bratseg.native.dicom): no false alarm on any real input, and what
they catch on constructed bad inputs.

``real``: on every real BraTS-space case in the data folder (27 labelled BraTS cases,
TCGA-DU-7294, the two BraTS 2023 cases) and on the raw TCGA-FG-6692 scans skull-stripped with
the reference mask in BraTS space: each sequence's distinct values, commonest-value share,
standard deviation, share below the background and outline rank; each pair's outline and
mutual-information gains; the verdict of ``guards.check_input`` (it must pass); and the wall
and CPU time the new checks add (medians of ``--repeats`` runs).

``mixed``: each real case's FLAIR and T1 with the next case's T1ce and T2 (and FLAIR with the
next case's T1ce alone): the pair gains and the verdict (it must refuse).

``catches``: constructed bad inputs (tests/guard_inputs.py) on the cases given: the verdict.

``native``: the native pipeline on the raw TCGA-FG-6692 scans (the checks run on its
BraTS-space volumes), again, and on them with a FLAIR written with a header scl_slope of 1e-30
(its labels against the first run's, beside the second plain run's); every real DICOM series
with the slice-spacing check.

    python bench/content_probes.py real
    python bench/content_probes.py mixed
    python bench/content_probes.py catches --cases Brats18_2013_11_1,Brats18_TCIA10_637_1,BraTS-MET-00110-000
    python bench/content_probes.py native
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))  # the transformations shared with the guard tests

import guard_inputs as gi  # noqa: E402

from bratseg.data.io import CaseVolumes, load_case  # noqa: E402
from bratseg.data.layout import case_from_folder  # noqa: E402
from bratseg.errors import BratsegError  # noqa: E402
from bratseg.inference import guards  # noqa: E402
from bratseg.inference.case_signals import CaseSignals  # noqa: E402
from bratseg.inference.one_head import head_groups, pair_alignments  # noqa: E402
from bratseg.inference.sequence_content import measure_sequence  # noqa: E402
from bratseg.preprocessing.config import PreprocessingConfig  # noqa: E402

DATA = Path(os.environ.get("BRATSEG_DATA", REPO.parent / "shared" / "data"))
CONFIG = PreprocessingConfig()


def real_folders() -> list[Path]:
    return [
        *sorted((DATA / "brats18").iterdir()),
        *sorted((DATA / "brats-extra").iterdir()),
        DATA / "tcga" / "TCGA-DU-7294",
        *sorted((DATA / "unlabeled").iterdir()),
    ]


def stripped_native() -> CaseVolumes:
    """TCGA-FG-6692 in BraTS space through the reference registration, the reference brain mask
    applied: a real skull-stripped case from another pipeline."""
    import nibabel as nib

    native = DATA / "native" / "TCGA-FG-6692"
    head = gi.native_in_brats_space(native, ("flair", "t1ce", "t1", "t2"))
    mask = np.asanyarray(nib.load(str(native / "reference" / "brats_space_brain_mask.nii.gz")).dataobj) > 0
    return gi.with_images(head, {m: np.where(mask, d, 0).astype(np.float32) for m, d in head.images.items()})


def verdict(volumes: CaseVolumes) -> str:
    try:
        warnings = guards.check_input(volumes, CONFIG)
    except BratsegError as exc:
        return f"REFUSED ({type(exc).__name__}): {exc}"
    return "pass" + (f" (warnings: {warnings})" if warnings else "")


def new_checks_seconds(volumes: CaseVolumes) -> tuple[float, float]:
    """Wall and CPU seconds of the content and one-head measurements alone, on fresh signals
    (the brain mask and backgrounds, which the older guards compute anyway, made first)."""
    signals = CaseSignals(volumes.images, volumes.affine)
    _ = signals.mask, signals.box
    wall, cpu = time.perf_counter(), time.process_time()
    for modality in volumes.images:
        measure_sequence(signals, modality)
    head_groups(signals)
    return time.perf_counter() - wall, time.process_time() - cpu


def measurements(volumes: CaseVolumes) -> dict:
    signals = CaseSignals(volumes.images, volumes.affine)
    row: dict = {}
    for modality in volumes.images:
        c = measure_sequence(signals, modality)
        row[modality] = {
            "distinct": c.distinct,
            "dominant_share": round(c.dominant_share, 4),
            "spread": round(c.spread, 3),
            "below_background": round(c.below_background, 4),
            "outline_rank": None if c.outline_rank is None else round(c.outline_rank, 3),
        }
    row["pairs"] = {
        f"{p.first}-{p.second}": [round(p.outline_gain, 4), round(p.nmi_gain, 4)] for p in pair_alignments(signals)
    }
    row["heads"] = head_groups(signals)
    return row


def run_real(repeats: int) -> None:
    cases = [(f.name, lambda f=f: load_case(case_from_folder(f))) for f in real_folders()]
    if (DATA / "native" / "TCGA-FG-6692").is_dir():
        cases.append(("TCGA-FG-6692 (reference mask)", stripped_native))
    for name, load in cases:
        volumes = load()
        timings = [new_checks_seconds(volumes) for _ in range(repeats)]
        wall, cpu = (statistics.median(t[i] for t in timings) for i in (0, 1))
        row = {"case": name, **measurements(volumes), "wall_s": round(wall, 3), "cpu_s": round(cpu, 3)}
        row["guards"] = verdict(volumes)
        print(json.dumps(row), flush=True)


def run_mixed() -> None:
    folders = real_folders()
    previous = load_case(case_from_folder(folders[-1]))
    for folder in folders:
        current = load_case(case_from_folder(folder))
        four = gi.two_patients(previous, current, ("t1ce", "t2"))
        two = gi.only(gi.two_patients(previous, current, ("t1ce",)), "flair", "t1ce")
        for what, volumes in (("flair+t1 | t1ce+t2", four), ("flair | t1ce", two)):
            row = {"case": f"{previous.case_id} + {current.case_id}", "mix": what, **measurements(volumes)}
            print(json.dumps({**row, "guards": verdict(volumes)}), flush=True)
        previous = current


def run_catches(cases: list[str]) -> None:
    for name in cases:
        original = load_case(case_from_folder(next(DATA.glob(f"*/{name}"))))
        for probe, make in gi.CONTENT_PROBES.items():
            if "label_map" in probe and original.label is None:
                continue
            volumes = make(original)
            print(json.dumps({"case": name, "probe": probe, "guards": verdict(volumes)}), flush=True)


def run_native() -> None:
    import nibabel as nib

    import bratseg
    from bratseg.inference.native_path import segment_native
    from bratseg.native.dicom import find_series, slice_gap_problem

    segmenter = bratseg.from_pretrained()
    native = DATA / "native" / "TCGA-FG-6692"
    files = {m: next(native.glob(f"*_{s}.nii.gz")) for m, s in (("flair", "fla"), ("t1ce", "t1c"), ("t1", "t1"))}
    files["t2"] = next(native.glob("*_t2.nii.gz"))
    first = segment_native(segmenter, files)
    labels = np.asanyarray(first.native.labels.dataobj)
    row = {"case": "TCGA-FG-6692 native pipeline", "guards": "pass", "warnings": first.warnings}
    row.update(measurements(first.model_space.volumes))
    print(json.dumps(row), flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        img = nib.load(str(files["flair"]))
        tiny = gi.save_with_scaling(
            np.asanyarray(img.dataobj.get_unscaled()), img.affine, Path(tmp) / "t_fla.nii.gz", 1e-30
        )
        assert nib.load(str(tiny)).dataobj.slope < 1e-29
        try:
            again = np.asanyarray(segment_native(segmenter, files).native.labels.dataobj)
            second = segment_native(segmenter, {**files, "flair": tiny})
            same = float(np.mean(np.asanyarray(second.native.labels.dataobj) == labels))
            row = {"case": "TCGA-FG-6692, FLAIR scl_slope 1e-30", "labels_identical_share": same}
            # The pipeline run twice on the same files, for scale (multi-threaded registration).
            row["plain_rerun_identical_share"] = float(np.mean(again == labels))
            print(json.dumps(row))
        except BratsegError as exc:
            print(json.dumps({"case": "TCGA-FG-6692, FLAIR scl_slope 1e-30", "refused": str(exc)}))
    for vendor in sorted((DATA / "dicom").iterdir()):
        for series in find_series(vendor / "series"):
            print(json.dumps({"dicom": vendor.name, "series": series.label, "gap": slice_gap_problem(series)}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("what", choices=["real", "mixed", "catches", "native"])
    parser.add_argument("--cases", default="Brats18_2013_11_1,Brats18_TCIA10_637_1,BraTS-MET-00110-000")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    if not DATA.is_dir():
        sys.exit(f"{DATA}: not found (set BRATSEG_DATA)")
    if args.what == "real":
        run_real(args.repeats)
    elif args.what == "mixed":
        run_mixed()
    elif args.what == "catches":
        run_catches(args.cases.split(","))
    else:
        run_native()


if __name__ == "__main__":
    main()
