"""``bratseg cache DATA_DIR --out CACHE_DIR``: the NumPy slice cache of a folder of labelled cases.

The cache is what ``bratseg train`` reads (:func:`bratseg.preprocessing.cache.build_cache`).
"""

from __future__ import annotations

import argparse
from pathlib import Path


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = subparsers.add_parser("cache", help="build the NumPy slice cache of a folder of labelled cases")
    p.add_argument("data_dir", type=Path)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--config", type=Path, help="preprocessing JSON (default: built-in)")
    p.add_argument("--resize", type=int, help="resize slices to N x N after cropping")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--val-fraction", type=float, default=0.2)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=run_cache)
    return p


def run_cache(args: argparse.Namespace) -> None:
    from bratseg.preprocessing.cache import build_cache
    from bratseg.preprocessing.config import PreprocessingConfig

    config = PreprocessingConfig.from_json(args.config) if args.config else PreprocessingConfig()
    if args.resize:
        config.resize = (args.resize, args.resize)
    out = build_cache(
        args.data_dir, args.out, config, workers=args.workers, val_fraction=args.val_fraction, seed=args.seed
    )
    print(f"cache written to {out}")
