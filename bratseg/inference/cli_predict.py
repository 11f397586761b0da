"""``bratseg predict``: segment one case, explicit files, or a folder of cases.

    bratseg predict CASE_DIR --output OUT.nii.gz [--model MODEL_DIR]
    bratseg predict --flair F --t1ce F [--t1 F] [--t2 F] --output OUT.nii.gz
    bratseg predict DATA_DIR --output OUT_DIR          # OUT_DIR/<case>.nii.gz and OUT_DIR/volumes.csv
    torchrun --nproc-per-node N -m bratseg predict DATA_DIR --output OUT_DIR   # N processes share the cases

The model is loaded once. Reading the next case, the network and writing the previous case
overlap (:mod:`bratseg.inference.batch`); a single case's reading overlaps the model's
start-up. In folder mode a case that cannot be read is reported and the others go on; the
command fails (exit code 2) at the end, naming the cases that failed. Each label map is
written atomically and carries its own record; a rerun skips the cases already predicted
with the same model and settings (``--overwrite`` redoes them), so a killed run loses at most
the cases in flight. ``volumes.csv`` is rebuilt from the label maps' records at the end.

Everything that can be known wrong is checked before the model loads: inputs, an output that
is one of the inputs, an output folder that cannot be written, an existing file bratseg did
not write. Per-case extras (confidence maps, figures) plug in as :data:`CaseHook` functions
(:func:`bratseg.inference.case_extras.case_hooks`), called with each prediction and the path of its label map.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from bratseg.data.layout import MODALITIES
from bratseg.errors import BratsegError
from bratseg.inference.case_extras import case_hooks, extra_targets
from bratseg.inference.predict_plan import plan_jobs
from bratseg.inference.segment import DEFAULT_PREPROCESS, PREPROCESS_CHOICES

if TYPE_CHECKING:
    from bratseg.inference.batch import Job, Outcome
    from bratseg.inference.prediction import Prediction

_REGIONS_SHOWN = ("whole tumour", "tumour core", "enhancing tumour")


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def add_predict_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """The ``predict`` sub-command's arguments (``bratseg.cli`` sets its handler)."""
    p = sub.add_parser(
        "predict",
        help="segment a case, explicit files, or a folder of cases",
        description="Segment one case, explicit files, or a folder of cases. Writes BraTS 2020 label maps "
        "(0/1/2/4) with the input's shape, affine and header, and prints each case's time and region volumes.",
    )
    p.add_argument("case", type=Path, nargs="?", help="case folder, or a folder of case folders")
    p.add_argument("--output", "-o", type=Path, required=True, help="OUT.nii.gz for one case, a folder for many")
    p.add_argument(
        "--model",
        help="model folder, or Hugging Face Hub id namespace/name[@revision] (fetched into the Hugging Face cache "
        "once; HF_HUB_OFFLINE=1 reads the cache only); default: the model shipped with bratseg",
    )
    for m in MODALITIES:
        required = " (required with explicit files)" if m in ("flair", "t1ce") else ""
        p.add_argument(
            f"--{m}", type=Path, metavar="PATH", help=f"{m.upper()} NIfTI file or DICOM series folder/zip{required}"
        )
    p.add_argument(
        "--preprocess",
        choices=PREPROCESS_CHOICES,
        default=DEFAULT_PREPROCESS,
        help="auto (default): input already in BraTS space takes the fast path, anything else (other grids, skull, "
        "DICOM) is co-registered, skull-stripped and registered to the SRI24 atlas first and the labels come back "
        "on the T1ce's grid; native: always; none: never (raw input is refused)",
    )
    p.add_argument(
        "--keep-intermediate",
        type=Path,
        metavar="DIR",
        help="native path: keep each case's intermediate volumes and transforms in DIR/<case>/",
    )
    p.add_argument("--tta", action="store_true", help="average over in-plane flips (about 4x slower)")
    p.add_argument("--precision", choices=["auto", "bf16", "fp32"], default="auto")
    p.add_argument("--threads", type=_positive_int, help="CPU threads (default: one per core)")
    p.add_argument("--batch-size", type=_positive_int, help="slices per forward pass")
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default cpu; bf16 autocast on GPUs)")
    p.add_argument("--overwrite", action="store_true", help="redo cases whose label map exists (default: skip them)")
    p.add_argument(
        "--uncertainty",
        action="store_true",
        help="also write each case's per-voxel uncertainty map as <output name>_uncertainty.nii.gz",
    )
    p.add_argument(
        "--figures", type=Path, metavar="DIR", help="also write each case's key-slice panel as DIR/<case>.png"
    )
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bar or per-case lines")
    p.add_argument(
        "--server",
        metavar="URL",
        help="send the case to a running `bratseg serve` at URL instead of loading a model here (one case, "
        "--output a label map; the server's model and settings)",
    )
    return p


