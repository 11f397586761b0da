"""``bratseg train --cache CACHE_DIR --out RUN_DIR``: train a U-Net on a slice cache.

Options given on the command line override the ``--config`` JSON
(:meth:`bratseg.training.config.TrainConfig.from_json`); the run itself is
:func:`bratseg.training.trainer.train` (``torchrun -m bratseg.cli train ...`` for several
processes).
"""

from __future__ import annotations

import argparse
from pathlib import Path


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = subparsers.add_parser("train", help="train a U-Net on a slice cache (torchrun for several processes)")
    p.add_argument("--cache", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--config", type=Path, help="training JSON, e.g. training/brats18_cpu.json")
    p.add_argument("--epochs", type=int)
    p.add_argument("--encoder")
    p.add_argument("--batch-size", type=int)
    p.add_argument("--lr", type=float)
    p.add_argument("--num-workers", type=int)
    p.add_argument("--threads", type=int)
    p.add_argument("--seed", type=int)
    p.add_argument("--max-train-batches", type=int, help="cap batches per epoch (smoke runs)")
    p.add_argument("--fold", type=int, help="train this cross-validation fold (0-based) instead of the cache's split")
    p.add_argument("--num-folds", type=int, help="folds of the cross-validation (default 5)")
    p.add_argument(
        "--inner-fold",
        type=int,
        help="with --fold: train this fold of a cross-validation over that fold's training cases (nested)",
    )
    p.add_argument("--inner-num-folds", type=int, help="folds of the nested cross-validation (default 3)")
    p.add_argument(
        "--all-cases",
        action="store_true",
        help="train on every case of the cache, none held out (to ship a configuration chosen by cross-validation)",
    )
    p.add_argument(
        "--init-weights",
        metavar="MODEL",
        help="start from this model (fine-tuning): an exported model folder or a Hugging Face Hub id namespace/name",
    )
    p.add_argument("--resume", action="store_true", help="continue from RUN_DIR/last.pt")
    p.set_defaults(func=run_train)
    return p


def run_train(args: argparse.Namespace) -> None:
    from bratseg.errors import BratsegError
    from bratseg.model.hub import resolve_model
    from bratseg.training.trainer import train

    # A Hub id becomes its folder in the Hugging Face cache, before any training starts.
    init_weights = resolve_model(args.init_weights) if args.init_weights else None

    try:
        config = _config(args, init_weights)
    except (ValueError, TypeError) as exc:  # out of range, of the wrong type or unknown: no traceback
        where = f"{args.config}: " if args.config else ""
        raise BratsegError(f"training options: {where}{exc}") from None
    except OSError as exc:
        raise BratsegError(f"{args.config}: cannot be read ({exc.strerror or exc})") from None
    run = train(args.cache, args.out, config, resume=args.resume)
    print(f"run written to {run}; model folder {run / 'model'}")


def _config(args: argparse.Namespace, init_weights: Path | None):
    from bratseg.training.config import TrainConfig

    return TrainConfig.from_json(
        args.config,
        epochs=args.epochs,
        encoder=args.encoder,
        batch_size=args.batch_size,
        lr=args.lr,
        num_workers=args.num_workers,
        threads=args.threads,
        seed=args.seed,
        max_train_batches=args.max_train_batches,
        init_weights=init_weights and str(init_weights),
        fold=args.fold,
        num_folds=args.num_folds,
        inner_fold=args.inner_fold,
        inner_num_folds=args.inner_num_folds,
        all_cases=args.all_cases or None,
    )
