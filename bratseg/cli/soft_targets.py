"""``bratseg soft-targets --cache CACHE_DIR --models MODEL ... --out FILE.npy``: teacher
probabilities for a slice cache, the soft targets of a distilled student
(:func:`bratseg.inference.teacher.write_soft_targets`).

With ``--fold K``, only the training cases of that cross-validation fold get probabilities:
those its student trains on. The teachers must not have seen the fold's validation cases for
the student's Dice to be a cross-validation figure (``bratseg train --fold K --inner-fold J``).
"""

from __future__ import annotations

import argparse
from pathlib import Path


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "soft-targets", help="write teacher probabilities for a slice cache (knowledge distillation)"
    )
    p.add_argument("--cache", type=Path, required=True)
    p.add_argument("--models", type=Path, nargs="+", required=True, help="teacher model folders (their mean)")
    p.add_argument("--out", type=Path, required=True, help="the .npy file to write (a .json description beside)")
    p.add_argument("--fold", type=int, help="only the training cases of this cross-validation fold")
    p.add_argument("--num-folds", type=int, default=5, help="folds of the cross-validation (default 5)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run_soft_targets)
    return p


def run_soft_targets(args: argparse.Namespace) -> None:
    from bratseg.inference.teacher import write_soft_targets
    from bratseg.training.config import TrainConfig
    from bratseg.training.trainer import load_split

    cases = None
    if args.fold is not None:  # the cases that fold's student trains on, as `bratseg train --fold` takes them
        cases = load_split(args.cache, TrainConfig(fold=args.fold, num_folds=args.num_folds))["train"]
    out = write_soft_targets(args.cache, args.models, args.out, cases=cases, progress=not args.quiet)
    print(f"soft targets written to {out}")
