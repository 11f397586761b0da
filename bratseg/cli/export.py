"""``bratseg export RUN_DIR --out MODEL_DIR``: a run's weights as a model folder, optionally
published to the Hugging Face Hub.

The export itself is :func:`bratseg.training.export.export_run`; publishing is
:func:`bratseg.model.hub.push_model_folder`.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from bratseg.errors import BratsegError


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    from bratseg.model.metadata import DEFAULT_SETTINGS, TTA_MODES  # light: no torch import

    p = subparsers.add_parser("export", help="write a run's weights (best or final epoch) as a model folder")
    p.add_argument("run_dir", type=Path)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument(
        "--checkpoint",
        choices=("best", "last", "ema"),
        default="best",
        help="best: the epoch best on the run's validation cases; last: the final epoch (for CV folds); "
        "ema: the final epoch's weight average (runs trained with ema_decay)",
    )
    p.add_argument(
        "--confidence-threshold",
        type=float,
        help="flag cases whose confidence score is below this (calibrated on unseen cases; stored in bratseg.json)",
    )
    p.add_argument(
        "--min-component-fraction",
        type=float,
        default=DEFAULT_SETTINGS.min_component_fraction,
        help="post-processing stored in bratseg.json: remove whole-tumour components smaller than this fraction "
        "of the largest (0 keeps all; default %(default)s, chosen by cross-validation)",
    )
    p.add_argument(
        "--tta",
        choices=TTA_MODES,
        default=DEFAULT_SETTINGS.tta,
        help="test-time augmentation stored in bratseg.json (default %(default)s, chosen by cross-validation)",
    )
    p.add_argument(
        "--push-to-hub",
        metavar="ID",
        help="then publish the folder as this Hugging Face Hub model repo (namespace/name; created if needed; "
        "log in first with `hf auth login` or HF_TOKEN)",
    )
    p.add_argument("--private", action="store_true", help="with --push-to-hub: create the repo private")
    p.add_argument("--revision", metavar="BRANCH", help="with --push-to-hub: commit to this branch (created if needed)")
    p.add_argument("--commit-message", help="with --push-to-hub: the commit message")
    p.set_defaults(func=run_export)
    return p


def run_export(args: argparse.Namespace) -> None:
    from bratseg.model.hub import is_hub_id
    from bratseg.model.metadata import InferenceSettings
    from bratseg.training.export import export_run

    push = args.push_to_hub
    if push is None and (args.private or args.revision or args.commit_message):
        raise BratsegError("--private, --revision and --commit-message go with --push-to-hub ID")
    if push is not None and (not is_hub_id(push) or "@" in push):  # before exporting for nothing
        raise BratsegError(f"--push-to-hub {push}: not a Hub repo id (namespace/name)")
    try:
        out = export_run(
            args.run_dir,
            args.out,
            checkpoint=args.checkpoint,
            confidence_threshold=args.confidence_threshold,
            repo_id=push or "",
            settings=InferenceSettings(args.min_component_fraction, args.tta),
        )
    except ValueError as exc:  # an option out of range: reported like any other bad input
        raise BratsegError(str(exc)) from None
    print(f"model written to {out}")
    if push is not None:
        from bratseg.model.hub import push_model_folder

        url = push_model_folder(
            out, push, private=args.private or None, revision=args.revision, commit_message=args.commit_message
        )
        print(f"model published to {push}: {url}")
