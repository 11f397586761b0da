"""Which path a case takes, and segmenting it by that path: the one routing rule every front end
(the Python API, ``bratseg predict`` and ``report``, Flask, Gradio, the follow-up comparison)
goes through.

``auto`` (:data:`DEFAULT_PREPROCESS`) sends input already in BraTS space (one 1 mm grid,
240 x 240 x 155 or a crop of it, skull-stripped) to the fast path untouched and anything else
(other grids, skull, DICOM) to the native pipeline
(:func:`~bratseg.inference.native_path.segment_native`); a case whose headers look like BraTS
space but whose voxels the fast path's guards refuse (skull, background) goes native too.
``native`` always runs the native pipeline; ``none`` always takes the fast path and refuses raw
input with a one-line reason instead of predicting nonsense. Either way the result is one
:class:`~bratseg.inference.prediction.Prediction`.

Example:
    >>> import tempfile, pathlib
    >>> from bratseg.synthetic import write_synthetic_case
    >>> case = write_synthetic_case(pathlib.Path(tempfile.mkdtemp()) / "S", shape=(240, 240, 155))
    >>> route(case), route(case, "native")
    (('none', 'BraTS grid'), ('native', '--preprocess native'))
    >>> segment(case, "none").labels.shape   # doctest: +SKIP
    (240, 240, 155)
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np

from bratseg.data.layout import Case, case_from_folder
from bratseg.errors import InvalidCaseError, UntrustworthyInputError

# Light at import: the CLI's parsers take the choices from here before anything is read, so
# nibabel, SimpleITK and torch are imported where a case is routed or segmented.
if TYPE_CHECKING:
    from bratseg.data.io import CaseVolumes
    from bratseg.inference.batch import Job, Outcome
    from bratseg.inference.prediction import Prediction
    from bratseg.inference.predictor import Segmenter

Preprocess = Literal["auto", "native", "none"]
PREPROCESS_CHOICES: tuple[Preprocess, ...] = ("auto", "native", "none")
"""What ``--preprocess`` and the web forms' ``preprocess`` field take."""
DEFAULT_PREPROCESS: Preprocess = "auto"
"""The default of ``bratseg predict``, ``bratseg report``, the Python API and the web forms."""


def route(
    source: Case | str | Path, preprocess: Preprocess = DEFAULT_PREPROCESS
) -> tuple[Literal["none", "native"], str]:
    """The path a case takes, from file headers alone (no voxel is read), and why: DICOM,
    sequences on different grids, or voxels other than 1 mm go native; the rest (BraTS's
    240 x 240 x 155 grid, or a crop of it such as a co-registered, skull-stripped 1 mm case on
    a smaller grid) takes the fast path, whose guards still check the voxels (skull,
    background) and, under ``auto``, send a case they refuse on to the native path
    (:func:`segment`)."""
    from bratseg.native.inputs import holds_dicom

    if preprocess != "auto":
        return preprocess, f"--preprocess {preprocess}"
    if not isinstance(source, Case):
        if holds_dicom(source):
            return "native", "DICOM input"
        source = case_from_folder(source)
    grids = set()
    for modality, path in source.images.items():
        if path.is_dir() or path.suffix.lower() == ".zip":
            return "native", f"{modality} is a DICOM series"
        try:
            import nibabel as nib

            img = nib.load(str(path))
        except Exception:  # unreadable: the fast path's reader names the problem
            return "none", "unreadable header"
        zooms = tuple(round(float(z), 2) for z in img.header.get_zooms()[:3])
        grids.add((tuple(img.shape[:3]), zooms, tuple(np.round(img.affine, 2).ravel())))
        if any(abs(z - 1.0) > 0.05 for z in zooms):
            return "native", f"{path.name} is {'x'.join(map(str, img.shape[:3]))} at {'x'.join(map(str, zooms))} mm"
    if len(grids) > 1:
        return "native", "the sequences lie on different grids"
    return "none", "BraTS grid"


def segment(
    source: Case | CaseVolumes | str | Path,
    preprocess: Preprocess = DEFAULT_PREPROCESS,
    *,
    model: Segmenter | str | Path | None = None,
    keep_intermediate: str | Path | None = None,
    log: Callable[[str], None] | None = None,
    early_refusal: bool = True,
) -> Prediction:
    """Segment a NIfTI case (folder or :class:`~bratseg.data.layout.Case`) or a DICOM study
    (folder or zip) by the path :func:`route` picks.

    ``model`` is a loaded :class:`~bratseg.inference.predictor.Segmenter`, a model folder or
    Hub id, or None for the shipped model (loaded once routing has found nothing to refuse).
    ``keep_intermediate`` names a folder for the native path's intermediate files; ``log``
    receives what each native step did. Volumes already in memory
    (:class:`~bratseg.data.io.CaseVolumes`) are taken as BraTS space: the fast path, whose
    guards check them.

    Under ``none``, input whose headers are not BraTS space (and DICOM) is refused with the
    reason before the model is needed; ``early_refusal=False`` leaves the refusal to the fast
    path's guards, which read the voxels and name the file (what the web forms answer).
    """
    if preprocess not in PREPROCESS_CHOICES:
        raise ValueError(f"preprocess must be one of {', '.join(PREPROCESS_CHOICES)}, not {preprocess!r}")
    from bratseg.data.io import CaseVolumes
    from bratseg.inference.native_path import segment_native
    from bratseg.native.inputs import holds_dicom

    if isinstance(source, CaseVolumes) or (preprocess == "none" and not early_refusal):
        return _loaded(model).segment(source)

    if not isinstance(source, Case) and holds_dicom(source):
        if preprocess == "none":
            raise InvalidCaseError(source, "DICOM scans need the native preprocessing (--preprocess auto or native)")
        return _segment_study(Path(source), model, keep_intermediate, log)
    case = source if isinstance(source, Case) else case_from_folder(source)
    path, reason = route(case, "auto" if preprocess == "none" else preprocess)
    if preprocess == "none" and path == "native":
        raise InvalidCaseError(
            case.folder or case.case_id,
            f"not in BraTS space ({reason}); run with --preprocess native (or auto) to register, skull-strip "
            "and resample it first",
        )
    segmenter = _loaded(model)
    if path == "none":
        try:
            return segmenter.segment(case)
        except UntrustworthyInputError as exc:
            if preprocess != "auto":
                raise
            reason = str(exc)  # a BraTS-sized grid with skull or background left: native after all
    _say(log, f"native preprocessing: {reason}")
    return segment_native(
        segmenter, dict(case.images), keep_intermediate=keep_intermediate, log=log, case_id=case.case_id
    )


