"""Turn what a web user sends (uploaded files, a zipped case folder, a server-side path)
into a :class:`~bratseg.data.layout.Case`, refusing anything unsafe.

Shared by the Flask app and the Gradio demo. Every refusal is an :class:`UploadError` whose
``status`` is the HTTP status a server should answer (400 bad input, 403 forbidden path,
413 too large, 415 not NIfTI) and whose message a user can act on.

Example:
    >>> import tempfile, pathlib
    >>> from bratseg.synthetic import write_synthetic_case
    >>> case = write_synthetic_case(pathlib.Path(tempfile.mkdtemp()) / "SYNTHETIC_U", shape=(32, 32, 16))
    >>> uploaded = case_from_uploads({"flair": case.images["flair"], "t1ce": case.images["t1ce"]})
    >>> uploaded.case_id, sorted(uploaded.images)
    ('SYNTHETIC_U', ['flair', 't1ce'])
"""

from __future__ import annotations

import gzip
import os
import re
import shutil
import stat
import tempfile
import zipfile
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np

from bratseg.data.layout import MODALITIES, REQUIRED_MODALITIES, Case, find_cases, nifti_stem
from bratseg.errors import BratsegError

# A BraTS case is 240 x 240 x 155 = 8.9 M voxels; a header declaring far more is either not
# an MRI volume or a decompression bomb, and loading it would exhaust the server's memory.
DEFAULT_MAX_VOXELS = 64_000_000
# Memory follows what the images decode to, not the upload's size: a 744 kB gzip can hold a
# 400 x 400 x 399 float64 volume (510 MB). A prediction's peak memory is a few times the
# case's decoded size (BENCHMARKS.md), so a case may decode to at most this much; a BraTS
# case (four 240 x 240 x 155 images, held as float32) is 143 MB.
DEFAULT_MAX_CASE_BYTES = 500_000_000
DEFAULT_MAX_MEMBERS = 64
# Deflate cannot beat ~1030:1; real (already gzipped) NIfTI files in a zip are near 1:1 and
# raw .nii files of skull-stripped MRI about 5-20:1. Only members above a megabyte are
# judged, because tiny files of zeros legitimately compress very well.
DEFAULT_MAX_RATIO = 200
_RATIO_MIN_BYTES = 1 << 20
_CHUNK = 1 << 20

_GZIP_MAGIC = b"\x1f\x8b"
_NIFTI1_MAGICS = (b"n+1\x00", b"ni1\x00")
_NIFTI2_MAGIC = b"n+2\x00\r\n\x1a\n"


class UploadError(BratsegError):
    """An upload or path a server must refuse; ``status`` is the HTTP status to answer."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


# --------------------------------------------------------------------------- single files


@dataclass(frozen=True)
class NiftiHeader:
    """What a NIfTI file's header says, read without loading the image."""

    gzipped: bool
    dims: tuple[int, ...]
    bytes_per_voxel: int
    """Bytes each voxel takes once loaded: the stored type's size, at least 4 (every image
    is held as float32), 8 for scaled 32- or 64-bit data (nibabel scales in float64)."""

    @property
    def voxels(self) -> int:
        return int(np.prod([max(d, 1) for d in self.dims], dtype=np.float64))

    @property
    def decoded_bytes(self) -> int:
        """Memory the image takes once loaded."""
        return self.voxels * self.bytes_per_voxel


def sniff_nifti(path: Path) -> tuple[bool, tuple[int, ...]]:
    """``(gzipped, dims)`` of a NIfTI-1/2 file, judged by its bytes, not its name.

    Raises :class:`UploadError` (415) when the file is neither NIfTI nor gzipped NIfTI, and
    (400) when a gzipped file is cut off before the end of its header.
    """
    header = read_nifti_header(path)
    return header.gzipped, header.dims


