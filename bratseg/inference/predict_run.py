"""Predict planned cases (:mod:`bratseg.inference.predict_plan`) as ``bratseg predict`` does:
the batch behind the command, as an API.

- The outputs are checked before the model loads (:func:`check_outputs`).
- Under torchrun each process predicts its own share of the cases
  (:mod:`bratseg.inference.sharding`); rank 0 gathers every process's :class:`RankSummary`.
- A case whose label map already holds a record of the same model and settings is skipped
  (unless ``overwrite``); the others are segmented with reading, the network and writing
  overlapped (:func:`bratseg.inference.segment.segment_jobs`), each label map written
  atomically with its record (:mod:`bratseg.inference.outputs`), then its extras
  (:mod:`bratseg.inference.extra_outputs`).
- In folder mode ``volumes.csv`` is rebuilt from the label maps' records at the end, and a case
  that fails is counted and the others go on; a single case's error is raised.

What happens is told to a :class:`Progress` (the command prints it; the default is silent).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from bratseg.errors import BratsegError
from bratseg.inference.extra_outputs import CaseExtra, extra_paths
from bratseg.inference.segment import DEFAULT_PREPROCESS, Preprocess

if TYPE_CHECKING:
    from bratseg.inference.batch import Job, Outcome
    from bratseg.inference.confidence import Confidence
    from bratseg.inference.prediction import Prediction
    from bratseg.inference.predictor import Segmenter
    from bratseg.inference.sharding import World


@dataclass(frozen=True)
class PredictSettings:
    """The model and how it predicts, as ``bratseg predict``'s options give them."""

    model: str | None = None  # folder or Hub id namespace/name[@revision]; None: the shipped model
    preprocess: Preprocess = DEFAULT_PREPROCESS
    tta: bool | None = None  # None: as the model folder's bratseg.json says
    precision: str = "auto"
    threads: int | None = None
    batch_size: int | None = None
    device: str = "cpu"
    overwrite: bool = False  # redo cases already predicted
    keep_intermediate: Path | None = None  # native path: DIR/<case>/ keeps each case's steps


@dataclass
class RankSummary:
    """What one process did: gathered on rank 0 for the final summary."""

    rank: int
    written: int = 0
    skipped: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)  # (case, reason)
    seconds: float = 0.0


@dataclass
class RunSummary:
    """What every process did (on rank 0)."""

    total: int  # cases planned
    ranks: list[RankSummary]

    @property
    def world_size(self) -> int:
        return len(self.ranks)

    @property
    def written(self) -> int:
        return sum(s.written for s in self.ranks)

    @property
    def skipped(self) -> int:
        return sum(s.skipped for s in self.ranks)

    @property
    def failed(self) -> list[tuple[str, str]]:
        return [f for s in self.ranks for f in s.failed]


class Progress:
    """What a run tells as it goes, in this order; each method does nothing here."""

    def joined(self, world: World) -> None:
        """This process's place in the job, before anything else."""

    def skipped(self, job: Job) -> None:
        """``job``'s label map is already predicted with this model and settings."""

    def starting(self, pending: int) -> None:
        """``pending`` cases are to be predicted (called only when there are some)."""

    def loaded(self, segmenter: Segmenter) -> None:
        """The model is loaded (on the first case that needs it)."""

    def step(self, job: Job, line: str) -> None:
        """A native-path step of ``job``'s (what it did)."""

    def finished(self, outcome: Outcome, confidence: Confidence | None) -> None:
        """A case is written, with its confidence, or failed (``outcome.error``); the
        prediction is still attached."""

    def stopped(self) -> None:
        """This process's last case is done (not called when the run is stopped by an error)."""


def failure_reason(exc: BaseException) -> str:
    """A failed case's reason: a typed error's message, else the exception's type too."""
    return str(exc) if isinstance(exc, BratsegError) else f"{type(exc).__name__}: {exc}"


