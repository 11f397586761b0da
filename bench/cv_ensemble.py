"""Cross-validation of an ensemble of arms: each held-out case predicted with the mean of the
region probabilities of every arm's model for its fold.

The arms of a screen (``bench/cross_validation.py`` runs with one ``--folds`` and one split,
for example ``runs/screen3_e10`` and ``runs/screen3_e30``) train one model per fold on the
same cases, so the mean of their fold-K models never saw fold K's cases either: the result is a
cross-validation figure of a 2-3 member ensemble, at the price of predicting only. Members
must prepare their input alike; the first member's post-processing is used.

An arm may name its model folder inside ``fold_K`` after a colon: the nested teachers of
``bench/distill_screen.sh nested`` (three models per fold, each trained on two thirds of the
fold's training cases) are then a bagged ensemble, or each alone a point of the learning curve
against the number of training cases (12 of 27):

    python bench/cv_ensemble.py --arms runs/screen3_distill_nested/teachers:inner_0/model_last \\
        runs/screen3_distill_nested/teachers:inner_1/model_last \\
        runs/screen3_distill_nested/teachers:inner_2/model_last --folds 3 --out outputs/screen3_bag12

Usage:
    python bench/cv_ensemble.py --arms runs/screen3_e10 runs/screen3_e30 --folds 3 \\
        --out outputs/screen3_ens_e10_e30 [--model-dir model_last] [--data outputs/data27]

Then ``python bench/cv_table.py ens=OUT/report ...`` compares it with the arms alone.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--arms", nargs="+", required=True, help="CV run folders (fold_K inside), each optionally :MODEL_DIR"
    )
    parser.add_argument("--folds", type=int, default=3)
    parser.add_argument("--model-dir", default="model_last", help="model folder in each fold_K")
    parser.add_argument("--cache", type=Path, default=REPO / "cache" / "brats27", help="its split.json")
    parser.add_argument("--data", type=Path, default=REPO / "outputs" / "data27", help="case folders")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()

    from bench_ensemble import ensemble_network

    from bratseg.inference.predictor import Segmenter
    from bratseg.preprocessing.cache import fold_split

    split = json.loads((args.cache / "split.json").read_text())
    cases = split["train"] + split["val"]
    pred_dir = args.out / "pred"
    pred_dir.mkdir(parents=True, exist_ok=True)
    for fold in range(args.folds):
        folders = [Path(arm) / f"fold_{fold}" / (model or args.model_dir) for arm, _, model in map(_split, args.arms)]
        missing = [f for f in folders if not (f / "model.safetensors").is_file()]
        if missing:
            sys.exit(f"{missing[0]}: no exported model (bench/cross_validation.py exports it)")
        members = [Segmenter.from_pretrained(f) for f in folders]
        if any(m.preprocessing != members[0].preprocessing for m in members):
            sys.exit(f"fold {fold}: the arms prepare their input differently")
        for case in fold_split(cases, args.folds, fold, split.get("seed", 0))["val"]:
            target = pred_dir / f"{case}.nii.gz"
            if target.exists():
                continue
            prepared = members[0].prepare(args.data / case)
            members[0].finish(prepared, ensemble_network(members, prepared)).save(target)
            print(f"  fold {fold} {case}", file=sys.stderr)
    report = args.out / "report"
    evaluate = [sys.executable, "-m", "bratseg", "evaluate", "--pred", pred_dir, "--ref", args.data, "--out", report]
    subprocess.run(evaluate, check=True)


def _split(arm: str) -> tuple[str, str, str]:
    """``RUNS[:MODEL_DIR]`` as ``(RUNS, ":", MODEL_DIR)`` (MODEL_DIR empty when not given)."""
    return arm.partition(":")


if __name__ == "__main__":
    main()
