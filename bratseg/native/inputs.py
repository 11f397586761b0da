"""Finding the inputs of the native path: DICOM files, folders that hold them, the studies
below a folder, and a DICOM study's sequences recognised from each series' tags.

Example:
    >>> import tempfile, pathlib
    >>> from bratseg.synthetic import write_synthetic_case
    >>> case = write_synthetic_case(pathlib.Path(tempfile.mkdtemp()) / "S", shape=(64, 64, 24))
    >>> holds_dicom(case.folder), study_folders(case.folder)
    (False, [])
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from bratseg.errors import InvalidCaseError
from bratseg.native.reader import ScanSource


@dataclass
class NativeInputs:
    """What the native path takes for one case (``images`` by modality, and how messages name
    them), and how it was found (one line per sequence: which file or DICOM series, and why)."""

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
