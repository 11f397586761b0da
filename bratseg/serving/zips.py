"""A zipped case folder or DICOM study, extracted safely: the one case it holds (NIfTI files,
or the DICOM series of one study), or an :class:`~bratseg.serving.uploads.UploadError` saying
why not (paths escaping the folder, links, zip bombs, lying directories, no case or several).
"""

from __future__ import annotations

import re
import stat
import tempfile
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from bratseg.data.layout import Case, find_cases
from bratseg.serving.uploads import (
    DEFAULT_MAX_CASE_BYTES,
    DEFAULT_MAX_VOXELS,
    UploadError,
    check_case_memory,
    check_size,
    mb,
    read_nifti_header,
    safe_case_id,
)

# A DICOM series is one file per slice: four sequences of 150-200 slices are near a thousand.
DEFAULT_MAX_MEMBERS = 2048
# Deflate cannot beat ~1030:1; real (already gzipped) NIfTI files in a zip are near 1:1 and
# raw .nii files of skull-stripped MRI about 5-20:1. Only members above a megabyte are
# judged, because tiny files of zeros legitimately compress very well.
DEFAULT_MAX_RATIO = 200
_RATIO_MIN_BYTES = 1 << 20
_CHUNK = 1 << 20
# DICOM pixels are stored as 16-bit integers and held as float32 once read.
_DICOM_DECODED_PER_BYTE = 2


@dataclass(frozen=True)
class DicomStudy:
    """An extracted DICOM study: ``folder`` (named after the zip) holds its series, in
    subfolders or mixed, for :func:`~bratseg.inference.segment.segment`."""

    folder: Path

    @property
    def case_id(self) -> str:
        return self.folder.name


def case_from_zip(
    zip_path: Path,
    workdir: Path,
    max_uncompressed_bytes: int,
    max_members: int = DEFAULT_MAX_MEMBERS,
    max_ratio: float = DEFAULT_MAX_RATIO,
    max_voxels: int = DEFAULT_MAX_VOXELS,
    max_case_bytes: int = DEFAULT_MAX_CASE_BYTES,
) -> Case | DicomStudy:
    """Extract a zipped case folder safely into a new folder under ``workdir`` and return the
    one case it holds (any naming :func:`~bratseg.data.layout.find_cases` knows, at any depth),
    or, when it holds no NIfTI case but DICOM files, the :class:`DicomStudy` they make up.

    Refused with :class:`UploadError`: not a zip (400), encrypted members (400), members
    whose path escapes the folder (absolute, ``..``, drive letters) or that are symlinks or
    devices (400), more than ``max_members`` members (400), a declared or actual total size
    above ``max_uncompressed_bytes`` or a member compressed more than ``max_ratio`` : 1
    (413, a zip bomb), a member whose real size exceeds the size its header declares (400),
    no case or several cases (400), images over ``max_voxels`` or together over
    ``max_case_bytes`` once loaded (413). Sizes are checked from the directory before extracting
    *and* counted while extracting, because the directory can lie.
    """
    zip_path, workdir = Path(zip_path), Path(workdir)
    try:
        archive = zipfile.ZipFile(zip_path)
    except (zipfile.BadZipFile, OSError, EOFError) as exc:
        raise UploadError(f"{zip_path.name}: not a readable zip archive ({exc})", 400) from None
    with archive:
        members = _vet_members(archive, max_uncompressed_bytes, max_members, max_ratio)
        # Named after the zip: a DICOM study's case id is its folder's name.
        dest = Path(tempfile.mkdtemp(prefix="zip-", dir=workdir)).resolve() / safe_case_id(zip_path.stem)
        dest.mkdir()
        extracted = _extract(archive, members, dest, max_uncompressed_bytes)
    cases = find_cases(dest)  # a case folder without T1ce raises MissingModalityError
    if not cases:
        from bratseg.native.inputs import holds_dicom

        if holds_dicom(dest):
            if extracted * _DICOM_DECODED_PER_BYTE > max_case_bytes:
                raise UploadError(
                    f"{zip_path.name}: the DICOM images would take about {mb(extracted * _DICOM_DECODED_PER_BYTE)} "
                    f"once loaded, more than the {mb(max_case_bytes)} allowed per case",
                    413,
                )
            return DicomStudy(dest)
        raise UploadError(
            f"{zip_path.name}: no case found; zip a folder holding FLAIR and T1ce NIfTI files named like "
            "<case>_flair.nii.gz and <case>_t1ce.nii.gz (or BraTS 2023's -t2f / -t1c), or the DICOM series "
            "of one study",
            400,
        )
    if len(cases) > 1:
        names = ", ".join(c.case_id for c in cases[:5])
        raise UploadError(f"{zip_path.name}: holds {len(cases)} cases ({names}); upload one case per request", 400)
    case = cases[0]
    headers = {path: read_nifti_header(path) for path in case.images.values()}
    for path, header in headers.items():
        check_size(path, header, max_voxels)
    check_case_memory(headers, max_case_bytes)
    return case