def _segment_study(
    study: Path,
    model: Segmenter | str | Path | None,
    keep_intermediate: str | Path | None,
    log: Callable[[str], None] | None,
) -> Prediction:
    """A DICOM study (folder or zip) on the native path, its series recognised from their tags
    (one ``log`` line per sequence)."""
    from bratseg.inference.native_path import segment_native
    from bratseg.native.inputs import dicom_inputs

    inputs = dicom_inputs(study)
    for note in inputs.notes:
        _say(log, note)
    return segment_native(
        _loaded(model),
        inputs.images,
        keep_intermediate=keep_intermediate,
        log=log,
        case_id=inputs.case_id,
        names=inputs.names,
    )


def segment_jobs(
    jobs: list[Job],
    preprocess: Preprocess,
    load: Callable[[], Segmenter],
    write: Callable[[Job, Prediction], None],
    on_outcome: Callable[[Outcome], None],
    *,
    keep_intermediate: Path | None = None,
    log_for: Callable[[Job], Callable[[str], None] | None] = lambda job: None,
) -> list[Outcome]:
    """Segment many cases as :func:`segment` segments each: every job is routed from its
    headers, those on the fast path are predicted together with reading, network and writing
    overlapped (:func:`~bratseg.inference.batch.run_batch`), then the native ones one at a
    time, with those the fast path's guards refused under ``auto``.

    ``load`` is called once, for the first case that needs the model; ``write`` and
    ``on_outcome`` are called per case as :func:`~bratseg.inference.batch.run_batch` calls
    them, a failure reported in its outcome; ``keep_intermediate`` is a folder for each native
    case's intermediate files (``<folder>/<job name>/``), ``log_for`` gives each job's log.
    Returns the outcomes, fast-path ones first, without their predictions (written already).
    """
    import time

    from bratseg.errors import BratsegError
    from bratseg.inference.batch import Outcome, run_batch

    loaded: list[Segmenter] = []

    def segmenter() -> Segmenter:
        if not loaded:
            loaded.append(load())
        return loaded[0]

    # Under none, raw input is routed native too, where segment() refuses it with the reason.
    routing = "auto" if preprocess == "none" else preprocess

    def goes_native(job: Job) -> bool:
        try:
            return route(job.source, routing)[0] == "native"
        except BratsegError:  # a case that cannot be read: the fast path reports it, per case
            return False

    native = [job for job in jobs if goes_native(job)]
    refused: dict[Path, str] = {}  # target -> why the guards sent the case on to the native path

    def on_fast_outcome(outcome: Outcome) -> None:
        # Under auto, a BraTS-sized case the guards refuse (skull, background) goes native instead.
        if preprocess == "auto" and isinstance(outcome.error, UntrustworthyInputError):
            native.append(outcome.job)
            refused[outcome.job.target] = str(outcome.error)
        else:
            on_outcome(outcome)

    fast = [job for job in jobs if job not in native]
    outcomes = [o for o in run_batch(fast, segmenter, write, on_fast_outcome) if o.job not in native]
    for job in native:
        t0 = time.perf_counter()
        keep = keep_intermediate / job.name if keep_intermediate else None
        log = log_for(job)
        try:
            model = segmenter()
            if job.target in refused:
                _say(log, f"native preprocessing: {refused[job.target]}")
            mode = "native" if job.target in refused else preprocess
            prediction = segment(job.source, mode, model=model, keep_intermediate=keep, log=log)
            write(job, prediction)
            outcome = Outcome(job, prediction, None, time.perf_counter() - t0)
        except Exception as exc:  # reported per case, as the fast path's failures are
            outcome = Outcome(job, None, exc, time.perf_counter() - t0)
        on_outcome(outcome)
        outcome.prediction = None  # written: memory does not grow with the number of cases
        outcomes.append(outcome)
    return outcomes


def _loaded(model: Segmenter | str | Path | None) -> Segmenter:
    """``model`` itself when it is loaded (anything with ``segment``), else loaded from its
    folder or Hub id (None: the shipped model)."""
    if model is None or isinstance(model, (str, Path)):
        from bratseg.inference.predictor import from_pretrained

        return from_pretrained(model)
    return model


def _say(log: Callable[[str], None] | None, line: str) -> None:
    if log is not None:
        log(line)