def read_nifti_header(path: Path) -> NiftiHeader:
    """The :class:`NiftiHeader` of a NIfTI-1/2 file (plain or gzipped), from its first bytes;
    raises :class:`UploadError` like :func:`sniff_nifti`."""
    path = Path(path)
    with open(path, "rb") as f:
        start = f.read(2)
    gzipped = start == _GZIP_MAGIC
    try:
        if gzipped:
            with gzip.open(path, "rb") as f:
                head = f.read(544)
        else:
            with open(path, "rb") as f:
                head = f.read(544)
    except (OSError, EOFError, zlib.error) as exc:
        raise UploadError(f"{path.name}: damaged or truncated gzip file ({exc})", 400) from None
    parsed = _parse_header(head)
    if parsed is None:
        what = "a gzip file that does not hold a NIfTI image" if gzipped else "not a NIfTI file (.nii or .nii.gz)"
        raise UploadError(f"{path.name}: {what}", 415)
    dims, bytes_per_voxel = parsed
    return NiftiHeader(gzipped, dims, bytes_per_voxel)


def _parse_header(head: bytes) -> tuple[tuple[int, ...], int] | None:
    """(dims, bytes per loaded voxel) from a NIfTI-1 or NIfTI-2 header, or None if ``head``
    is not one. Offsets are those of the NIfTI-1 and NIfTI-2 standards."""
    for endian in ("<", ">"):
        if len(head) >= 348 and head[344:348] in _NIFTI1_MAGICS:
            if int(np.frombuffer(head[0:4], dtype=f"{endian}i4")[0]) != 348:
                continue
            dim = np.frombuffer(head[40:56], dtype=f"{endian}i2").astype(np.int64)
            bitpix = int(np.frombuffer(head[72:74], dtype=f"{endian}i2")[0])
            slope, inter = (float(v) for v in np.frombuffer(head[112:120], dtype=f"{endian}f4"))
        elif len(head) >= 540 and head[4:12] == _NIFTI2_MAGIC:
            if int(np.frombuffer(head[0:4], dtype=f"{endian}i4")[0]) != 540:
                continue
            dim = np.frombuffer(head[16:80], dtype=f"{endian}i8")
            bitpix = int(np.frombuffer(head[14:16], dtype=f"{endian}i2")[0])
            slope, inter = (float(v) for v in np.frombuffer(head[176:192], dtype=f"{endian}f8"))
        else:
            return None
        ndim = int(dim[0])
        if not 1 <= ndim <= 7:
            continue  # wrong byte order gives an absurd dim[0]
        return tuple(int(d) for d in dim[1 : ndim + 1]), _loaded_bytes(bitpix, slope, inter)
    return None


def _loaded_bytes(bitpix: int, slope: float, inter: float) -> int:
    """Bytes per voxel once loaded, from the header's bits per voxel and scaling."""
    stored = max(bitpix, 8) // 8
    # nibabel applies a scaling (slope not 0/1/NaN, or an intercept) in float64 to 32/64-bit data.
    scaled = (np.isfinite(slope) and slope not in (0.0, 1.0)) or (np.isfinite(inter) and inter != 0.0)
    return max(stored, 8 if scaled and stored >= 4 else 4)


def _check_size(path: Path, header: NiftiHeader, max_voxels: int) -> None:
    voxels = header.voxels
    if voxels > max_voxels:
        raise UploadError(
            f"{path.name}: the image declares {'x'.join(map(str, header.dims))} = {voxels:,} voxels, "
            f"more than the {max_voxels:,} this server accepts",
            413,
        )


def check_case_memory(headers: dict[Path, NiftiHeader], max_case_bytes: int) -> None:
    """Refuse (413) a case whose images would take more than ``max_case_bytes`` once loaded,
    before any of them is: the bound on memory per request, whatever the upload's size."""
    total = sum(h.decoded_bytes for h in headers.values())
    if total <= max_case_bytes:
        return
    parts = ", ".join(
        f"{path.name} {'x'.join(map(str, h.dims))} x {h.bytes_per_voxel} B = {_mb(h.decoded_bytes)}"
        for path, h in headers.items()
    )
    raise UploadError(
        f"the case's images take {_mb(total)} once loaded ({parts}), more than the {_mb(max_case_bytes)} "
        "this server accepts per case",
        413,
    )