def _vet_members(
    archive: zipfile.ZipFile, max_bytes: int, max_members: int, max_ratio: float
) -> list[tuple[zipfile.ZipInfo, PurePosixPath]]:
    infos = archive.infolist()
    name = Path(archive.filename or "upload.zip").name
    if len(infos) > max_members:
        raise UploadError(f"{name}: {len(infos)} members, more than the {max_members} allowed", 400)
    declared = 0
    members = []
    for info in infos:
        rel = _safe_member_path(info, name)
        if rel is None:
            continue
        if info.flag_bits & 0x1:
            raise UploadError(f"{name}: member {info.filename!r} is encrypted", 400)
        declared += info.file_size
        if declared > max_bytes:
            raise UploadError(
                f"{name}: uncompressed size exceeds the limit of {mb(max_bytes)} (zip bomb or case too large)", 413
            )
        if info.file_size >= _RATIO_MIN_BYTES and info.file_size > max_ratio * max(info.compress_size, 1):
            raise UploadError(
                f"{name}: member {info.filename!r} is compressed {info.file_size / max(info.compress_size, 1):.0f}:1, "
                "suspicious for a zip bomb",
                413,
            )
        members.append((info, rel))
    return members


def _safe_member_path(info: zipfile.ZipInfo, name: str) -> PurePosixPath | None:
    """The member's relative path, None for members to skip, or an :class:`UploadError`."""
    raw = info.filename.replace("\\", "/")
    # Unix file type in the high bits of external_attr; 0 when the tool recorded none.
    file_type = stat.S_IFMT(info.external_attr >> 16)
    if file_type == stat.S_IFLNK:
        raise UploadError(f"{name}: member {info.filename!r} is a symbolic link; links are not accepted", 400)
    if file_type not in (0, stat.S_IFREG, stat.S_IFDIR):
        raise UploadError(f"{name}: member {info.filename!r} is not a regular file", 400)
    path = PurePosixPath(raw)
    if raw.startswith("/") or re.match(r"^[A-Za-z]:", raw) or ".." in path.parts or "\x00" in raw:
        raise UploadError(f"{name}: member {info.filename!r} points outside the zip's folder; refused", 400)
    parts = [p for p in path.parts if p not in ("", ".")]
    if not parts:
        return None
    # macOS Finder adds resource forks (__MACOSX/._x_flair.nii.gz) that look like scans by name.
    if parts[0] == "__MACOSX" or parts[-1].startswith("._"):
        return None
    return PurePosixPath(*parts)


def _extract(
    archive: zipfile.ZipFile, members: list[tuple[zipfile.ZipInfo, PurePosixPath]], dest: Path, max_bytes: int
) -> int:
    """Extract the vetted ``members`` under ``dest``; returns the bytes written."""
    name = Path(archive.filename or "upload.zip").name
    total = 0
    for info, rel in members:
        target = dest.joinpath(*rel.parts)
        # Belt and braces: the vetted path cannot escape, but never trust one check alone.
        if not target.resolve().is_relative_to(dest):
            raise UploadError(f"{name}: member {info.filename!r} points outside the zip's folder; refused", 400)
        if info.is_dir():
            target.mkdir(parents=True, exist_ok=True)
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        written = 0
        try:
            with archive.open(info) as src, open(target, "xb") as out:
                while chunk := src.read(_CHUNK):
                    written += len(chunk)
                    total += len(chunk)
                    if total > max_bytes:
                        raise UploadError(
                            f"{name}: uncompressed size exceeds the limit of {mb(max_bytes)} "
                            "(zip bomb or case too large)",
                            413,
                        )
                    if written > info.file_size:
                        raise UploadError(f"{name}: member {info.filename!r} is larger than its header says", 400)
                    out.write(chunk)
        except FileExistsError:
            raise UploadError(f"{name}: member {info.filename!r} appears twice", 400) from None
        except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError) as exc:
            raise UploadError(f"{name}: member {info.filename!r} cannot be extracted ({exc})", 400) from None
    return total