def check_outputs(jobs: list[Job], extras: list[CaseExtra], overwrite: bool) -> None:
    """Refuse, before the model loads, a label map or extra that is one of the inputs, an
    output folder that cannot be written, and an existing file bratseg did not write (kept
    unless ``overwrite``): :mod:`bratseg.inference.outputs`."""
    from bratseg.inference import outputs

    inputs = [f for job in jobs for f in outputs.input_files(job.source)]
    outputs.check_targets([job.target for job in jobs], inputs, overwrite=overwrite)
    paths = [path for job in jobs for path in extra_paths(extras, job.target)]
    outputs.check_not_an_input(paths, inputs)
    outputs.check_writable(paths)


def predict_cases(
    jobs: list[Job],
    settings: PredictSettings,
    *,
    extras: list[CaseExtra] | None = None,
    folder: Path | None = None,
    progress: Progress | None = None,
) -> RunSummary | None:
    """Predict ``jobs`` (this process's share of them under torchrun) and write their label
    maps and ``extras``.

    ``folder`` is folder mode's output folder, where ``volumes.csv`` is rebuilt at the end; a
    failed case is then reported in the summary. Without it (one case) the case's error is
    raised. Returns every process's summary on rank 0, None on the other ranks. Raises
    :class:`BratsegError` for a device that does not exist, before any process group.
    """
    from bratseg.inference import outputs
    from bratseg.inference.sharding import join_world, shard
    from bratseg.model.precision import parse_device

    t_start = time.perf_counter()
    progress = progress or Progress()
    parse_device(settings.device)  # a device that does not exist fails here, before any process group
    world = join_world(settings.device)
    try:
        progress.joined(world)
        share = shard(jobs, world.rank, world.world_size)
        summary = _predict_share(share, settings, extras or [], folder, world, progress)
        summary.seconds = time.perf_counter() - t_start
        world.barrier()  # every label map is written before the table is built from them
        summaries = world.gather(summary)
        if not world.is_main:
            return None
        if folder is not None:
            records = [r for job in jobs if (r := outputs.read_record(job.target)) is not None]
            outputs.remove_stale_temporaries(folder / outputs.TABLE_NAME)
            outputs.write_volumes_table(folder / outputs.TABLE_NAME, records)
        return RunSummary(len(jobs), summaries)
    finally:
        world.close()


def expected_settings(settings: PredictSettings, model_dir: Path, device: str) -> dict:
    """The settings a label map of this run records (``tta``, ``precision``), known before
    the model loads: a rerun skips the label maps that hold them."""
    from bratseg.model.precision import resolve_precision

    tta = settings.tta if settings.tta is not None else _folder_tta(model_dir)
    return {"tta": tta, "precision": resolve_precision(settings.precision, device)}


def _folder_tta(model_dir: Path) -> bool:
    """The flip TTA a model folder's ``bratseg.json`` asks for (the default when unreadable:
    loading the model then says what is wrong)."""
    import json

    from bratseg.model.metadata import DEFAULT_SETTINGS, InferenceSettings

    try:
        return InferenceSettings.from_metadata(json.loads((model_dir / "bratseg.json").read_text())).flip_tta
    except (OSError, ValueError, AttributeError):
        return DEFAULT_SETTINGS.flip_tta


def _pending(
    jobs: list[Job], version: str, settings: dict, extras: list[CaseExtra], overwrite: bool, progress: Progress
) -> tuple[list[Job], int]:
    """The jobs still to predict, and how many were skipped (already predicted, every extra
    asked for written)."""
    from bratseg.inference import outputs

    pending, skipped = [], 0
    for job in jobs:
        status = "missing" if overwrite else "stale"
        if not overwrite:
            status = outputs.existing_status(job.target, outputs.input_shape(job.source), version, settings)
            if status == "done" and not all(path.exists() for path in extra_paths(extras, job.target)):
                status = "stale"  # predicted before, but without an extra asked for now
        if status == "done":
            skipped += 1
            progress.skipped(job)
            continue
        outputs.remove_stale_temporaries(job.target)
        pending.append(job)
    return pending, skipped