def _volumes_line(volumes: dict[str, float]) -> str:
    return ", ".join(f"{name} {volumes[name]:.1f} cm3" for name in _REGIONS_SHOWN)


@dataclass
class RankSummary:
    """What one process did: gathered on rank 0 for the final summary."""

    rank: int
    written: int = 0
    skipped: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)
    seconds: float = 0.0


def run_predict(args: argparse.Namespace) -> None:
    """Run ``bratseg predict`` (see the module docstring). Raises :class:`BratsegError` for
    bad input, which ``bratseg.cli.main`` turns into one line and exit code 2."""
    from bratseg.inference import outputs

    t_start = time.perf_counter()
    jobs, folder_mode = plan_jobs(args)
    inputs = [f for job in jobs for f in outputs.input_files(job.source)]
    outputs.check_targets([job.target for job in jobs], inputs, overwrite=args.overwrite)
    extras = [extra for job in jobs for extra in extra_targets(args, job.target)]
    outputs.check_not_an_input(extras, inputs)
    outputs.check_writable(extras)

    from bratseg.inference.distributed import join_world, shard
    from bratseg.model.precision import parse_device

    parse_device(args.device)  # a device that does not exist fails here, before any process group
    world = join_world(args.device)
    try:
        summary = _predict_share(args, shard(jobs, world.rank, world.world_size), folder_mode, world, t_start)
        world.barrier()  # every label map is written before the table is built from them
        summaries = world.gather(summary)
        if world.is_main:
            if folder_mode:
                records = [r for job in jobs if (r := outputs.read_record(job.target)) is not None]
                outputs.remove_stale_temporaries(args.output / outputs.TABLE_NAME)
                outputs.write_volumes_table(args.output / outputs.TABLE_NAME, records)
            _report(args, summaries, len(jobs), folder_mode, world.world_size, time.perf_counter() - t_start)
    finally:
        world.close()


