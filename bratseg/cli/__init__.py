"""The ``bratseg`` command: one sub-command per stage.

bratseg cache DATA_DIR --out CACHE_DIR
bratseg train --cache CACHE_DIR --out RUN_DIR [--config FILE] [--epochs N] [--resume]
bratseg export RUN_DIR --out MODEL_DIR [--checkpoint last] [--confidence-threshold T] [--push-to-hub ID]
bratseg predict CASE_OR_DATA_DIR --output OUT [--model MODEL_DIR]
bratseg evaluate --pred PRED --ref REF --out REPORT_DIR
bratseg report CASE_DIR --out report.pdf [--model MODEL_DIR] [--seg SEG.nii.gz]
bratseg serve [--host H] [--port P] [--model MODEL_DIR] [--data-root DIR]

Newer commands live one per module in this package (``bratseg/cli/<command>.py``), each with
``add_parser(subparsers)`` that registers its arguments and handler; they are listed in
``COMMAND_MODULES``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from bratseg.errors import BratsegError

# One module per command, imported when the parser is built; each must stay light (no torch
# import at module level) so that `bratseg --help` is quick.
COMMAND_MODULES: tuple[str, ...] = ("bratseg.cli.measure", "bratseg.cli.followup")


def _cmd_cache(args: argparse.Namespace) -> None:
    from bratseg.preprocessing.cache import build_cache
    from bratseg.preprocessing.config import PreprocessingConfig

    config = PreprocessingConfig.from_json(args.config) if args.config else PreprocessingConfig()
    if args.resize:
        config.resize = (args.resize, args.resize)
    out = build_cache(
        args.data_dir, args.out, config, workers=args.workers, val_fraction=args.val_fraction, seed=args.seed
    )
    print(f"cache written to {out}")


def _cmd_train(args: argparse.Namespace) -> None:
    from bratseg.model.hub import resolve_model
    from bratseg.training.config import TrainConfig
    from bratseg.training.trainer import train

    # A Hub id becomes its folder in the Hugging Face cache, before any training starts.
    init_weights = resolve_model(args.init_weights) if args.init_weights else None

    config = TrainConfig.from_json(
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
        all_cases=args.all_cases or None,
    )
    run = train(args.cache, args.out, config, resume=args.resume)
    print(f"run written to {run}; model folder {run / 'model'}")


def _cmd_export(args: argparse.Namespace) -> None:
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


def _cmd_predict(args: argparse.Namespace) -> None:
    from bratseg.inference.cli_predict import run_predict

    run_predict(args)


def _cmd_evaluate(args: argparse.Namespace) -> None:
    from bratseg.evaluation.report import run_evaluate

    run_evaluate(args)


def _cmd_report(args: argparse.Namespace) -> None:
    from bratseg.reporting.cli_report import run_report

    run_report(args)


def _cmd_serve(args: argparse.Namespace) -> None:
    from bratseg.serving.server import serve

    serve(args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bratseg", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("cache", help="build the NumPy slice cache of a folder of labelled cases")
    p.add_argument("data_dir", type=Path)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--config", type=Path, help="preprocessing JSON (default: built-in)")
    p.add_argument("--resize", type=int, help="resize slices to N x N after cropping")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--val-fraction", type=float, default=0.2)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_cmd_cache)

    p = sub.add_parser("train", help="train a U-Net on a slice cache (torchrun for several processes)")
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
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser("export", help="write a run's weights (best or final epoch) as a model folder")
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
    from bratseg.model.metadata import DEFAULT_SETTINGS, TTA_MODES  # light: no torch import

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
    p.set_defaults(func=_cmd_export)

    from bratseg.inference.cli_predict import add_predict_parser  # light: no torch import

    add_predict_parser(sub).set_defaults(func=_cmd_predict)

    p = sub.add_parser(
        "evaluate",
        help="BraTS metrics of predictions against references",
        description="Dice, IoU, HD95, sensitivity and specificity of WT/TC/ET and per label; writes metrics.csv, "
        "cases.csv, missing.csv, summary.csv, summary.md and boxplot.png to --out. Give --pred and --ref, "
        "or --pairs, or --pairs-in-folders.",
    )
    p.add_argument("--pred", type=Path, help="label map or folder of label maps <case>.nii.gz")
    p.add_argument("--ref", type=Path, help="label map, folder of case folders, or folder of label files")
    p.add_argument("--pairs", type=Path, metavar="CSV", help="CSV with columns case,pred,ref (relative to the CSV)")
    p.add_argument(
        "--pairs-in-folders",
        type=Path,
        metavar="DIR",
        help="folder of case folders, each with one *_seg/*-seg reference and one prediction",
    )
    p.add_argument("--out", type=Path, required=True, help="report folder")
    schemes = ["auto", "brats2020", "brats2023"]
    scheme_help = "label values on disk: brats2020 0/1/2/4, brats2023 0/1/2/3; auto: by file name, else by values"
    p.add_argument("--ref-scheme", choices=schemes, default="auto", help=scheme_help)
    p.add_argument("--pred-scheme", choices=schemes, default="auto", help=scheme_help)
    p.set_defaults(func=_cmd_evaluate)

    from bratseg.reporting.cli_report import add_report_parser

    add_report_parser(sub).set_defaults(func=_cmd_report)

    p = sub.add_parser("serve", help="serve the Flask app with waitress")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=5000)
    p.add_argument(
        "--model", help="model folder or Hugging Face Hub id namespace/name[@revision] (default: the shipped model)"
    )
    p.add_argument("--data-root", type=Path, help="server-side paths are allowed beneath this folder only")
    p.add_argument("--max-upload-mb", type=int, default=200, help="largest request body; larger gets 413")
    p.add_argument("--max-unzipped-mb", type=int, default=1024, help="largest total size a zipped case may unzip to")
    p.add_argument(
        "--threads", type=int, default=8, help="waitress request threads; two always stay free for /healthz and static"
    )
    p.add_argument("--max-concurrent", type=int, default=2, help="predictions run at once")
    p.add_argument(
        "--max-queue",
        type=int,
        help="predictions that may wait for a slot (default: the threads left after --max-concurrent and the two "
        "kept free); more get 503 with Retry-After",
    )
    p.add_argument(
        "--max-case-mb",
        type=int,
        default=500,
        help="the most a case's images may take once loaded (header dtype x shape, at least float32); more gets 413",
    )
    p.set_defaults(func=_cmd_serve)

    import importlib

    for name in COMMAND_MODULES:
        importlib.import_module(name).add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except BratsegError as exc:
        print(f"bratseg {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except FileExistsError as exc:
        print(f"bratseg {args.command}: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
