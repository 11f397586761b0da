"""The 5-fold ensemble against one model trained on all cases, and against flip TTA: cost and Dice.

nnU-Net predicts with the mean of its five fold models' probabilities. This script measures
what that would cost here and what it gives, on cases no model of either kind trained on:

* the shipped model (all 27 cases), alone and with flip TTA (``Segmenter(flip_tta=True)``);
* the mean of the region probabilities of the fold models of a cross-validation run
  (``RUNS/fold_K/model_last``, as ``bench/cross_validation.py`` exports them), post-processed
  as the shipped model is;
* each fold model alone, for the spread.

Every configuration prepares the case once (the same preprocessing for all) and is timed on
the network and post-processing (``run_network`` + ``finish``; preprocessing is the same for
all and is reported once): median of ``--repeats`` warm calls after one warm-up. Dice and HD95
are scored against a reference label (by default TCGA-DU-7294 against the majority vote of
five BraTS 2020 algorithms: no expert label, and one case, so its Dice is an anecdote; the
cost is the measurement).

    python bench/bench_ensemble.py --runs runs/cv27_light --folds 5 --repeats 5

Its cases are not CV cases on purpose: each of the 27 labelled cases trained four of the five
fold models, so the ensemble cannot be scored on them honestly.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import torch
from machine_load import MachineLoad

from bratseg.evaluation.metrics import evaluate_case
from bratseg.inference.predictor import NetworkOutput, PreparedInput, Segmenter

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("BRATSEG_DATA", REPO.parent / "shared" / "data"))
TCGA = DATA / "tcga" / "TCGA-DU-7294"


def ensemble_network(members: list[Segmenter], prepared: PreparedInput) -> NetworkOutput:
    """The mean of the members' region probabilities on the same prepared slices."""
    t0 = time.perf_counter()
    total = None
    for member in members:
        p = member.run_network(prepared).region_probabilities
        total = p.clone() if total is None else total.add_(p)
    return NetworkOutput(total / len(members), time.perf_counter() - t0)


def timed(fn, repeats: int) -> tuple[float, object]:
    """Median seconds of ``repeats`` calls after one warm-up, and the last result."""
    result = fn()
    seconds = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        result = fn()
        seconds.append(time.perf_counter() - t0)
    return statistics.median(seconds), result


def scores(labels: np.ndarray, ref: np.ndarray, spacing) -> dict[str, float]:
    metrics = evaluate_case(labels, ref, spacing)
    return {**{r: metrics[r]["dice"] for r in ("WT", "TC", "ET")}, "HD95 WT": metrics["WT"]["hd95"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--case", type=Path, default=TCGA, help="a case folder (four modalities)")
    parser.add_argument("--ref", type=Path, default=TCGA / "segmentation" / "consensus-mav.nii.gz")
    parser.add_argument("--runs", type=Path, default=Path("runs/cv27_light"), help="the CV run's folder")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--fold-model", default="model_last", help="model folder in each fold_K")
    parser.add_argument("--model", type=Path, default=None, help="the single model (default: the shipped one)")
    parser.add_argument("--repeats", type=int, default=5, help="timed warm calls per configuration")
    args = parser.parse_args()
    folds = [args.runs / f"fold_{k}" / args.fold_model for k in range(args.folds)]
    for path in (args.case, args.ref, *folds):
        if not path.exists():
            sys.exit(f"{path}: not found (bench/cross_validation.py exports the fold models)")

    single = Segmenter.from_pretrained(args.model)
    single_tta = Segmenter.from_pretrained(args.model, flip_tta=True)
    members = [Segmenter.from_pretrained(f) for f in folds]
    if any(m.preprocessing != single.preprocessing for m in members):
        sys.exit("the fold models and the single model prepare their input differently")
    ref_img = nib.load(args.ref)
    ref = np.asarray(ref_img.dataobj)
    spacing = ref_img.header.get_zooms()[:3]

    load = MachineLoad()
    prep_s, prepared = timed(lambda: single.prepare(args.case), args.repeats)
    configs = {
        "all 27 cases, one model (shipped)": lambda: single.finish(prepared, single.run_network(prepared)),
        "all 27 cases + flip TTA": lambda: single_tta.finish(prepared, single_tta.run_network(prepared)),
        f"{len(members)}-fold ensemble (mean probabilities)": lambda: members[0].finish(
            prepared, ensemble_network(members, prepared)
        ),
    }
    configs |= {
        f"fold {k} alone": (lambda m=m: m.finish(prepared, m.run_network(prepared))) for k, m in enumerate(members)
    }
    rows = []
    for name, fn in configs.items():
        seconds, prediction = timed(fn, args.repeats if "alone" not in name else 1)
        rows.append((name, seconds, scores(prediction.labels, ref, spacing)))
        print(f"{name}: {seconds:.2f} s", file=sys.stderr)
    load.stop()

    base = rows[0][1]
    threads = torch.get_num_threads()
    print(f"Case {args.case.name} against {args.ref.name}; torch {torch.__version__}, {threads} threads")
    print(f"Preprocessing (shared by all): {prep_s:.2f} s median of {args.repeats}\n")
    print("| configuration | network + post-processing (s) | x one model | WT | TC | ET | HD95 WT (mm) |")
    print("|---|---|---|---|---|---|---|")
    for name, seconds, s in rows:
        dice = " | ".join(f"{s[r]:.3f}" for r in ("WT", "TC", "ET"))
        print(f"| {name} | {seconds:.2f} | {seconds / base:.1f}x | {dice} | {s['HD95 WT']:.1f} |")
    print("\nFold models alone are timed once (their cost is the ensemble's divided by its size).")
    print(load.report())


if __name__ == "__main__":
    main()
