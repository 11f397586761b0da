"""What ``bratseg predict`` will do, decided before the model loads: which cases (a case
folder, explicit files, a DICOM study, or a folder of any of these) and where each label map
goes. Anything that can be known wrong here fails here, in well under a second.

Example:
    >>> import tempfile, pathlib
    >>> from bratseg.synthetic import write_synthetic_dataset
    >>> root = pathlib.Path(tempfile.mkdtemp())
    >>> _ = write_synthetic_dataset(root / "in", 2, shape=(64, 64, 24))
    >>> jobs, folder_mode = plan_jobs(root / "in", root / "out")
    >>> [job.target.relative_to(root).as_posix() for job in jobs], folder_mode  # doctest: +ELLIPSIS
    (['out/....nii.gz', 'out/....nii.gz'], True)
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from bratseg.data.layout import (
    MODALITIES,
    Case,
    case_from_folder,
    decathlon_cases,
    is_decathlon_folder,
    modality_of,
    nifti_stem,
)
from bratseg.errors import BratsegError, InvalidCaseError
from bratseg.inference.batch import Job


def is_nifti_name(path: Path) -> bool:
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


def _explicit_case(source: Path | None, output: Path, files: Mapping[str, Path | None]) -> Case | None:
    given = {m: files[m] for m in MODALITIES if files.get(m) is not None}
    if not given:
        return None
    if source is not None:
        raise BratsegError("give either CASE or explicit files (--flair/--t1ce/...), not both")
    for m in ("flair", "t1ce"):
        if m not in given:
            raise InvalidCaseError(None, f"--{m} is required with explicit files (FLAIR and T1ce are needed)")
    for m, path in given.items():
        if not path.exists():
            raise InvalidCaseError(path, f"not found (--{m})")
    case_id = nifti_stem(output) if is_nifti_name(output) else None
    return Case.from_files(given["flair"], given["t1ce"], given.get("t1"), given.get("t2"), case_id=case_id)


def plan_jobs(
    source: Path | None, output: Path, files: Mapping[str, Path | None] | None = None
) -> tuple[list[Job], bool]:
    """The cases and where each label map goes, and whether this is folder mode (a folder of
    cases, written to the folder ``output``).

    ``source`` is a case folder, a DICOM study (folder or zip) or a folder of cases; ``files``
    the explicit images by modality (``flair`` and ``t1ce`` required) instead. ``output`` is
    ``OUT.nii.gz`` for one case, a folder for many. Raises :class:`BratsegError` for anything
    that can be known wrong before the model loads."""
    case = _explicit_case(source, output, files or {})
    if case is not None:
        target = output if is_nifti_name(output) else output / f"{case.case_id}.nii.gz"
        return [Job(case.case_id, case, target)], False
    if source is None:
        raise BratsegError("give a case folder, a folder of cases, or --flair and --t1ce files")
    src: Path = source
    if not src.exists():
        raise InvalidCaseError(src, "does not exist")
    from bratseg.native.inputs import holds_dicom, study_folders

    if src.is_file() and src.suffix.lower() != ".zip":
        raise InvalidCaseError(
            src, "is a file; give a case folder, a DICOM study, or the images with --flair and --t1ce"
        )
    studies = study_folders(src) if src.is_dir() and not _is_case_folder(src) else []
    if src.is_file() or studies == [src]:  # one DICOM study (a zip, or a folder of one StudyInstanceUID)
        name = src.stem if src.is_file() else src.name
        target = output if is_nifti_name(output) else output / f"{name}.nii.gz"
        return [Job(name, src, target)], False
    if is_decathlon_folder(src):  # imagesTr/ and labelsTr/: every image is a case
        cases = decathlon_cases(src)
        if is_nifti_name(output) and len(cases) > 1:
            raise BratsegError(f"{output}: {src.name} holds {len(cases)} cases; --output must be a folder")
        if is_nifti_name(output):
            return [Job(cases[0].case_id, cases[0], output)], False
        return [Job(c.case_id, c, output / f"{c.case_id}.nii.gz") for c in cases], True
    if _is_case_folder(src):
        one = case_from_folder(src)  # a bad single case fails now, before the model loads
        target = output if is_nifti_name(output) else output / f"{one.case_id}.nii.gz"
        return [Job(one.case_id, one, target)], False
    folders = sorted({*discover_cases(src), *(s for s in studies if holds_dicom(s))}, key=lambda p: (p.name, str(p)))
    if not folders:
        raise InvalidCaseError(src, "holds no case folders (no NIfTI files named like BraTS modalities, no DICOM)")
    if is_nifti_name(output):
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