def case_from_uploads(
    files: dict[str, Path],
    case_id: str | None = None,
    workdir: Path | None = None,
    max_voxels: int = DEFAULT_MAX_VOXELS,
    max_case_bytes: int = DEFAULT_MAX_CASE_BYTES,
) -> Case:
    """A :class:`Case` from already-saved uploads, keyed by modality.

    ``flair`` and ``t1ce`` are required, ``t1`` and ``t2`` optional. Files may carry any
    name: each is checked to be NIfTI by its magic bytes. nibabel picks the reader by the
    file name, so a file whose name does not end in the suffix its content needs is
    hard-linked (or copied) under its name plus the right suffix into ``workdir/<modality>/``
    (``workdir`` should be the request's temp folder; without one, into a new
    ``bratseg-<modality>-*`` folder beside the file).

    Raises :class:`UploadError`: 400 for an unknown or missing required modality or a
    truncated gzip header, 413 for an absurdly large declared image or images that would take
    more than ``max_case_bytes`` once loaded (read from the headers, before loading), 415 for
    a non-NIfTI file.
    """
    unknown = sorted(set(files) - set(MODALITIES))
    if unknown:
        raise UploadError(f"unknown modality {', '.join(unknown)}; expected {', '.join(MODALITIES)}", 400)
    missing = [m for m in REQUIRED_MODALITIES if files.get(m) is None]
    if missing:
        raise UploadError(
            f"no {' or '.join(m.upper() for m in missing)} image uploaded (required: FLAIR and T1ce)", 400
        )
    images: dict[str, Path] = {}
    headers: dict[Path, NiftiHeader] = {}
    for modality in MODALITIES:
        path = files.get(modality)
        if path is None:
            continue
        path = Path(path)
        if not path.is_file():
            raise UploadError(f"{modality}: uploaded file {path.name} not found", 400)
        header = headers[path] = read_nifti_header(path)
        _check_size(path, header, max_voxels)
        images[modality] = _with_nifti_suffix(path, modality, header.gzipped, workdir)
    check_case_memory(headers, max_case_bytes)
    if case_id is None:
        case_id = safe_case_id(nifti_stem(files["flair"]) or Path(files["flair"]).stem)
    return Case.from_files(**images, case_id=case_id)


def _with_nifti_suffix(path: Path, modality: str, gzipped: bool, workdir: Path | None) -> Path:
    """``path`` itself when its name ends in the suffix its content needs, else a link (or
    copy) named ``<name without .nii/.nii.gz><suffix>``, so messages still name the user's
    file. The link goes to ``workdir/<modality>/`` or, without a workdir, to a new folder
    beside ``path``: never over an existing file."""
    suffix = ".nii.gz" if gzipped else ".nii"
    lower = path.name.lower()
    if lower.endswith(suffix) and (gzipped or not lower.endswith(".nii.gz")):
        return path
    if workdir is not None:
        folder = Path(workdir) / modality
        folder.mkdir(parents=True, exist_ok=True)
    else:
        folder = Path(tempfile.mkdtemp(prefix=f"bratseg-{modality}-", dir=path.parent))
    target = folder / f"{nifti_stem(path) or path.name}{suffix}"
    target.unlink(missing_ok=True)
    try:
        os.link(path, target)  # no copy of a 100 MB scan when the file system allows
    except OSError:
        shutil.copyfile(path, target)
    return target


def safe_case_id(name: str) -> str:
    """A case id from a user-given file name that is safe in a download name."""
    name = re.sub(r"[_-](flair|fla|t2f)([_-]bet)?$", "", name, flags=re.IGNORECASE)
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._")
    return name[:80] or "case"


# ------------------------------------------------------------------------------------ zips


