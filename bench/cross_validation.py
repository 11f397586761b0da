"""Five-fold cross-validation of a training recipe on the brats18 cases, nnU-Net style.

Every case of the cache validates in exactly one fold (``bratseg train --fold``), so the
pooled report scores all 18 cases with models that never saw them: a steadier estimate of
the recipe than the 4 validation cases of the shipped model's split. It measures the recipe,
not the shipped model (each fold is its own model, trained on about 14 cases).

    python bench/cross_validation.py --cache cache/brats18 --config training/brats18_cv_cpu.json \
        --runs runs/cv --out outputs/cv

For each fold it trains (resuming a killed run, skipping a finished one), predicts the fold's
validation cases with that fold's model, and finally evaluates all predictions against the
expert labels in one report (OUT/report: summary.md, metrics.csv, boxplot.png). Every
command is printed first. ``--data`` defaults to ``$BRATSEG_DATA/brats18``.

A fold's validation cases are its held-out cases, so the fold predicts with the weights of its
final epoch (``--checkpoint last``, exported to RUN/fold_K/model_last), as nnU-Net validates:
the epoch that scored best on those same cases (``--checkpoint best``, the run's own
``model`` folder) would flatter the estimate. ``--checkpoint ema`` predicts with the final
epoch's moving average of the weights instead (RUN/fold_K/model_ema), for runs trained with
``ema_decay``. ``--modalities flair t1ce`` predicts the same
folds with those files only (the others fed as zeros, as for a user who has only them).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from model_card_metrics import link_cases, run

from bratseg.preprocessing.cache import fold_split

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("BRATSEG_DATA", REPO.parent / "shared" / "data"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cache", type=Path, default=Path("cache/brats18"))
    parser.add_argument("--data", type=Path, default=DATA / "brats18")
    parser.add_argument("--config", type=Path, default=Path("training/brats18_cv_cpu.json"))
    parser.add_argument("--runs", type=Path, default=Path("runs/cv"))
    parser.add_argument("--out", type=Path, default=Path("outputs/cv"))
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--only", type=int, nargs="*", help="run these folds only (the report pools what exists)")
    parser.add_argument(
        "--modalities",
        nargs="+",
        help="predict with these modalities only, e.g. flair t1ce (the folds are trained as configured)",
    )
    parser.add_argument(
        "--checkpoint",
        choices=("last", "ema", "best"),
        default="last",
        help="which weights predict: the final epoch's, their moving average (ema_decay runs), or the best epoch's",
    )
    args = parser.parse_args()
    for path in (args.cache / "split.json", args.data, args.config):
        if not path.exists():
            sys.exit(f"{path}: not found")
    split = json.loads((args.cache / "split.json").read_text())
    cases = split["train"] + split["val"]
    out = args.out.resolve()
    for fold in range(args.folds) if args.only is None else args.only:
        run_dir = args.runs / f"fold_{fold}"
        if not (run_dir / "model" / "model.safetensors").is_file():
            # --resume continues a killed run of this fold and starts an absent one afresh.
            fold_args = ["--fold", str(fold), "--num-folds", str(args.folds), "--resume"]
            run("train", "--cache", args.cache, "--out", run_dir, "--config", args.config, *fold_args)
        val = fold_split(cases, args.folds, fold, split.get("seed", 0))["val"]
        only = None if args.modalities is None else (*args.modalities, "seg")
        linked = link_cases(args.data, val, out / "cases" / f"fold_{fold}", only=only)
        model = run_dir / "model"
        if args.checkpoint != "best":
            model = run_dir / f"model_{args.checkpoint}"
            if not (model / "model.safetensors").is_file():
                run("export", run_dir, "--out", model, "--checkpoint", args.checkpoint)
        run("predict", linked, "--output", out / "pred", "--quiet", "--model", model)
    run("evaluate", "--pred", out / "pred", "--ref", args.data, "--out", out / "report")


if __name__ == "__main__":
    main()
