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
(:func:`case_hooks`), called with each prediction and the path of its label map.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from bratseg.data.layout import MODALITIES, Case, case_from_folder, modality_of, nifti_stem
from bratseg.errors import BratsegError, InvalidCaseError

if TYPE_CHECKING:
    from bratseg.inference.batch import Job, Outcome
    from bratseg.inference.predictor import Prediction

_REGIONS_SHOWN = ("whole tumour", "tumour core", "enhancing tumour")

CaseHook = Callable[["Prediction", Path], None]
"""Called on the writer thread with each case's prediction and the path of its label map,
after the label map is written (an error in it fails that case)."""


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
    p.add_argument("--model", type=Path, help="model folder (default: the model shipped with bratseg)")
    for m in MODALITIES:
        required = " (required with explicit files)" if m in ("flair", "t1ce") else ""
        p.add_argument(f"--{m}", type=Path, metavar="FILE", help=f"{m.upper()} NIfTI file, instead of CASE{required}")
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
    return p


def case_hooks(args: argparse.Namespace) -> list[CaseHook]:
    """The per-case extras the arguments ask for, run after each label map is written."""
    hooks: list[CaseHook] = []
    if args.uncertainty:

        def write_uncertainty(prediction: Prediction, label_map: Path) -> None:
            from bratseg.inference.confidence import save_uncertainty

            save_uncertainty(prediction, uncertainty_path(label_map))

        hooks.append(write_uncertainty)
    if args.figures is not None:

        def write_figure(prediction: Prediction, label_map: Path) -> None:
            from bratseg.reporting.figures import key_slice_panel

            key_slice_panel(prediction, extra_targets(args, label_map)[-1])

        hooks.append(write_figure)
    return hooks


def extra_targets(args: argparse.Namespace, label_map: Path) -> list[Path]:
    """The files the per-case extras write beside ``label_map``'s."""
    extras = []
    if args.uncertainty:
        extras.append(uncertainty_path(label_map))
    if args.figures is not None:
        extras.append(args.figures / f"{nifti_stem(label_map)}.png")
    return extras


def uncertainty_path(label_map: Path) -> Path:
    """``seg.nii.gz`` -> ``seg_uncertainty.nii.gz`` (the suffix's letter case kept)."""
    stem = nifti_stem(label_map) or label_map.name
    return label_map.with_name(f"{stem}_uncertainty{label_map.name[len(stem) :]}")


def _is_nifti_name(path: Path) -> bool:
    return nifti_stem(path) is not None


def _is_case_folder(folder: Path) -> bool:
    """A folder that directly holds an image of a known naming (FLAIR or not: a case that
    lacks its FLAIR must be reported, not silently passed over)."""
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return False
    return any(e.is_file() and (hit := modality_of(e.name)) is not None and hit[0] != "seg" for e in entries)


def discover_cases(root: Path) -> list[Path]:
    """Every case folder beneath ``root`` (itself excluded), sorted by name. Unlike
    :func:`bratseg.data.layout.find_cases` it does not open the cases, so one bad case cannot
    stop the others; it does not look inside a case folder (BraTS Toolkit keeps other
    algorithms' outputs there), and it takes symbolic links to case folders as cases."""
    found = []
    for dirpath, dirnames, _files in os.walk(root):
        dirnames.sort()
        for d in list(dirnames):
            if _is_case_folder(Path(dirpath) / d):
                found.append(Path(dirpath) / d)
                dirnames.remove(d)
    return sorted(found, key=lambda p: (p.name, str(p)))