def _predict_share(
    jobs: list[Job],
    settings: PredictSettings,
    extras: list[CaseExtra],
    folder: Path | None,
    world: World,
    progress: Progress,
) -> RankSummary:
    """Predict this process's cases; skip those already done."""
    from bratseg.inference.predictor import SHIPPED_MODEL, weights_version
    from bratseg.inference.segment import segment_jobs
    from bratseg.model.hub import resolve_model

    summary = RankSummary(world.rank)
    device = world.device_for(settings.device)
    model_dir = resolve_model(settings.model) or SHIPPED_MODEL  # a Hub id: its folder in the Hugging Face cache
    recorded = expected_settings(settings, Path(model_dir), device)
    version = weights_version(model_dir) if Path(model_dir, "model.safetensors").is_file() else "unknown"
    pending, summary.skipped = _pending(jobs, version, recorded, extras, settings.overwrite, progress)
    if not pending:
        return summary
    progress.starting(len(pending))

    loaded: list[Segmenter] = []
    confidences: dict[str, Confidence] = {}

    def load() -> Segmenter:
        loaded.append(_load(settings, Path(model_dir), device))
        progress.loaded(loaded[0])
        return loaded[0]

    def write(job: Job, prediction: Prediction) -> None:
        confidences[job.name] = _write_case(job, prediction, loaded[0], extras, world.rank)

    def on_outcome(outcome: Outcome) -> None:
        if outcome.ok:
            summary.written += 1
        else:
            summary.failed.append((outcome.job.name, failure_reason(outcome.error)))
        progress.finished(outcome, confidences.get(outcome.job.name))

    def log_for(job: Job) -> Callable[[str], None]:
        return lambda line: progress.step(job, line)

    outcomes = segment_jobs(
        pending,
        settings.preprocess,
        load,
        write,
        on_outcome,
        keep_intermediate=settings.keep_intermediate,
        log_for=log_for,
    )
    progress.stopped()
    if folder is None and not outcomes[0].ok:
        # Alone, a typed error is the CLI's one-line message and anything else is a bug
        # whose traceback we want.
        raise outcomes[0].error
    return summary


def _load(settings: PredictSettings, model_dir: Path, device: str) -> Segmenter:
    """The segmenter: the model folder's own TTA setting unless ``settings.tta`` is given."""
    from bratseg.inference.predictor import DEFAULT_BATCH_SIZE, Segmenter
    from bratseg.model.hub import is_hub_id, split_revision

    options = {} if settings.tta is None else {"flip_tta": settings.tta}
    segmenter = Segmenter.from_pretrained(
        model_dir,
        precision=settings.precision,
        threads=settings.threads,
        batch_size=settings.batch_size or DEFAULT_BATCH_SIZE,
        device=device,
        **options,
    )
    if settings.model and is_hub_id(settings.model):  # name it by its id, not by its snapshot folder
        segmenter.source = f"{split_revision(settings.model)[0]}@{model_dir.name}"
    return segmenter


def _write_case(
    job: Job, prediction: Prediction, segmenter: Segmenter, extras: list[CaseExtra], rank: int
) -> Confidence:
    """Write ``job``'s label map with its record (the segmenter's effective settings), then its
    extras; returns the case's confidence."""
    from bratseg.data.io import save_nifti
    from bratseg.inference import outputs
    from bratseg.inference.confidence import assess

    confidence = assess(prediction.model_space)
    record = outputs.CaseRecord(
        job.name,
        prediction.region_volumes(),
        round(prediction.seconds, 3),
        segmenter.model_name,
        segmenter.model_version,
        {"tta": segmenter.flip_tta, "precision": segmenter.precision},
        list(prediction.warnings),
        list(prediction.labels.shape),
        rank,
        confidence.score,
        confidence.low,
    )
    try:
        save_nifti(outputs.attach_record(prediction.to_nifti(), record), job.target)
    except OSError as exc:
        raise BratsegError(f"{job.target}: cannot write the label map ({exc.strerror or exc})") from None
    for extra in extras:
        extra.write(prediction, extra.path(job.target))
    return confidence
