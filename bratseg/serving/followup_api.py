"""The Flask app's follow-up mode: ``POST /api/followup`` compares two time points of one
patient (RANO measurements of each, the change and the response category) as
``bratseg followup`` does.

Fields: each time point's scans as ``/api/predict`` takes them, prefixed ``baseline_`` or
``followup_`` (``baseline_flair``, ``baseline_t1ce`` [, ``baseline_t1``, ``baseline_t2``], or
``baseline_zip``: a zipped case folder or DICOM study), optionally its label map
(``baseline_seg``, ``followup_seg``: used instead of segmenting, in the scans' world
coordinates, BraTS 2017-2020 or 2023 labels), and ``preprocess`` (``auto``, ``native``, ``none``).

The answer is ``followup.json`` (:meth:`bratseg.followup.FollowupResult.to_json`)
plus ``viewer_urls`` and ``labels_urls`` (each time point's viewer, with its target lesions'
diameters, and label map), ``report_url`` (the comparison's PDF), ``json_url``,
``difference_url`` and ``followup_seg_on_baseline_url``. Errors are JSON with a 4xx status,
as for ``/api/predict``; the request takes one place in the prediction queue and each of its
predictions a slot.

Example (``bratseg serve`` on port 5000)::

    curl -F baseline_zip=@before.zip -F followup_zip=@after.zip http://127.0.0.1:5000/api/followup
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from flask import Blueprint, Flask, Request, Response, current_app, g, jsonify, request, url_for
from werkzeug.exceptions import RequestEntityTooLarge

from bratseg.data.layout import MODALITIES
from bratseg.errors import BratsegError
from bratseg.serving.followup_web import TIME_POINT_NAMES, TIME_POINTS, Comparison, TimePointUpload, compare
from bratseg.serving.form import saved_upload
from bratseg.serving.results import DIFFERENCE, FOLLOWUP_JSON, FOLLOWUP_ON_BASELINE, REPORT
from bratseg.serving.service import ServiceBusyError
from bratseg.serving.uploads import UploadError, case_from_uploads, check_size, read_nifti_header
from bratseg.serving.web_prediction import parse_preprocess
from bratseg.serving.zips import case_from_zip

followup_api = Blueprint("followup", __name__)


def init_followup(app: Flask) -> None:
    """Register ``POST /api/followup`` on the Flask app of :mod:`bratseg.serving.flask_app`."""
    app.register_blueprint(followup_api)


def time_point_from_request(req: Request, name: str, workdir: Path, limits: Any) -> TimePointUpload:
    """Time point ``name``'s scans (``<name>_zip`` or ``<name>_<modality>`` uploads) and label
    map (``<name>_seg``), saved in a folder of ``workdir`` of its own."""
    folder = workdir / name
    folder.mkdir(parents=True, exist_ok=True)
    files = req.files  # reading it parses the body: 413 is raised here when too large
    label = TIME_POINT_NAMES[name]
    zipped = files.get(f"{name}_zip")
    if zipped is not None and zipped.filename:
        source = case_from_zip(
            saved_upload(zipped, folder, "zip"),
            folder,
            limits.max_unzipped_bytes,
            max_voxels=limits.max_voxels,
            max_case_bytes=limits.max_case_bytes,
        )
    else:
        uploads = {
            modality: saved_upload(storage, folder, modality)
            for modality in MODALITIES
            if (storage := files.get(f"{name}_{modality}")) is not None and storage.filename
        }
        if not uploads:
            raise UploadError(f"no {label} scans: upload {name}_flair and {name}_t1ce NIfTI files (or {name}_zip)", 400)
        try:
            source = case_from_uploads(
                uploads, workdir=folder, max_voxels=limits.max_voxels, max_case_bytes=limits.max_case_bytes
            )
        except UploadError as exc:
            raise UploadError(f"{label}: {exc}", exc.status) from None
    seg = None
    storage = files.get(f"{name}_seg")
    if storage is not None and storage.filename:
        seg = _label_map(saved_upload(storage, folder, "seg"), limits.max_voxels)
    return TimePointUpload(source, seg)


def _label_map(path: Path, max_voxels: int) -> Path:
    """An uploaded label map, checked to be NIfTI and named with the suffix its content needs."""
    header = read_nifti_header(path)  # 415 for anything else
    check_size(path, header, max_voxels)
    suffix = ".nii.gz" if header.gzipped else ".nii"
    lower = path.name.lower()
    if lower.endswith(suffix) and (header.gzipped or not lower.endswith(".nii.gz")):
        return path
    stem = path.name.split(".", 1)[0] or "seg"
    return path.rename(path.with_name(stem + suffix))


def _body(comparison: Comparison) -> dict[str, Any]:
    keys = comparison.keys
    first = keys["baseline"]

    def file_url(name: str) -> str | None:
        if name not in comparison.files:
            return None
        return url_for("viewer.result_file", result_id=first, name=name)

    return {
        **comparison.body,
        "viewer_urls": {name: url_for("viewer.page", result_id=key) for name, key in keys.items()},
        "labels_urls": {name: url_for("viewer.labels_download", result_id=key) for name, key in keys.items()},
        "report_url": file_url(REPORT),
        "json_url": file_url(FOLLOWUP_JSON),
        "difference_url": file_url(DIFFERENCE),
        "followup_seg_on_baseline_url": file_url(FOLLOWUP_ON_BASELINE),
    }


@followup_api.post("/api/followup")
def api_followup() -> tuple[Response, int]:
    from bratseg.serving.flask_app import _error  # the app's one mapping of errors to statuses

    state = current_app.extensions["bratseg"]
    try:
        with state.service.reserved():
            preprocess = parse_preprocess(request.form.get("preprocess"))
            workdir: Path = g.bratseg_workdir
            points = {name: time_point_from_request(request, name, workdir, state.limits) for name in TIME_POINTS}
            comparison = compare(state.service, points, state.results, workdir, preprocess)
    except (BratsegError, RequestEntityTooLarge) as exc:
        status, message = _error(exc)
        response = jsonify(error=message)
        if isinstance(exc, ServiceBusyError):
            response.headers["Retry-After"] = str(exc.retry_after)
        return response, status
    return jsonify(_body(comparison)), 200
