"""The prediction form of the Flask app (``/outpg`` and ``/api/predict``): its fields, its
uploads and the case they describe.

Uploads are spooled into the request's own temp folder; the case is a zip, uploaded files,
or (with a data root) paths beneath that root. Every refusal is an
:class:`~bratseg.serving.uploads.UploadError` with its HTTP status.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
from flask import Request, g
from werkzeug.datastructures import FileStorage
from werkzeug.utils import secure_filename

from bratseg.data.labels import ORIGINAL_PARTS, REGION_LABELS, resolve_region
from bratseg.data.layout import MODALITIES, Case
from bratseg.reporting.render import AXES, slice_count
from bratseg.serving.uploads import UploadError, case_from_uploads, resolve_under_root
from bratseg.serving.zips import DicomStudy, case_from_zip

# The original form's text fields, and the modality each names.
PATH_FIELDS = {"flair_path": "flair", "ce_path": "t1ce", "t1_path": "t1", "t2_path": "t2"}


@dataclass(frozen=True)
class UploadLimits:
    """What a request may send and name."""

    data_root: Path | None
    max_unzipped_bytes: int
    max_voxels: int
    max_case_bytes: int


class UploadRequest(Request):
    """Spools uploaded files into the request's own temp folder (not the shared temp
    directory), so an upload is a file we can hand to nibabel without copying it and
    nothing outlives the request."""

    def _get_file_stream(self, total_content_length, content_type, filename=None, content_length=None):
        workdir = g.get("bratseg_workdir")
        if workdir is None:
            return super()._get_file_stream(total_content_length, content_type, filename, content_length)
        return tempfile.NamedTemporaryFile("wb+", dir=workdir, prefix="upload-", suffix=".part", delete=False)


def parse_region(value: str) -> str:
    try:
        return resolve_region(value)
    except KeyError:
        choices = ", ".join(list(REGION_LABELS) + list(ORIGINAL_PARTS))
        raise UploadError(f"unknown region {value!r}; choose one of {choices}", 400) from None


def parse_axis(value: str) -> str:
    if value not in AXES:
        raise UploadError(f"unknown axis {value!r}; choose one of {', '.join(AXES)}", 400)
    return value


def parse_slice(value: str | None) -> int | None:
    if value is None or not value.strip():
        return None
    try:
        return int(value)
    except ValueError:
        raise UploadError(f"slice must be a whole number, got {value!r}", 400) from None


def saved_upload(storage: FileStorage, workdir: Path, field: str) -> Path:
    """The upload as a file in ``workdir``, under the (sanitised) name the user gave it so
    that error messages name the user's file. The spool file is moved, not copied, when
    it is already in the request folder."""
    client_name = (storage.filename or "").replace("\\", "/").rsplit("/", 1)[-1]
    folder = workdir / "uploads" / field  # one folder per field: two uploads may share a name
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / (secure_filename(client_name) or f"{field}.upload")
    spooled = getattr(storage.stream, "name", None)
    if isinstance(spooled, str) and Path(spooled).parent == workdir:
        storage.stream.flush()
        Path(spooled).replace(path)  # the open handle follows the file; closed at teardown
    else:
        storage.save(path)
    return path


def case_from_request(request: Request, limits: UploadLimits) -> Case | DicomStudy:
    """The case a request describes: a zip (a case folder or a DICOM study), uploaded files,
    or paths beneath the data root."""
    workdir: Path = g.bratseg_workdir
    files = request.files  # reading it parses the body: 413 is raised here when too large
    zipped = files.get("zip")
    if zipped is not None and zipped.filename:
        path = saved_upload(zipped, workdir, "zip")
        return case_from_zip(
            path, workdir, limits.max_unzipped_bytes, max_voxels=limits.max_voxels, max_case_bytes=limits.max_case_bytes
        )
    uploads: dict[str, Path] = {}
    for modality in MODALITIES:
        storage = files.get(modality)
        if storage is not None and storage.filename:
            uploads[modality] = saved_upload(storage, workdir, modality)
    for field, modality in PATH_FIELDS.items():
        text = (request.form.get(field) or "").strip()
        if not text or modality in uploads:
            continue
        if limits.data_root is None:
            raise UploadError(
                f"{field}: server-side paths are disabled on this server (no data root configured); "
                "upload the files instead",
                403,
            )
        uploads[modality] = resolve_under_root(text, limits.data_root)
    if not uploads:
        raise UploadError("no input: upload FLAIR and T1ce NIfTI files (or a zipped case folder)", 400)
    return case_from_uploads(
        uploads, workdir=workdir, max_voxels=limits.max_voxels, max_case_bytes=limits.max_case_bytes
    )


def precheck_slice(case: Case | DicomStudy, axis: str, index: int | None) -> None:
    """Refuse an out-of-range slice from the header alone, before minutes of prediction. The
    slice is on the T1ce's grid: the labels are, on the native path too (DICOM is not checked)."""
    if index is None or isinstance(case, DicomStudy):
        return
    try:
        img = nib.load(str(case.images["t1ce"]))
        shape, affine = img.shape, img.affine
    except Exception:  # noqa: BLE001 - a broken file is reported by load_case with its reason
        return
    if len(shape) >= 3:
        n = slice_count(shape[:3], axis, affine)
        if not 0 <= index < n:
            raise UploadError(f"{axis} slice {index} is out of range 0..{n - 1}", 400)