def _predict_share(args: argparse.Namespace, jobs: list[Job], folder_mode: bool, world, t_start: float) -> RankSummary:
    """Predict this process's cases; skip those already done."""
    from bratseg.data.io import save_nifti
    from bratseg.inference import outputs
    from bratseg.inference.confidence import Confidence, assess
    from bratseg.inference.predictor import DEFAULT_BATCH_SIZE, SHIPPED_MODEL, Segmenter, weights_version
    from bratseg.model.hub import is_hub_id, resolve_model, split_revision
    from bratseg.model.precision import resolve_precision

    summary = RankSummary(world.rank)
    device = world.device_for(args.device)
    model_dir = resolve_model(args.model) or SHIPPED_MODEL  # a Hub id: its folder in the Hugging Face cache
    show = not args.quiet
    prefix = f"rank {world.rank}: " if world.distributed else ""
    settings = {"tta": args.tta, "precision": resolve_precision(args.precision, device)}
    version = weights_version(model_dir) if Path(model_dir, "model.safetensors").is_file() else "unknown"
    pending = []
    for job in jobs:
        status = "missing" if args.overwrite else "stale"
        if not args.overwrite:
            status = outputs.existing_status(job.target, outputs.input_shape(job.source), version, settings)
            if status == "done" and not all(extra.exists() for extra in extra_targets(args, job.target)):
                status = "stale"  # predicted before, but without an extra asked for now
        if status == "done":
            summary.skipped += 1
            if show:
                print(f"{prefix}{job.name}: skipped: {job.target} is already predicted (--overwrite to redo)")
            continue
        outputs.remove_stale_temporaries(job.target)
        pending.append(job)
    if not pending:
        return summary

    bar = None
    if folder_mode and show and not world.distributed:
        from tqdm import tqdm

        bar = tqdm(total=len(pending), desc="predict", unit="case", file=sys.stderr)

    def say(line: str, error: bool = False) -> None:
        # Results to stdout, problems to stderr; through tqdm while its bar is drawn, so
        # the bar is redrawn below the line instead of being broken by it.
        stream = sys.stderr if error else sys.stdout
        if bar is not None:
            bar.write(prefix + line, file=stream)
        else:
            print(prefix + line, file=stream, flush=True)

    loaded: list[Segmenter] = []

    def load() -> Segmenter:
        segmenter = Segmenter.from_pretrained(
            model_dir,
            precision=args.precision,
            flip_tta=args.tta,
            threads=args.threads,
            batch_size=args.batch_size or DEFAULT_BATCH_SIZE,
            device=device,
        )
        if args.model and is_hub_id(args.model):  # name it by its id, not by its snapshot folder
            segmenter.source = f"{split_revision(args.model)[0]}@{Path(model_dir).name}"
        loaded.append(segmenter)
        if show:
            elapsed = time.perf_counter() - t_start
            say(f"model {args.model or 'shipped'} loaded in {elapsed:.2f} s ({segmenter.precision})")
        return segmenter

    hooks = case_hooks(args)
    confidences: dict[str, Confidence] = {}

    def write(job: Job, prediction: Prediction) -> None:
        segmenter = loaded[0]
        confidences[job.name] = assess(prediction.model_space)
        record = outputs.CaseRecord(
            job.name,
            prediction.region_volumes(),
            round(prediction.seconds, 3),
            segmenter.model_name,
            segmenter.model_version,
            settings,
            list(prediction.warnings),
            list(prediction.labels.shape),
            world.rank,
            confidences[job.name].score,
            confidences[job.name].low,
        )
        try:
            save_nifti(outputs.attach_record(prediction.to_nifti(), record), job.target)
        except OSError as exc:
            raise BratsegError(f"{job.target}: cannot write the label map ({exc.strerror or exc})") from None
        for hook in hooks:
            hook(prediction, job.target)

    def on_outcome(outcome: Outcome) -> None:
        name = outcome.job.name
        if outcome.ok:
            summary.written += 1
            pred = outcome.prediction
            if show:
                say(
                    f"{name}: {pred.seconds:.2f} s prediction, {outcome.wall_seconds:.2f} s with I/O; "
                    f"{_volumes_line(pred.region_volumes())}; {confidences[name].describe()} -> {outcome.job.target}"
                )
            for warning in pred.warnings:
                say(f"{name}: warning: {warning}", error=True)
        else:
            exc = outcome.error
            reason = str(exc) if isinstance(exc, BratsegError) else f"{type(exc).__name__}: {exc}"
            summary.failed.append((name, reason))
            if folder_mode:  # alone, the error itself is raised below
                say(f"{name}: failed: {reason}", error=True)
        if bar is not None:
            bar.update()

    from bratseg.inference.segment import segment_jobs

    def log_for(job: Job):
        return (lambda line: say(f"{job.name}: {line}")) if show else None

    outcomes = segment_jobs(
        pending, args.preprocess, load, write, on_outcome, keep_intermediate=args.keep_intermediate, log_for=log_for
    )
    if bar is not None:
        bar.close()
    if not folder_mode and not outcomes[0].ok:
        # Alone, a typed error is the CLI's one-line message and anything else is a bug
        # whose traceback we want.
        raise outcomes[0].error
    summary.seconds = time.perf_counter() - t_start
    return summary


def _report(
    args: argparse.Namespace, summaries: list[RankSummary], total: int, folder_mode: bool, world_size: int, wall: float
) -> None:
    """The final summary (rank 0): cases written, skipped and failed, and the time."""
    written = sum(s.written for s in summaries)
    skipped = sum(s.skipped for s in summaries)
    failed = [f for s in summaries for f in s.failed]
    if folder_mode and not args.quiet:
        processes = f" by {world_size} processes" if world_size > 1 else ""
        per_case = f" ({wall / written:.2f} s per case written)" if written else ""
        print(
            f"{total} cases: {written} written, {skipped} skipped (already predicted), {len(failed)} failed{processes} "
            f"in {wall:.1f} s{per_case}; label maps and volumes.csv in {args.output}"
        )
    if failed:
        names = ", ".join(n for n, _ in failed)
        raise BratsegError(f"{len(failed)} of {total} cases failed ({names}); the others were written")
