"""The measurements behind the input and result guards (bratseg.inference.guards).

``stats``: what the guards measure on every real case in the data folder (27 labelled BraTS
cases, TCGA-DU-7294, the two BraTS 2023 cases): brain volume, share of the border at the
background value, brain on the volume's faces, rim contrast on T1/T1ce, mirroring margin,
T1ce enhancement over T1, share of the brain in the model's window, the expert tumour's share
of the brain, and whether the guards pass the case (they must: no false alarm).

``probes``: the shipped model on real cases transformed as a careless user's input would be
(skull on, background offset or noisy, resampled, mirrored or replaced modalities, other slice
orientations). Per input: the predicted whole-tumour and enhancing volumes and the Dice against
the expert *before* the guards (network run with the guards bypassed and, for the background
transforms, the old "non-zero" brain mask), then what happens *after*: refused with which
reason, or handled (the prediction is then that of the handled input).

    python bench/guard_probes.py stats
    python bench/guard_probes.py probes --cases Brats18_TCIA01_201_1,Brats18_2013_11_1 [--only iso_2mm,skull]

Timings are not the point: a prediction takes about a minute on a busy 2-core machine.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))  # the transformations shared with the guard tests

import guard_inputs as gi  # noqa: E402

from bratseg.data.io import CaseVolumes, load_case  # noqa: E402
from bratseg.data.layout import case_from_folder  # noqa: E402
from bratseg.errors import BratsegError  # noqa: E402
from bratseg.inference import guards  # noqa: E402
from bratseg.inference.case_signals import CaseSignals, left_right_axis, rim_share  # noqa: E402
from bratseg.preprocessing.config import PreprocessingConfig  # noqa: E402

DATA = Path(os.environ.get("BRATSEG_DATA", REPO.parent / "shared" / "data"))
CONFIG = PreprocessingConfig()

PROBES: dict[str, Callable[[CaseVolumes], CaseVolumes]] = {
    "original": lambda v: v,
    "skull": gi.skull_on,
    "offset+100": lambda v: gi.offset(v, 100.0),
    "zscored_whole_volume": gi.zscored_whole_volume,
    "noisy_air_3pct": gi.noisy_air,
    "iso_2mm": lambda v: gi.resampled(v, (2.0, 2.0, 2.0)),
    "iso_1.5mm": lambda v: gi.resampled(v, (1.5, 1.5, 1.5)),
    "iso_1.25mm": lambda v: gi.resampled(v, (1.25, 1.25, 1.25)),
    "iso_1.1mm": lambda v: gi.resampled(v, (1.1, 1.1, 1.1)),
    "iso_0.9mm": lambda v: gi.resampled(v, (0.9, 0.9, 0.9)),
    "iso_0.8mm": lambda v: gi.resampled(v, (0.8, 0.8, 0.8)),
    "inplane_0.7mm": lambda v: gi.resampled(v, (0.7, 0.7, 1.0)),
    "inplane_0.5mm": lambda v: gi.resampled(v, (0.5, 0.5, 1.0)),
    "slices_3mm": lambda v: gi.resampled(v, (1.0, 1.0, 3.0)),
    "slices_5mm": lambda v: gi.resampled(v, (1.0, 1.0, 5.0)),
    "sagittal_slices": lambda v: gi.permuted(v, (1, 2, 0)),
    "transposed_in_plane": lambda v: gi.permuted(v, (1, 0, 2)),
    "mirror_flair": lambda v: gi.mirrored(v, "flair"),
    "mirror_t1ce": lambda v: gi.mirrored(v, "t1ce"),
    "t1_as_t1ce": lambda v: gi.replaced(v, "t1ce", "t1"),
    "t1_t1ce_swapped": lambda v: gi.with_images(v, {**v.images, "t1": v.images["t1ce"], "t1ce": v.images["t1"]}),
}


def real_folders() -> list[Path]:
    return [
        *sorted((DATA / "brats18").iterdir()),
        *sorted((DATA / "brats-extra").iterdir()),
        DATA / "tcga" / "TCGA-DU-7294",
        *sorted((DATA / "unlabeled").iterdir()),
    ]


def case_stats(volumes: CaseVolumes) -> dict:
    signals = CaseSignals(volumes.images, volumes.affine)
    excess = signals.enhancement_excess()
    row = {
        "brain_cm3": round(signals.cm3, 1),
        "background_share_min": round(min(share for _, share in signals.backgrounds.values()), 4),
        "face": [signals.worst_face[0], round(signals.worst_face[1], 4)],
        "rim_sd": {m: round(v, 2) for m, v in signals.rim_contrast.items()},
        "window_fraction": round(signals.window_fraction(CONFIG.crop_size), 4),
        "enhancement_per_mille": None if excess is None else round(excess, 1),
        "mirror_margin": round(_mirror_margin(signals), 4),
    }
    if volumes.label is not None:
        wt = float(np.count_nonzero(volumes.label)) / 1000
        row["expert_tumour_share"] = round(wt / row["brain_cm3"], 3)
        row["expert_et_rim_share"] = rim_share(volumes.label == 3, signals.mask)
    try:
        row["guards"] = guards.check_input(volumes, CONFIG) or "pass"
    except BratsegError as exc:
        row["guards"] = f"REFUSED: {exc}"
    return row


def _mirror_margin(signals: CaseSignals) -> float:
    """The smallest Dice margin, over modality pairs, of the brain outlines as given over
    one flipped left-right (positive: as given fits better)."""
    masks, axis = signals.masks, left_right_axis(signals.affine)
    names, margins = list(masks), []
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            total = np.count_nonzero(masks[a]) + np.count_nonzero(masks[b])
            given = np.count_nonzero(masks[a] & masks[b])
            flipped = np.count_nonzero(np.flip(masks[a], axis=axis) & masks[b])
            margins.append(2 * (given - flipped) / total)
    return min(margins)


@contextmanager
def guards_bypassed_with_the_old_mask():
    """The network's answer as it was before the guards: no input or result check, and the
    brain mask "non-zero in any modality"."""
    import bratseg.preprocessing.pipeline as pipeline

    def nonzero(images: dict[str, np.ndarray]) -> np.ndarray:
        mask = np.zeros(next(iter(images.values())).shape, dtype=bool)
        for data in images.values():
            mask |= data != 0
        return mask

    saved = guards.check_input, guards.check_result, pipeline.brain_mask
    guards.check_input = lambda *a, **k: []
    guards.check_result = lambda *a, **k: []
    pipeline.brain_mask = nonzero
    try:
        yield
    finally:
        guards.check_input, guards.check_result, pipeline.brain_mask = saved


def _dice(a: np.ndarray, b: np.ndarray) -> float | None:
    total = int(a.sum()) + int(b.sum())
    return None if total == 0 else round(2 * int((a & b).sum()) / total, 3)


def _scores(labels: np.ndarray, volumes: CaseVolumes) -> dict:
    voxel_cm3 = float(np.prod(CaseSignals(volumes.images, volumes.affine).spacing)) / 1000
    wt, tc, et = labels > 0, np.isin(labels, (1, 4)), labels == 4
    out = {"WT_cm3": round(float(wt.sum()) * voxel_cm3, 1), "ET_cm3": round(float(et.sum()) * voxel_cm3, 1)}
    if volumes.label is not None:
        ref = volumes.label
        out.update(
            WT=_dice(wt, ref > 0),
            TC=_dice(tc, np.isin(ref, (1, 3))),
            ET=_dice(et, ref == 3),
            ref_WT_cm3=round(float((ref > 0).sum()) * voxel_cm3, 1),
        )
    return out


def run_probes(cases: list[str], only: list[str] | None) -> None:
    import bratseg

    segmenter = bratseg.from_pretrained()
    for name in cases:
        original = load_case(case_from_folder(next(DATA.glob(f"*/{name}"))))
        for probe, make in PROBES.items():
            if only and probe not in only:
                continue
            volumes = make(original)
            with guards_bypassed_with_the_old_mask():
                before = _scores(segmenter.segment(volumes).labels, volumes)
            try:
                prediction = segmenter.segment(volumes)
                after = {"handled": _scores(prediction.labels, volumes), "warnings": prediction.warnings}
            except BratsegError as exc:
                after = {"refused": str(exc)}
            print(json.dumps({"case": name, "probe": probe, "before": before, "after": after}), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("what", choices=["stats", "probes"])
    parser.add_argument("--cases", default="Brats18_TCIA01_201_1,Brats18_2013_11_1,Brats18_TCIA10_637_1")
    parser.add_argument("--only", help="comma-separated probe names (default: all)")
    args = parser.parse_args()
    if not DATA.is_dir():
        sys.exit(f"{DATA}: not found (set BRATSEG_DATA)")
    if args.what == "stats":
        for folder in real_folders():
            print(json.dumps({"case": folder.name, **case_stats(load_case(case_from_folder(folder)))}), flush=True)
    else:
        run_probes(args.cases.split(","), args.only.split(",") if args.only else None)


if __name__ == "__main__":
    main()
