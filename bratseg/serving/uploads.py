"""Turn what a web user sends (uploaded files, a zipped case folder, a server-side path)
into a :class:`~bratseg.data.layout.Case`, refusing anything unsafe.

Shared by the Flask app and the Gradio demo; zipped case folders are
:mod:`bratseg.serving.zips`'s. Every refusal is an :class:`UploadError` whose
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
import tempfile
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np

from bratseg.data.layout import MODALITIES, REQUIRED_MODALITIES, Case, nifti_stem
from bratseg.errors import BratsegError

# A BraTS case is 240 x 240 x 155 = 8.9 M voxels; a header declaring far more is either not
# an MRI volume or a decompression bomb, and loading it would exhaust the server's memory.
DEFAULT_MAX_VOXELS = 64_000_000
# Memory follows what the images decode to, not the upload's size: a 744 kB gzip can hold a
# 400 x 400 x 399 float64 volume (510 MB). A prediction's peak memory is a few times the
# case's decoded size (BENCHMARKS.md), so a case may decode to at most this much; a BraTS
# case (four 240 x 240 x 155 images, held as float32) is 143 MB.
DEFAULT_MAX_CASE_BYTES = 500_000_000

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


def check_size(path: Path, header: NiftiHeader, max_voxels: int) -> None:
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
        f"{path.name} {'x'.join(map(str, h.dims))} x {h.bytes_per_voxel} B = {mb(h.decoded_bytes)}"
        for path, h in headers.items()
    )
    raise UploadError(
        f"the case's images take {mb(total)} once loaded ({parts}), more than the {mb(max_case_bytes)} "
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
        check_size(path, header, max_voxels)
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


def mb(n: int) -> str:
    """``n`` bytes in MB (or bytes, when small) for messages."""
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
