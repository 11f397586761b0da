"""``bratseg predict``: segment one case, explicit files, or a folder of cases.

    bratseg predict CASE_DIR --output OUT.nii.gz [--model MODEL_DIR]
    bratseg predict --flair F --t1ce F [--t1 F] [--t2 F] --output OUT.nii.gz
    bratseg predict DATA_DIR --output OUT_DIR          # OUT_DIR/<case>.nii.gz and OUT_DIR/volumes.csv
    torchrun --nproc-per-node N -m bratseg predict DATA_DIR --output OUT_DIR   # N processes share the cases
    bratseg predict CASE_DIR --output OUT.nii.gz --server URL   # a running `bratseg serve` predicts

The model is loaded once. Reading the next case, the network and writing the previous case
overlap (:mod:`bratseg.inference.batch`); a single case's reading overlaps the model's
start-up. In folder mode a case that cannot be read is reported and the others go on; the
command fails (exit code 2) at the end, naming the cases that failed. Each label map is
written atomically and carries its own record; a rerun skips the cases already predicted
with the same model and settings (``--overwrite`` redoes them), so a killed run loses at most
the cases in flight. ``volumes.csv`` is rebuilt from the label maps' records at the end.

Everything that can be known wrong is checked before the model loads: inputs, an output that
is one of the inputs, an output folder that cannot be written, an existing file bratseg did
not write. The batch is :func:`bratseg.inference.predict_run.predict_cases`; this module reads
the options, assembles the per-case extras (``--uncertainty``, and ``--figures``, drawn by
:mod:`bratseg.reporting`) and prints what the run tells it.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from bratseg.data.layout import MODALITIES, nifti_stem
from bratseg.errors import BratsegError
from bratseg.inference.extra_outputs import UNCERTAINTY, CaseExtra
from bratseg.inference.predict_run import Progress, failure_reason
from bratseg.inference.segment import DEFAULT_PREPROCESS, PREPROCESS_CHOICES

if TYPE_CHECKING:
    from bratseg.inference.batch import Job, Outcome
    from bratseg.inference.confidence import Confidence
    from bratseg.inference.predict_run import RunSummary
    from bratseg.inference.prediction import Prediction
    from bratseg.inference.predictor import Segmenter
    from bratseg.inference.sharding import World

_REGIONS_SHOWN = ("whole tumour", "tumour core", "enhancing tumour")


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """The ``predict`` sub-command's arguments and handler."""
    p = subparsers.add_parser(
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
    p.set_defaults(func=run_predict)
    return p


def run_predict(args: argparse.Namespace) -> None:
    """Run ``bratseg predict`` (see the module docstring). Raises :class:`BratsegError` for
    bad input, which ``bratseg.cli.main`` turns into one line and exit code 2."""
    if args.server is not None:
        _predict_on_server(args)
        return
    from bratseg.inference.predict_plan import plan_jobs
    from bratseg.inference.predict_run import PredictSettings, check_outputs, predict_cases

    t_start = time.perf_counter()
    jobs, folder_mode = plan_jobs(args.case, args.output, {m: getattr(args, m) for m in MODALITIES})
    extras = extra_outputs(args)
    check_outputs(jobs, extras, overwrite=args.overwrite)
    settings = PredictSettings(
        model=args.model,
        preprocess=args.preprocess,
        tta=True if args.tta else None,  # without --tta, the model folder's own setting
        precision=args.precision,
        threads=args.threads,
        batch_size=args.batch_size,
        device=args.device,
        overwrite=args.overwrite,
        keep_intermediate=args.keep_intermediate,
    )
    printer = _Printer(args.quiet, folder_mode, args.model or "shipped", t_start)
    summary = predict_cases(
        jobs, settings, extras=extras, folder=args.output if folder_mode else None, progress=printer
    )
    if summary is not None:  # rank 0
        _print_summary(summary, args, folder_mode, time.perf_counter() - t_start)


def extra_outputs(args: argparse.Namespace) -> list[CaseExtra]:
    """The per-case extras the options ask for, in the order they are written."""
    extras = []
    if args.uncertainty:
        extras.append(UNCERTAINTY)
    if args.figures is not None:
        extras.append(figures_extra(args.figures))
    return extras


def figure_path(figures: Path, label_map: Path) -> Path:
    """``--figures DIR``'s panel for ``label_map``: ``DIR/<label map name>.png``."""
    return figures / f"{nifti_stem(label_map)}.png"


def figures_extra(figures: Path) -> CaseExtra:
    """``--figures DIR``: each case's key-slice panel (:func:`bratseg.reporting.figures.key_slice_panel`)."""

    def write_figure(prediction: Prediction, path: Path) -> None:
        from bratseg.reporting.figures import key_slice_panel  # matplotlib: only when asked for

        # A native-path case is shown in BraTS space, the grid the model saw.
        key_slice_panel(prediction.model_space, path)

    return CaseExtra(lambda label_map: figure_path(figures, label_map), write_figure)


def _volumes_line(volumes: dict[str, float]) -> str:
    return ", ".join(f"{name} {volumes[name]:.1f} cm3" for name in _REGIONS_SHOWN)


class _Printer(Progress):
    """The run's lines: results to stdout, problems to stderr, each prefixed by the process's
    rank under torchrun; a progress bar in folder mode (one process)."""

    def __init__(self, quiet: bool, folder_mode: bool, model: str, t_start: float) -> None:
        self.show = not quiet
        self.folder_mode = folder_mode
        self.model = model
        self.t_start = t_start
        self.prefix = ""
        self.distributed = False
        self.bar = None

    def joined(self, world: World) -> None:
        self.prefix = f"rank {world.rank}: " if world.distributed else ""
        self.distributed = world.distributed

    def say(self, line: str, error: bool = False) -> None:
        # Through tqdm while its bar is drawn, so that the bar is redrawn below the line
        # instead of being broken by it.
        stream = sys.stderr if error else sys.stdout
        if self.bar is not None:
            self.bar.write(self.prefix + line, file=stream)
        else:
            # One write with its newline: torchrun's processes share the stream, and print()'s
            # separate newline lets another rank's line land in the middle of this one.
            stream.write(f"{self.prefix}{line}\n")
            stream.flush()

    def skipped(self, job: Job) -> None:
        if self.show:
            self.say(f"{job.name}: skipped: {job.target} is already predicted (--overwrite to redo)")

    def starting(self, pending: int) -> None:
        if self.folder_mode and self.show and not self.distributed:
            from tqdm import tqdm

            self.bar = tqdm(total=pending, desc="predict", unit="case", file=sys.stderr)

    def loaded(self, segmenter: Segmenter) -> None:
        if self.show:
            elapsed = time.perf_counter() - self.t_start
            self.say(f"model {self.model} loaded in {elapsed:.2f} s ({segmenter.precision})")

    def step(self, job: Job, line: str) -> None:
        if self.show:
            self.say(f"{job.name}: {line}")

    def finished(self, outcome: Outcome, confidence: Confidence | None) -> None:
        name = outcome.job.name
        if outcome.ok:
            pred = outcome.prediction
            if self.show:
                self.say(
                    f"{name}: {pred.seconds:.2f} s prediction, {outcome.wall_seconds:.2f} s with I/O; "
                    f"{_volumes_line(pred.region_volumes())}; {confidence.describe()} -> {outcome.job.target}"
                )
            for warning in pred.warnings:
                self.say(f"{name}: warning: {warning}", error=True)
        elif self.folder_mode:  # alone, the error itself is raised
            self.say(f"{name}: failed: {failure_reason(outcome.error)}", error=True)
        if self.bar is not None:
            self.bar.update()

    def stopped(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _print_summary(summary: RunSummary, args: argparse.Namespace, folder_mode: bool, wall: float) -> None:
    """The final summary (rank 0): cases written, skipped and failed, and the time."""
    written, failed = summary.written, summary.failed
    if folder_mode and not args.quiet:
        processes = f" by {summary.world_size} processes" if summary.world_size > 1 else ""
        per_case = f" ({wall / written:.2f} s per case written)" if written else ""
        print(
            f"{summary.total} cases: {written} written, {summary.skipped} skipped (already predicted), "
            f"{len(failed)} failed{processes} in {wall:.1f} s{per_case}; label maps and volumes.csv in {args.output}"
        )
    if failed:
        names = ", ".join(n for n, _ in failed)
        raise BratsegError(f"{len(failed)} of {summary.total} cases failed ({names}); the others were written")


# What a server cannot be asked: options that change the model, its settings or the outputs.
_LOCAL_ONLY = (
    "model", "flair", "t1", "t1ce", "t2", "keep_intermediate", "tta", "precision", "threads", "batch_size",
    "uncertainty", "figures",
)  # fmt: skip


def _local_options_given(args: argparse.Namespace) -> list[str]:
    """The :data:`_LOCAL_ONLY` options ``args`` sets to other than their defaults (read from
    the parser itself, so that the two never disagree)."""
    parser = add_parser(argparse.ArgumentParser().add_subparsers())
    return [name for name in _LOCAL_ONLY if getattr(args, name, None) != parser.get_default(name)]


def _predict_on_server(args: argparse.Namespace) -> None:
    """``bratseg predict CASE --output OUT.nii.gz --server URL``: no torch, no model here."""
    from bratseg.serving.client import predict_remote

    given = _local_options_given(args)
    if given:
        options = ", ".join("--" + name.replace("_", "-") for name in given)
        raise BratsegError(f"{options}: not with --server (the server's model and settings apply)")
    if args.case is None or not args.output.name.lower().endswith((".nii", ".nii.gz")):
        raise BratsegError("--server predicts one case: give its folder (or .zip) and --output OUT.nii.gz")
    result = predict_remote(args.server, args.case, args.output, preprocess=args.preprocess)
    if not args.quiet:  # as a local call prints them
        print(f"{args.case.name}: {_volumes_line(result.volumes)} -> {result.output} (by {args.server})")
    for warning in result.warnings:
        print(f"{args.case.name}: warning: {warning}", file=sys.stderr)
