"""Which path a case takes, and the inputs of the native path, for the front ends (CLI, Flask,
Gradio): ``auto`` sends input already in BraTS space (one 1 mm grid, 240 x 240 x 155 or a crop of it,
skull-stripped) to today's fast path untouched and anything else to the native pipeline;
``native`` always runs the native pipeline; ``none`` always takes the fast path, whose guards
refuse raw input with a one-line reason instead of predicting nonsense.

Example:
    >>> import tempfile, pathlib
    >>> from bratseg.synthetic import write_synthetic_case
    >>> case = write_synthetic_case(pathlib.Path(tempfile.mkdtemp()) / "S", shape=(240, 240, 155))
    >>> choose_path(case, "auto")[0]
    'none'
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from bratseg.data.layout import Case, case_from_folder
from bratseg.errors import InvalidCaseError, UntrustworthyInputError
from bratseg.native.reader import ScanSource

Preprocess = Literal["auto", "native", "none"]
PREPROCESS_CHOICES = ("auto", "native", "none")


@dataclass
class NativeInputs:
    """What :func:`bratseg.native.segment_native` takes for one case, and how it was found
    (one line per sequence: which file or DICOM series, and why)."""

    case_id: str
    images: dict[str, ScanSource]
    notes: list[str] = field(default_factory=list)
    names: dict[str, str] = field(default_factory=dict)


def is_dicom_file(path: Path) -> bool:
    """A file with the DICOM preamble (``DICM`` at byte 128)."""
    try:
        with open(path, "rb") as fh:
            fh.seek(128)
            return fh.read(4) == b"DICM"
    except OSError:
        return False


def holds_dicom(folder: str | Path) -> bool:
    """A folder with a DICOM file in it or in a subfolder, or a zip (taken as a DICOM study)."""
    folder = Path(folder)
    if folder.is_file():
        return folder.suffix.lower() == ".zip"
    return any(p.is_file() and is_dicom_file(p) for p in folder.rglob("*"))


def dicom_inputs(source: str | Path, overrides: dict[str, str | int] | None = None) -> NativeInputs:
    """The sequences of a DICOM study folder or zip, guessed from each series' tags (or named
    in ``overrides``: sequence -> series number, UID or description), read into memory."""
    from bratseg.native.dicom import read_study

    chosen, found = read_study(source, overrides)
    source = Path(source)
    notes = [f"{m}: {s.label} ({'given' if overrides and m in overrides else s.basis})" for m, s in chosen.items()]
    unused = [s.label for s in found if s not in chosen.values()]
    if unused:
        notes.append(f"not used: {'; '.join(unused)}")
    for required in ("flair", "t1ce"):
        if required not in chosen:
            listed = "; ".join(f"{s.label} -> {s.sequence or '?'}" for s in found)
            raise InvalidCaseError(
                source, f"no series recognised as {required.upper()} ({listed}); name it with --{required}"
            )
    name = source.stem if source.is_file() else source.name
    names = {m: f"{source.name} {s.label}" for m, s in chosen.items()}
    return NativeInputs(name, {m: s.image for m, s in chosen.items()}, notes, names)


def route(source: Case | str | Path, preprocess: Preprocess = "auto") -> tuple[Literal["none", "native"], str]:
    """The path a case takes, from file headers alone (no voxel is read), and why: DICOM,
    sequences on different grids, or voxels other than 1 mm go native; the rest (BraTS's
    240 x 240 x 155 grid, or a crop of it such as a co-registered, skull-stripped 1 mm case on
    a smaller grid) takes the fast path, whose guards still check the voxels (skull,
    background) and, under ``auto``, send a case they refuse on to the native path
    (:func:`segment_any`)."""
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


def study_folders(root: str | Path) -> list[Path]:
    """The DICOM studies below ``root``: ``root`` itself when all its DICOM files belong to one
    study (StudyInstanceUID), else each subfolder that holds DICOM (a batch of studies)."""
    import pydicom

    root = Path(root)
    studies = set()
    for path in (p for p in root.rglob("*") if p.is_file() and is_dicom_file(p)):
        studies.add(
            str(
                pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["StudyInstanceUID"]).get(
                    "StudyInstanceUID"
                )
            )
        )
        if len(studies) > 1:
            return sorted(p for p in root.iterdir() if p.is_dir() and holds_dicom(p))
    return [root] if studies else []


def choose_path(case: Case, preprocess: Preprocess) -> tuple[Literal["none", "native"], list[str]]:
    """``none`` (the fast path) or ``native`` for a NIfTI case, and why: the guards' reasons
    why the case is not BraTS-space-like, or the grids that differ."""
    if preprocess != "auto":
        return preprocess, []
    from bratseg.data.io import load_case
    from bratseg.inference import guards

    try:
        volumes = load_case(case, with_label=False)
    except InvalidCaseError as exc:
        if "differs from" in str(exc) or "not co-registered" in str(exc):
            return "native", [str(exc)]  # each sequence on its own grid: native scans
        raise
    problems = guards.brats_space_problems(volumes)
    return ("native", problems) if problems else ("none", [])


def segment_any(
    segmenter,
    source: Case | str | Path,
    preprocess: Preprocess = "auto",
    *,
    keep_intermediate: str | Path | None = None,
    log: Callable[[str], None] | None = None,
):
    """Segment a NIfTI case (folder or :class:`Case`) or a DICOM study by the path
    :func:`choose_path` picks. Returns a :class:`~bratseg.inference.predictor.Prediction`
    (fast path) or a :class:`~bratseg.native.pipeline.NativePrediction`; both have ``save``,
    ``region_volumes``, ``seconds`` and ``warnings``."""
    from bratseg.native.pipeline import segment_native

    if not isinstance(source, Case) and holds_dicom(source):
        if preprocess == "none":
            raise InvalidCaseError(source, "DICOM scans need the native preprocessing (--preprocess auto or native)")
        inputs = dicom_inputs(source)
        for note in inputs.notes:
            if log is not None:
                log(note)
        return segment_native(
            segmenter,
            inputs.images,
            keep_intermediate=keep_intermediate,
            log=log,
            case_id=inputs.case_id,
            names=inputs.names,
        )
    case = source if isinstance(source, Case) else case_from_folder(source)
    path, reason = route(case, "auto" if preprocess == "none" else preprocess)
    if preprocess == "none" and path == "native":
        raise InvalidCaseError(
            case.folder or case.case_id,
            f"not in BraTS space ({reason}); run with --preprocess native (or auto) to register, skull-strip "
            "and resample it first",
        )
    if path == "none":
        try:
            return segmenter.segment(case)
        except UntrustworthyInputError as exc:
            if preprocess != "auto":
                raise
            reason = str(exc)  # a BraTS-sized grid with skull or background left: native after all
    if log is not None:
        log(f"native preprocessing: {reason}")
    return segment_native(
        segmenter, dict(case.images), keep_intermediate=keep_intermediate, log=log, case_id=case.case_id
    )
