"""Does a case-level confidence score track the actual whole-tumour Dice? Validates the score of
bratseg.inference.confidence and chooses its threshold, on cases the model never saw.

    # the shipped model on the 14 cases it never trained on: its 4 brats18 validation cases
    # (split_cases seed 0, val_fraction 0.2; checked against model_card.md), the 9 cases of
    # brats-extra, and TCGA-DU-7294 scored against its five-algorithm consensus
    python bench/confidence_calibration.py --out outputs/confidence

    # cross-validation: each labelled case (brats18 + brats-extra) predicted by the fold model
    # that did not train on it (fold_split seed 0 on the case ids, models in RUNS/fold_K/model_last)
    python bench/confidence_calibration.py --models runs/cv27 --num-folds 5 --out outputs/confidence_cv27

Each case's labels and region probabilities are kept in ``--pred-dir`` (default OUT/pred,
``<case>.npz``) and reused on a re-run, so candidate scores can be added without running a
model again. ``--tta`` also runs flip test-time augmentation for the TTA-agreement candidate
(4x the network time). Writes OUT/cases.csv (per case: Dice, every candidate score),
OUT/summary.md (Spearman correlation of each candidate with WT Dice, its p-value, the chosen
threshold and what it flags) and OUT/scatter.png.

Threshold rule: a case "needs review" when its WT Dice is below ``--poor-dice`` (0.80); the
threshold is the midpoint between consecutive scores that best separates those cases from the
others (highest Youden J = sensitivity + specificity - 1; ties go to the lower threshold,
fewer flags), rounded to two decimals.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import stats

from bratseg.data.io import CaseVolumes, load_case, load_volume
from bratseg.data.labels import to_brats2020
from bratseg.data.layout import case_from_folder
from bratseg.inference.confidence import LOW_CONFIDENCE_THRESHOLD, binary_entropy, confidence_score
from bratseg.inference.predictor import SHIPPED_MODEL, Prediction, Segmenter
from bratseg.preprocessing.cache import fold_split, split_cases

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("BRATSEG_DATA", REPO.parent / "shared" / "data"))
# The shipped model's validation cases, as model_card.md lists them.
MODEL_CARD_VALIDATION = ["Brats18_2013_11_1", "Brats18_TCIA01_201_1", "Brats18_TCIA01_499_1", "Brats18_TCIA10_637_1"]
TCGA = "TCGA-DU-7294"
SHIPPED = "sure_fraction"  # what bratseg.inference.confidence.confidence_score computes
CANDIDATES = {
    "soft_dice": "soft Dice of the WT probability map and the WT mask",
    "certainty_in_tumour": "1 - mean uncertainty (bits) in the predicted WT dilated by 2 voxels",
    "volume_agreement": "min/max of the predicted WT volume and the WT probability mass",
    "sure_fraction": "share of the voxels with WT probability > 0.1 that have probability > 0.9 (shipped)",
    "mean_region_soft_dice": "mean soft Dice over WT, TC, ET (both empty: 1)",
    "log_volume": "log10 of the predicted WT volume in cm3 (baseline: small tumours score lower Dice)",
    "tta_agreement": "Dice of the WT masks with and without flip TTA (--tta)",
}


@dataclass
class Item:
    """One case to score: its folder, its reference label map and the model that never saw it."""

    case_dir: Path
    reference: Path | None  # None: the case folder's own expert label
    model_dir: Path
    group: str


def shipped_items(data: Path) -> list[Item]:
    """The 14 cases the shipped model never trained on."""
    brats18 = sorted(p.name for p in (data / "brats18").iterdir() if p.is_dir())
    val = split_cases(brats18, val_fraction=0.2, seed=0)["val"]
    if val != MODEL_CARD_VALIDATION:
        sys.exit(f"split_cases gives validation cases {val}, not the model card's {MODEL_CARD_VALIDATION}")
    items = [Item(data / "brats18" / c, None, SHIPPED_MODEL, "brats18 validation") for c in val]
    items += [
        Item(p, None, SHIPPED_MODEL, "brats-extra") for p in sorted((data / "brats-extra").iterdir()) if p.is_dir()
    ]
    tcga = data / "tcga" / TCGA
    items.append(Item(tcga, tcga / "segmentation" / "consensus-mav.nii.gz", SHIPPED_MODEL, "TCGA vs consensus"))
    return items


def fold_items(data: Path, runs: Path, num_folds: int, seed: int, fold_model: str = "model_last") -> list[Item]:
    """Every labelled case with the fold model that validated on it (``RUNS/fold_K/<fold_model>``:
    by default the final epoch's weights, which bench/cross_validation.py exports)."""
    folders = {p.name: p for sub in ("brats18", "brats-extra") for p in sorted((data / sub).iterdir()) if p.is_dir()}
    items = []
    for fold in range(num_folds):
        model = runs / f"fold_{fold}" / fold_model
        if not (model / "model.safetensors").is_file():
            print(f"skipping fold {fold}: {model} has no model.safetensors", file=sys.stderr)
            continue
        for case in fold_split(list(folders), num_folds, fold, seed)["val"]:
            items.append(Item(folders[case], None, model, f"fold {fold}"))
    return items


def dice(a: np.ndarray, b: np.ndarray) -> float:
    total = int(a.sum()) + int(b.sum())
    return 1.0 if total == 0 else 2.0 * int(np.logical_and(a, b).sum()) / total


def _soft_dice(p: np.ndarray, m: np.ndarray) -> float:
    total = float(p.sum(dtype=np.float64)) + float(m.sum())
    return 1.0 if total == 0 else 2.0 * float(p[m].sum(dtype=np.float64)) / total


def candidate_scores(labels: np.ndarray, probs: np.ndarray, spacing, tta_wt: np.ndarray | None) -> dict[str, float]:
    """Every candidate case-level score of one prediction (higher: more confident)."""
    from scipy import ndimage

    wt_mask = labels != 0
    regions = [wt_mask, np.isin(labels, (1, 4)), labels == 4]
    p_wt = probs[0].astype(np.float32)
    near = ndimage.binary_dilation(wt_mask, iterations=2)
    halfway = np.max([np.minimum(p, 1 - p) for p in probs.astype(np.float32)], axis=0)
    mass = float(p_wt.sum(dtype=np.float64))
    count = float(wt_mask.sum())
    likely = p_wt > 0.1
    scores = {
        "soft_dice": _soft_dice(p_wt, wt_mask),
        "certainty_in_tumour": 1.0 - float(binary_entropy(halfway[near]).mean()) if near.any() else 1.0,
        "volume_agreement": min(mass, count) / max(mass, count) if max(mass, count) > 0 else 1.0,
        "sure_fraction": float((p_wt[likely] > 0.9).mean()) if likely.any() else 1.0,
        "mean_region_soft_dice": float(
            np.mean([_soft_dice(probs[i].astype(np.float32), regions[i]) for i in range(3)])
        ),
        "log_volume": float(np.log10(max(count * float(np.prod(spacing)) / 1000.0, 1e-3))),
    }
    if tta_wt is not None:
        scores["tta_agreement"] = dice(wt_mask, tta_wt)
    return scores


def predict_or_load(item: Item, pred_dir: Path, segmenters: dict, tta: bool) -> tuple[dict, np.ndarray, CaseVolumes]:
    """The stored prediction of a case (labels, probabilities, TTA WT mask), made if absent;
    the reference label map (BraTS 2020 values) and the case's volumes."""
    case = case_from_folder(item.case_dir)
    volumes = load_case(case, with_label=item.reference is None)
    if item.reference is None:
        reference = to_brats2020(volumes.label)
    else:
        reference = np.rint(load_volume(item.reference).data).astype(np.uint8)
    path = pred_dir / f"{item.case_dir.name}.npz"
    stored = dict(np.load(path)) if path.is_file() else {}
    if "labels" not in stored or (tta and "tta_wt" not in stored):

        def segmenter(flip: bool) -> Segmenter:
            key = (item.model_dir, flip)
            if key not in segmenters:
                segmenters[key] = Segmenter.from_pretrained(item.model_dir, flip_tta=flip)
            return segmenters[key]

        if "labels" not in stored:
            prediction = segmenter(False).segment(volumes)
            stored.update(labels=prediction.labels, probabilities=prediction.probabilities)
        if tta:
            stored["tta_wt"] = np.packbits(segmenter(True).segment(volumes).labels != 0)
        pred_dir.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp.npz")
        np.savez_compressed(tmp, **stored)
        os.replace(tmp, path)
    if "tta_wt" in stored:
        shape = stored["labels"].shape
        stored["tta_wt_mask"] = np.unpackbits(stored["tta_wt"], count=int(np.prod(shape))).reshape(shape).astype(bool)
    return stored, reference, volumes


def choose_threshold(scores: np.ndarray, poor: np.ndarray) -> tuple[float, float]:
    """(threshold, Youden J) that best flags the ``poor`` cases by ``score < threshold``; NaN
    when the cases are all poor or all good (nothing to separate)."""
    if poor.all() or not poor.any():
        return float("nan"), float("nan")
    values = np.unique(scores)
    cuts = np.concatenate([[values[0] - 1e-6], (values[:-1] + values[1:]) / 2, [values[-1] + 1e-6]])
    best = (float(cuts[0]), -1.0)
    n_poor, n_good = int(poor.sum()), int((~poor).sum())
    for cut in cuts:  # ascending, so ties keep the lower threshold
        flagged = scores < cut
        sensitivity = (flagged & poor).sum() / n_poor if n_poor else 1.0
        specificity = (~flagged & ~poor).sum() / n_good if n_good else 1.0
        j = float(sensitivity + specificity - 1.0)
        if j > best[1] + 1e-12:
            best = (float(cut), j)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--out", type=Path, default=Path("outputs/confidence"))
    parser.add_argument("--pred-dir", type=Path, help="stored per-case predictions (default OUT/pred)")
    parser.add_argument("--models", type=Path, help="cross-validation runs folder with fold_K/model")
    parser.add_argument("--num-folds", type=int, default=5)
    parser.add_argument("--fold-model", default="model_last", help="model folder in each fold_K (model: best epoch)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tta", action="store_true", help="also score the TTA-agreement candidate")
    parser.add_argument("--only", nargs="+", metavar="CASE", help="score these cases only (quick checks)")
    parser.add_argument("--poor-dice", type=float, default=0.80, help="WT Dice below which a case needs review")
    args = parser.parse_args()
    items = (
        shipped_items(args.data)
        if args.models is None
        else fold_items(args.data, args.models, args.num_folds, args.seed, args.fold_model)
    )
    if args.only:
        items = [item for item in items if item.case_dir.name in args.only]
    if not items:
        sys.exit("no cases to score")
    pred_dir = args.pred_dir or args.out / "pred"
    segmenters: dict = {}
    rows = []
    for item in items:
        stored, reference, volumes = predict_or_load(item, pred_dir, segmenters, args.tta)
        labels, probs = stored["labels"], stored["probabilities"]
        row = {"case": item.case_dir.name, "group": item.group}
        for name, values in (("WT", (1, 2, 4)), ("TC", (1, 4)), ("ET", (4,))):
            row[f"dice_{name}"] = dice(np.isin(labels, values), np.isin(reference, values))
        row.update(candidate_scores(labels, probs, volumes.spacing, stored.get("tta_wt_mask")))
        # The shipped function must agree with the bench's own formula.
        shipped = confidence_score(Prediction(labels, volumes, 0.0, probs))
        assert abs(shipped - row[SHIPPED]) < 1e-9, (shipped, row[SHIPPED])
        rows.append(row)
        print(f"{row['case']:24s} WT Dice {row['dice_WT']:.3f}  {SHIPPED} {row[SHIPPED]:.3f}", flush=True)
    write_outputs(rows, args)


def write_outputs(rows: list[dict], args: argparse.Namespace) -> None:
    args.out.mkdir(parents=True, exist_ok=True)
    names = [c for c in CANDIDATES if all(c in r for r in rows)]
    with open(args.out / "cases.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    dice_wt = np.array([r["dice_WT"] for r in rows])
    poor = dice_wt < args.poor_dice
    lines = [
        f"# Confidence score against whole-tumour Dice ({len(rows)} unseen cases, {int(poor.sum())} with WT Dice "
        f"< {args.poor_dice:.2f})",
        "",
        "| candidate | what | Spearman rho | p-value | threshold (Youden) | J |",
        "|---|---|---|---|---|---|",
    ]
    results = {}
    for name in names:
        scores = np.array([r[name] for r in rows])
        rho, p = stats.spearmanr(scores, dice_wt)
        cut, j = choose_threshold(scores, poor)
        results[name] = {"rho": float(rho), "p": float(p), "threshold": cut, "youden_j": j}
        lines.append(f"| {name} | {CANDIDATES[name]} | {rho:.3f} | {p:.1e} | {cut:.3f} | {j:.2f} |")
    shipped = results[SHIPPED]
    chosen = round(shipped["threshold"], 2) if np.isfinite(shipped["threshold"]) else LOW_CONFIDENCE_THRESHOLD
    lines += [
        "",
        f"Shipped score {SHIPPED}: threshold from these data "
        + (
            f"{shipped['threshold']:.3f} (rounded {chosen:.2f}); "
            if np.isfinite(shipped["threshold"])
            else "none (the cases are all poor or all good); "
        )
        + f"LOW_CONFIDENCE_THRESHOLD in bratseg is {LOW_CONFIDENCE_THRESHOLD:.2f}.",
        _flag_line(rows, LOW_CONFIDENCE_THRESHOLD, poor),
        *([_flag_line(rows, chosen, poor)] if chosen != LOW_CONFIDENCE_THRESHOLD else []),
        "",
        "Robustness of the shipped score to its two probability cut-offs (Spearman rho with WT Dice): "
        + ", ".join(f"{lo}/{hi}: {rho:.3f}" for (lo, hi), rho in sure_fraction_variants(rows, args).items()),
        "",
        "| case | group | WT Dice | TC Dice | ET Dice | " + " | ".join(names) + " |",
        "|---|---|---|---|---|" + "---|" * len(names),
    ]
    for r in sorted(rows, key=lambda r: r[SHIPPED]):
        cells = " | ".join(f"{r[n]:.3f}" for n in names)
        lines.append(
            f"| {r['case']} | {r['group']} | {r['dice_WT']:.3f} | {r['dice_TC']:.3f} | {r['dice_ET']:.3f} | {cells} |"
        )
    (args.out / "summary.md").write_text("\n".join(lines) + "\n")
    (args.out / "summary.json").write_text(json.dumps(results, indent=2) + "\n")
    print("\n".join(lines))
    scatter(rows, names, args.out / "scatter.png", results)


def _flag_line(rows: list[dict], threshold: float, poor: np.ndarray) -> str:
    flagged = np.array([r[SHIPPED] < threshold for r in rows])
    names = ", ".join(f"{r['case']} (WT Dice {r['dice_WT']:.2f})" for r, f in zip(rows, flagged) if f) or "none"
    caught = int((flagged & poor).sum())
    false = int((flagged & ~poor).sum())
    return f"Flagged below {threshold:.2f}: {names}; {caught} of {int(poor.sum())} poor cases, {false} false alarms."


def sure_fraction_variants(rows: list[dict], args: argparse.Namespace) -> dict[tuple[float, float], float]:
    """Spearman rho with WT Dice of the sure fraction at other (possible, sure) cut-offs."""
    pred_dir = args.pred_dir or args.out / "pred"
    dice_wt = [r["dice_WT"] for r in rows]
    out = {}
    for lo, hi in ((0.05, 0.95), (0.1, 0.9), (0.2, 0.8), (0.3, 0.7), (0.1, 0.5), (0.5, 0.9)):
        values = []
        for r in rows:
            p = np.load(pred_dir / f"{r['case']}.npz")["probabilities"][0]
            possible = p > lo
            values.append(float((p[possible] > hi).mean()) if possible.any() else 1.0)
        out[(lo, hi)] = float(stats.spearmanr(values, dice_wt)[0])
    return out


def scatter(rows: list[dict], names: list[str], path: Path, results: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = min(3, len(names))
    fig, axes = plt.subplots(
        -(-len(names) // cols), cols, figsize=(4 * cols, 3.4 * -(-len(names) // cols)), squeeze=False
    )
    dice_wt = [r["dice_WT"] for r in rows]
    for ax, name in zip(axes.ravel(), names):
        ax.scatter([r[name] for r in rows], dice_wt, s=18)
        ax.set_xlabel(name)
        ax.set_ylabel("WT Dice")
        ax.set_title(f"rho {results[name]['rho']:.2f} (p {results[name]['p']:.1e})", fontsize=9)
        ax.axvline(results[name]["threshold"], color="grey", lw=0.8, ls="--")
    for ax in axes.ravel()[len(names) :]:
        ax.set_axis_off()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    main()