def _explicit_case(args: argparse.Namespace) -> Case | None:
    given = {m: getattr(args, m) for m in MODALITIES if getattr(args, m, None) is not None}
    if not given:
        return None
    if args.case is not None:
        raise BratsegError("give either CASE or explicit files (--flair/--t1ce/...), not both")
    for m in ("flair", "t1ce"):
        if m not in given:
            raise InvalidCaseError(None, f"--{m} is required with explicit files (FLAIR and T1ce are needed)")
    for m, path in given.items():
        if not path.is_file():
            raise InvalidCaseError(path, f"file not found (--{m})")
    case_id = nifti_stem(args.output) if _is_nifti_name(args.output) else None
    return Case.from_files(given["flair"], given["t1ce"], given.get("t1"), given.get("t2"), case_id=case_id)


def _plan(args: argparse.Namespace) -> tuple[list[Job], bool]:
    """The cases and where each output goes, and whether this is folder mode. Raises
    :class:`BratsegError` for anything that can be known wrong before the model loads."""
    from bratseg.inference.batch import Job

    case = _explicit_case(args)
    output: Path = args.output
    if case is not None:
        target = output if _is_nifti_name(output) else output / f"{case.case_id}.nii.gz"
        return [Job(case.case_id, case, target)], False
    if args.case is None:
        raise BratsegError("give a case folder, a folder of cases, or --flair and --t1ce files")
    src: Path = args.case
    if not src.exists():
        raise InvalidCaseError(src, "does not exist")
    if src.is_file():
        raise InvalidCaseError(src, "is a file; give a case folder, or the images with --flair and --t1ce")
    if _is_case_folder(src):
        one = case_from_folder(src)  # a bad single case fails now, before the model loads
        target = output if _is_nifti_name(output) else output / f"{one.case_id}.nii.gz"
        return [Job(one.case_id, one, target)], False
    folders = discover_cases(src)
    if not folders:
        raise InvalidCaseError(src, "holds no case folders (no NIfTI files named like BraTS modalities)")
    if _is_nifti_name(output):
        raise BratsegError(f"{output}: {src.name} is a folder of {len(folders)} cases; --output must be a folder")
    if output.exists() and not output.is_dir():
        raise BratsegError(f"{output}: exists and is not a folder")
    jobs = [Job(f.name, f, output / f"{f.name}.nii.gz") for f in folders]
    seen: dict[Path, Job] = {}
    for job in jobs:
        if job.target in seen:
            raise BratsegError(
                f"cases {seen[job.target].source} and {job.source} would both write {job.target}; rename one folder"
            )
        seen[job.target] = job
    return jobs, True


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
    jobs, folder_mode = _plan(args)
    inputs = [f for job in jobs for f in outputs.input_files(job.source)]
    outputs.check_targets([job.target for job in jobs], inputs, overwrite=args.overwrite)
    extras = [extra for job in jobs for extra in extra_targets(args, job.target)]
    outputs.check_not_an_input(extras, inputs)
    outputs.check_writable(extras)

    from bratseg.inference.distributed import join_world, shard
    from bratseg.inference.predictor import parse_device

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
    from bratseg.inference.batch import run_batch
    from bratseg.inference.confidence import Confidence, assess
    from bratseg.inference.predictor import (
        DEFAULT_BATCH_SIZE,
        SHIPPED_MODEL,
        Segmenter,
        resolve_precision,
        weights_version,
    )

    summary = RankSummary(world.rank)
    device = world.device_for(args.device)
    model_dir = args.model or SHIPPED_MODEL
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
            args.model,
            precision=args.precision,
            flip_tta=args.tta,
            threads=args.threads,
            batch_size=args.batch_size or DEFAULT_BATCH_SIZE,
            device=device,
        )
        loaded.append(segmenter)
        if show:
            elapsed = time.perf_counter() - t_start
            say(f"model {args.model or 'shipped'} loaded in {elapsed:.2f} s ({segmenter.precision})")
        return segmenter

    hooks = case_hooks(args)
    confidences: dict[str, Confidence] = {}

    def write(job: Job, prediction: Prediction) -> None:
        segmenter = loaded[0]
        confidences[job.name] = assess(prediction)
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

    outcomes = run_batch(pending, load, write, on_outcome)
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