def case_from_zip(
    zip_path: Path,
    workdir: Path,
    max_uncompressed_bytes: int,
    max_members: int = DEFAULT_MAX_MEMBERS,
    max_ratio: float = DEFAULT_MAX_RATIO,
    max_voxels: int = DEFAULT_MAX_VOXELS,
    max_case_bytes: int = DEFAULT_MAX_CASE_BYTES,
) -> Case:
    """Extract a zipped case folder safely into a new folder under ``workdir`` and return the
    one case it holds (any naming :func:`~bratseg.data.layout.find_cases` knows, at any depth).

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
        dest = Path(tempfile.mkdtemp(prefix="zip-", dir=workdir)).resolve()
        _extract(archive, members, dest, max_uncompressed_bytes)
    cases = find_cases(dest)  # a case folder without T1ce raises MissingModalityError
    if not cases:
        raise UploadError(
            f"{zip_path.name}: no case found; zip a folder holding FLAIR and T1ce NIfTI files named like "
            "<case>_flair.nii.gz and <case>_t1ce.nii.gz (or BraTS 2023's -t2f / -t1c)",
            400,
        )
    if len(cases) > 1:
        names = ", ".join(c.case_id for c in cases[:5])
        raise UploadError(f"{zip_path.name}: holds {len(cases)} cases ({names}); upload one case per request", 400)
    case = cases[0]
    headers = {path: read_nifti_header(path) for path in case.images.values()}
    for path, header in headers.items():
        _check_size(path, header, max_voxels)
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
                f"{name}: uncompressed size exceeds the limit of {_mb(max_bytes)} (zip bomb or case too large)", 413
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
) -> None:
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
                            f"{name}: uncompressed size exceeds the limit of {_mb(max_bytes)} "
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


def _mb(n: int) -> str:
    return f"{n / 1e6:.0f} MB" if n >= 1e6 else f"{n:,} bytes"


# ------------------------------------------------------------------------ server-side paths


def resolve_under_root(user_path: str, root: Path) -> Path:
    """The existing file ``user_path`` names, accepted only beneath ``root``.

    Relative paths are taken from ``root``; absolute ones must lie inside it. Symlinks are
    resolved first, so one pointing outside the root is refused. Raises
    :class:`UploadError`: 400 for an empty path, ``..`` components or a missing file, 403 for
    a path outside the root.

    Example:
        >>> import tempfile, pathlib
        >>> root = pathlib.Path(tempfile.mkdtemp())
        >>> _ = (root / "a.nii.gz").write_bytes(b"")
        >>> resolve_under_root("a.nii.gz", root) == (root / "a.nii.gz").resolve()
        True
        >>> resolve_under_root("../etc/passwd", root)
        Traceback (most recent call last):
        ...
        bratseg.serving.uploads.UploadError: ../etc/passwd: '..' is not allowed in paths
    """
    text = (user_path or "").strip()
    if not text or "\x00" in text:
        raise UploadError("empty or invalid path", 400)
    root_resolved = Path(root).resolve()
    path = Path(text)
    if ".." in path.parts or ".." in PurePosixPath(text.replace("\\", "/")).parts:
        raise UploadError(f"{text}: '..' is not allowed in paths", 400)
    candidate = path if path.is_absolute() else root_resolved / path
    resolved = candidate.resolve()
    if not resolved.is_relative_to(root_resolved):
        raise UploadError(f"{text}: outside the data root this server may read", 403)
    if not resolved.is_file():
        raise UploadError(f"{text}: no such file beneath the data root", 400)
    return resolved


# ------------------------------------------------------------------------- request folders


@contextmanager
def request_workdir(root: Path | None = None) -> Iterator[Path]:
    """A fresh private temp folder for one request, removed on exit whatever happened.

    ``root`` defaults to :func:`tempfile.gettempdir` (so ``TMPDIR`` / ``tempfile.tempdir``
    choose it).
    """
    path = Path(tempfile.mkdtemp(prefix="bratseg-req-", dir=None if root is None else str(root)))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)
