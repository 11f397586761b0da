"""Choose post-processing and test-time augmentation by cross-validation, nnU-Net style.

Each labelled case is predicted by the fold model that never saw it (the folds of
``bench/cross_validation.py``), once without any post-processing, with all four modalities and
with FLAIR + T1ce alone, and with and without in-plane flip TTA. Every post-processing
candidate is then applied to those raw predictions and scored against the expert labels
(BraTS Dice per region, whole volumes), so one prediction serves every candidate:

- removing whole-tumour components smaller than a fraction of the largest (0 = off),
- relabelling enhancing tumour as necrotic core when the case has fewer enhancing voxels
  than a threshold (nnU-Net's BraTS rule; 0 = off).

    python bench/choose_postprocessing.py --cache cache/brats27 --data outputs/data27 --runs runs/cv27 \
        --out outputs/postprocessing

Writes OUT/scores.csv (one row per case, input, TTA and candidate), OUT/summary.md (mean and
median per candidate) and prints the summary. Folds whose model is missing are skipped.
"""

from __future__ import annotations

import argparse
import csv
import json
import time
from itertools import product
from pathlib import Path

import numpy as np

from bratseg.data.io import load_case
from bratseg.data.labels import to_internal
from bratseg.data.layout import case_from_folder
from bratseg.evaluation.metrics import evaluate_internal
from bratseg.inference.postprocessing import remove_small_components
from bratseg.inference.predictor import Segmenter
from bratseg.preprocessing.cache import fold_split

COMPONENT_FRACTIONS = (0.0, 0.05, 0.1, 0.2)
ENHANCING_THRESHOLDS = (0, 50, 100, 200, 300, 500, 800, 1200)
INPUTS = {"all4": ("flair", "t1", "t1ce", "t2"), "flair_t1ce": ("flair", "t1ce")}


def relabel_small_enhancing(labels: np.ndarray, min_voxels: int, enhancing: int = 4, core: int = 1) -> np.ndarray:
    """Relabel all enhancing tumour as necrotic / non-enhancing core when the case holds
    fewer than ``min_voxels`` enhancing voxels (0 disables), as nnU-Net does for BraTS.

    BraTS scores a case whose reference has no enhancing tumour with ET Dice 1 only if the
    prediction has none either, and low-grade gliomas often have none: a few enhancing voxels
    predicted there cost a whole case's ET Dice, while real enhancing tumour is rarely that
    small. The tumour core is unchanged (enhancing tumour belongs to it). ``enhancing`` and
    ``core`` are the label values (BraTS 2020's 4 and 1 by default). A candidate only:
    cross-validation did not choose it (BENCHMARKS.md), so bratseg does not apply it.

    Example:
        >>> labels = np.zeros((10, 10, 10), dtype=np.uint8); labels[:3, :3, :3] = 4
        >>> int((relabel_small_enhancing(labels, 50) == 1).sum()), int((relabel_small_enhancing(labels, 20) == 4).sum())
        (27, 27)
    """
    if min_voxels <= 0:
        return labels
    is_enhancing = labels == enhancing
    if 0 < int(is_enhancing.sum()) < min_voxels:
        labels = labels.copy()
        labels[is_enhancing] = core
    return labels


def _score(labels: np.ndarray, reference: np.ndarray) -> dict[str, float]:
    """Dice of WT, TC and ET between BraTS 2020 ``labels`` and internal ``reference``."""
    metrics = evaluate_internal(to_internal(labels), reference)
    return {region: metrics[region]["dice"] for region in ("WT", "TC", "ET")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cache", type=Path, default=Path("cache/brats27"))
    parser.add_argument("--data", type=Path, default=Path("outputs/data27"))
    parser.add_argument("--runs", type=Path, default=Path("runs/cv27"))
    parser.add_argument("--out", type=Path, default=Path("outputs/postprocessing"))
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--no-tta", action="store_true", help="skip the flip-TTA predictions (4x the network time)")
    parser.add_argument(
        "--fold-model",
        default="model_last",
        help="model folder in each RUNS/fold_K: model_last (final epoch, bench/cross_validation.py) or model",
    )
    args = parser.parse_args()
    split = json.loads((args.cache / "split.json").read_text())
    cases = split["train"] + split["val"]
    rows: list[dict[str, object]] = []
    seconds: dict[tuple[str, bool], list[float]] = {}
    for fold in range(args.folds):
        model_dir = args.runs / f"fold_{fold}" / args.fold_model
        if not (model_dir / "model.safetensors").is_file():
            print(f"fold {fold}: no model at {model_dir}, skipped")
            continue
        segmenters = {
            tta: Segmenter.from_pretrained(model_dir, min_component_fraction=0.0, flip_tta=tta)
            for tta in ((False,) if args.no_tta else (False, True))
        }
        for case_id in fold_split(cases, args.folds, fold, split.get("seed", 0))["val"]:
            volumes = load_case(case_from_folder(args.data / case_id))
            reference = volumes.label
            assert reference is not None, f"{case_id} has no label"
            for (name, modalities), (tta, segmenter) in product(INPUTS.items(), segmenters.items()):
                images = {m: a for m, a in volumes.images.items() if m in modalities}
                t0 = time.perf_counter()
                raw = segmenter.predict(type(volumes)(case_id, images, volumes.affine, volumes.header))
                seconds.setdefault((name, tta), []).append(time.perf_counter() - t0)
                for fraction in COMPONENT_FRACTIONS:
                    cleaned = remove_small_components(raw, fraction)
                    for threshold in ENHANCING_THRESHOLDS:
                        dice = _score(relabel_small_enhancing(cleaned, threshold), reference)
                        rows.append(
                            {"fold": fold, "case": case_id, "input": name, "tta": tta}
                            | {"component_fraction": fraction, "enhancing_threshold": threshold}
                            | dice
                        )
            print(f"fold {fold}: {case_id} done", flush=True)
    if not rows:
        raise SystemExit("no fold model found: run bench/cross_validation.py first")
    args.out.mkdir(parents=True, exist_ok=True)
    with open(args.out / "scores.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    summary = _summary(rows, seconds)
    (args.out / "summary.md").write_text(summary)
    print(summary)


def _summary(rows: list[dict[str, object]], seconds: dict[tuple[str, bool], list[float]]) -> str:
    groups: dict[tuple, list[dict[str, object]]] = {}
    for row in rows:
        key = (row["input"], row["tta"], row["component_fraction"], row["enhancing_threshold"])
        groups.setdefault(key, []).append(row)
    n_cases = len({r["case"] for r in rows})
    lines = [
        f"{n_cases} cases, each predicted by the fold model that never saw it.",
        "",
        "| input | TTA | component fraction | ET threshold (voxels) | WT mean (median) | TC mean (median) "
        "| ET mean (median) |",
        "|---|---|---|---|---|---|---|",
    ]
    for (name, tta, fraction, threshold), group in sorted(groups.items(), key=lambda kv: tuple(map(str, kv[0]))):
        cells = []
        for region in ("WT", "TC", "ET"):
            values = np.array([float(r[region]) for r in group])
            cells.append(f"{values.mean():.3f} ({np.median(values):.3f})")
        lines.append(f"| {name} | {'flips' if tta else 'no'} | {fraction} | {threshold} | " + " | ".join(cells) + " |")
    lines += ["", "Prediction seconds per case (median): "]
    lines += [
        f"- {name}, {'flip TTA' if tta else 'no TTA'}: {np.median(s):.2f} s" for (name, tta), s in seconds.items()
    ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
