"""The Flask app: the original project's upload form, a JSON API and a health check.

Routes:

* ``GET /``: the original form (``flair`` and ``t1ce`` file uploads, optional ``t1`` and
  ``t2``, select ``part_of_tumor``), posting to ``/outpg``.
* ``POST /outpg``: an HTML page with the two input slices and the overlay, inline as PNG
  data URIs, the region volumes and a link to the label map. The original text fields
  ``flair_path`` / ``ce_path`` are accepted too, but only beneath the configured data root.
* ``POST /api/predict``: the same fields plus ``t1``, ``t2``, ``zip`` (a zipped case
  folder), ``slice``, ``axis`` and ``region``; answers JSON.
* ``GET /api/result/<id>.nii.gz``: the label map of a recent prediction, from a bounded
  in-memory LRU (nothing is kept on disk).
* ``GET /healthz``: 200 once the model is loaded, 503 before (or if loading failed).

Every request's files live in a private temp folder that is removed when the request ends,
whatever happened; bad input gets a 4xx with a message a user can act on.

Run it with ``bratseg serve [--host H] [--port P] [--model MODEL_DIR]`` (waitress).
"""

from __future__ import annotations

import argparse
import base64
import gzip
import logging
import secrets
import tempfile
import threading
from collections import OrderedDict
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import nibabel as nib
from flask import Flask, Response, current_app, g, jsonify, redirect, render_template, request, url_for
from flask import Request as FlaskRequest
from werkzeug.datastructures import FileStorage
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge
from werkzeug.utils import secure_filename

from bratseg.data.layout import MODALITIES, Case
from bratseg.errors import BratsegError, InvalidCaseError, ModelLoadError
from bratseg.inference.predictor import Prediction
from bratseg.inference.regions import ORIGINAL_PARTS, REGION_LABELS, resolve_region
from bratseg.serving.render import (
    AXES,
    best_slice,
    draw_legend,
    legend_html,
    render_inputs,
    render_overlay,
    slice_count,
    to_png,
)
from bratseg.serving.service import InferenceService, ServiceBusyError
from bratseg.serving.uploads import (
    DEFAULT_MAX_VOXELS,
    UploadError,
    case_from_uploads,
    case_from_zip,
    request_workdir,
    resolve_under_root,
    safe_case_id,
)

log = logging.getLogger(__name__)

DEFAULT_MAX_UPLOAD_BYTES = 200 * 1024 * 1024
DEFAULT_MAX_UNZIPPED_BYTES = 1024 * 1024 * 1024
# The original form's text fields, and the modality each names.
_PATH_FIELDS = {"flair_path": "flair", "ce_path": "t1ce", "t1_path": "t1", "t2_path": "t2"}
_EXTENSION = "bratseg"


class ResultStore:
    """A bounded, thread-safe LRU of label maps (gzipped NIfTI bytes) keyed by random ids.

    Ids are unguessable (128 random bits), so one user cannot fetch another's result.
    """

    def __init__(self, max_items: int = 32, max_bytes: int = 256 * 1024 * 1024):
        self.max_items = max_items
        self.max_bytes = max_bytes
        self._items: OrderedDict[str, tuple[bytes, str]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def put(self, data: bytes, filename: str) -> str:
        """Store ``data`` (downloaded as ``filename``); returns its id."""
        key = secrets.token_urlsafe(16)
        with self._lock:
            self._items[key] = (data, filename)
            self._bytes += len(data)
            while self._items and (len(self._items) > self.max_items or self._bytes > self.max_bytes):
                _key, (old, _name) = self._items.popitem(last=False)
                self._bytes -= len(old)
        return key

    def get(self, key: str) -> tuple[bytes, str] | None:
        """The bytes and file name stored under ``key``, or None when unknown or evicted."""
        with self._lock:
            item = self._items.get(key)
            if item is not None:
                self._items.move_to_end(key)
            return item

    def __len__(self) -> int:
        return len(self._items)


class _State:
    """Per-app settings and shared objects, kept in ``app.extensions['bratseg']``."""

    def __init__(self, **kwargs: Any):
        self.service: InferenceService = kwargs["service"]
        self.data_root: Path | None = kwargs["data_root"]
        self.workdir_root: Path | None = kwargs["workdir_root"]
        self.max_unzipped_bytes: int = kwargs["max_unzipped_bytes"]
        self.max_voxels: int = kwargs["max_voxels"]
        self.results: ResultStore = kwargs["results"]


class _UploadRequest(FlaskRequest):
    """Spools uploaded files into the request's own temp folder (not the shared temp
    directory), so an upload is a file we can hand to nibabel without copying it and
    nothing outlives the request."""

    def _get_file_stream(self, total_content_length, content_type, filename=None, content_length=None):
        workdir = g.get("bratseg_workdir")
        if workdir is None:
            return super()._get_file_stream(total_content_length, content_type, filename, content_length)
        return tempfile.NamedTemporaryFile("wb+", dir=workdir, prefix="upload-", suffix=".part", delete=False)


def create_app(
    service: InferenceService | None = None,
    data_root: Path | None = None,
    max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES,
    *,
    model_dir: Path | None = None,
    max_concurrent: int = 2,
    max_unzipped_bytes: int = DEFAULT_MAX_UNZIPPED_BYTES,
    max_voxels: int = DEFAULT_MAX_VOXELS,
    workdir_root: Path | None = None,
    max_results: int = 32,
) -> Flask:
    """The Flask app.

    Args:
        service: the shared :class:`InferenceService`; None loads ``model_dir`` (default:
            the shipped model) in the background, so ``/healthz`` answers 503 meanwhile.
        data_root: the only folder server-side paths (``flair_path``, ``ce_path``) may name;
            None refuses such paths.
        max_upload_bytes: largest request body (``MAX_CONTENT_LENGTH``); larger gets 413.
        max_concurrent: predictions at once when ``service`` is None.
        max_unzipped_bytes: largest total size a zipped case may extract to.
        max_voxels: largest image (voxels) an upload may declare.
        workdir_root: where per-request temp folders are made (default: the temp directory).
        max_results: label maps kept for download (oldest dropped first).
    """
    if data_root is not None:
        data_root = Path(data_root).resolve()
        if not data_root.is_dir():
            raise BratsegError(f"{data_root}: data root not found")
    if service is None:
        service = InferenceService(model_dir, max_concurrent=max_concurrent, background=True)
    app = Flask(__name__)
    app.request_class = _UploadRequest
    app.config["MAX_CONTENT_LENGTH"] = max_upload_bytes
    app.extensions[_EXTENSION] = _State(
        service=service,
        data_root=data_root,
        workdir_root=None if workdir_root is None else Path(workdir_root),
        max_unzipped_bytes=max_unzipped_bytes,
        max_voxels=max_voxels,
        results=ResultStore(max_results),
    )

    @app.before_request
    def _open_workdir() -> None:
        if request.method == "POST":
            stack = ExitStack()
            g.bratseg_stack = stack
            g.bratseg_workdir = stack.enter_context(request_workdir(_state().workdir_root))

    @app.teardown_request
    def _remove_workdir(_exc: BaseException | None) -> None:
        stack = g.pop("bratseg_stack", None)
        if stack is not None:
            request.close()  # the upload spool files live in the folder: close them first
            stack.close()

    @app.get("/")
    def index() -> str:
        return _render_form()

    @app.get("/outpg")
    def outpg_get() -> Response:
        return redirect(url_for("index"))

    @app.post("/outpg")
    def outpg() -> Response | tuple[str, int]:
        try:
            result = _predict_request(request.form.get("part_of_tumor") or "all_the_tumor")
        except (BratsegError, RequestEntityTooLarge) as exc:
            status, message = _error(exc)
            return _render_form(error=message), status
        axis = result["axis"]
        inputs = render_inputs(result["prediction"].volumes, axis, result["slice"])
        return render_template(
            "result.html",
            case=result["case"],
            region=result["region"],
            axis=axis,
            slice=result["slice"],
            slices=result["slices"],
            volumes=result["volumes_cm3"],
            seconds=result["seconds"],
            inputs_png=_b64(to_png(inputs)),
            overlay_png=result["overlay_png_base64"],
            legend=legend_html(result["region"]),
            labels_url=result["labels_url"],
        )

    @app.post("/api/predict")
    def api_predict() -> tuple[Response, int]:
        try:
            result = _predict_request(request.form.get("region") or request.form.get("part_of_tumor") or "whole tumour")
        except (BratsegError, RequestEntityTooLarge) as exc:
            status, message = _error(exc)
            return jsonify(error=message), status
        result.pop("prediction")
        return jsonify(result), 200

    @app.get("/api/result/<result_id>.nii.gz")
    def api_result(result_id: str) -> Response | tuple[Response, int]:
        item = _state().results.get(result_id)
        if item is None:
            return jsonify(error="unknown or expired result id; predict again"), 404
        data, filename = item
        return Response(
            data,
            mimetype="application/gzip",
            headers={"Content-Disposition": f'attachment; filename="{filename}"', "Cache-Control": "private"},
        )

    @app.get("/healthz")
    def healthz() -> tuple[Response, int]:
        service = _state().service
        body: dict[str, Any] = {
            "max_concurrent": service.max_concurrent,
            "active": service.active,
            "results_cached": len(_state().results),
        }
        if service.ready:
            return jsonify(status="ok", **body), 200
        if service.error is not None:
            return jsonify(status="error", error=str(service.error), **body), 503
        return jsonify(status="loading", **body), 503

    @app.errorhandler(RequestEntityTooLarge)
    def too_large(exc: RequestEntityTooLarge) -> tuple[Any, int]:
        # Raised before a view runs when Content-Length alone is over the limit.
        status, message = _error(exc)
        if request.path.startswith("/api/"):
            return jsonify(error=message), status
        return _render_form(error=message), status

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> Any:
        if request.path.startswith("/api/"):
            return jsonify(error=f"{exc.code} {exc.name}: {exc.description}"), exc.code
        return exc

    @app.errorhandler(Exception)
    def internal_error(exc: Exception) -> tuple[Any, int]:
        # A bug, not bad input: log the traceback, answer briefly, keep serving.
        log.exception("unexpected error on %s %s", request.method, request.path)
        if request.path.startswith("/api/"):
            return jsonify(error="internal server error; the request was not processed"), 500
        return _render_form(error="Internal server error; the request was not processed."), 500

    return app


# ------------------------------------------------------------------------- request handling


def _state() -> _State:
    return current_app.extensions[_EXTENSION]


def _render_form(error: str | None = None) -> str:
    return render_template(
        "index.html",
        error=error,
        parts=list(ORIGINAL_PARTS),
        axes=AXES,
        paths_allowed=_state().data_root is not None,
    )


def _error(exc: BaseException) -> tuple[int, str]:
    """HTTP status and user-facing message of an expected failure."""
    if isinstance(exc, RequestEntityTooLarge):
        limit = request.max_content_length
        return 413, f"upload too large: the limit is {limit / 1024 / 1024:.0f} MB" if limit else "upload too large"
    if isinstance(exc, UploadError):
        return exc.status, str(exc)
    if isinstance(exc, InvalidCaseError):
        return 400, str(exc)
    if isinstance(exc, (ServiceBusyError, ModelLoadError)):
        return 503, str(exc)
    return 400, str(exc)


def _region(value: str) -> str:
    try:
        return resolve_region(value)
    except KeyError:
        choices = ", ".join(list(REGION_LABELS) + list(ORIGINAL_PARTS))
        raise UploadError(f"unknown region {value!r}; choose one of {choices}", 400) from None


def _axis(value: str) -> str:
    if value not in AXES:
        raise UploadError(f"unknown axis {value!r}; choose one of {', '.join(AXES)}", 400)
    return value


def _slice(value: str | None) -> int | None:
    if value is None or not value.strip():
        return None
    try:
        return int(value)
    except ValueError:
        raise UploadError(f"slice must be a whole number, got {value!r}", 400) from None


def _saved_upload(storage: FileStorage, workdir: Path, field: str) -> Path:
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


def _case_from_request() -> Case:
    """The case a request describes: a zip, uploaded files, or paths beneath the data root."""
    state = _state()
    workdir: Path = g.bratseg_workdir
    files = request.files  # reading it parses the body: 413 is raised here when too large
    zipped = files.get("zip")
    if zipped is not None and zipped.filename:
        path = _saved_upload(zipped, workdir, "zip")
        return case_from_zip(path, workdir, state.max_unzipped_bytes, max_voxels=state.max_voxels)
    uploads: dict[str, Path] = {}
    for modality in MODALITIES:
        storage = files.get(modality)
        if storage is not None and storage.filename:
            uploads[modality] = _saved_upload(storage, workdir, modality)
    for field, modality in _PATH_FIELDS.items():
        text = (request.form.get(field) or "").strip()
        if not text or modality in uploads:
            continue
        if state.data_root is None:
            raise UploadError(
                f"{field}: server-side paths are disabled on this server (no data root configured); "
                "upload the files instead",
                403,
            )
        uploads[modality] = resolve_under_root(text, state.data_root)
    if not uploads:
        raise UploadError("no input: upload FLAIR and T1ce NIfTI files (or a zipped case folder)", 400)
    return case_from_uploads(uploads, workdir=workdir, max_voxels=state.max_voxels)


def _precheck_slice(case: Case, axis: str, index: int | None) -> None:
    """Refuse an out-of-range slice from the header alone, before minutes of prediction."""
    if index is None:
        return
    try:
        img = nib.load(str(case.images["flair"]))
        shape, affine = img.shape, img.affine
    except Exception:  # noqa: BLE001 - a broken file is reported by load_case with its reason
        return
    if len(shape) >= 3:
        n = slice_count(shape[:3], axis, affine)
        if not 0 <= index < n:
            raise UploadError(f"{axis} slice {index} is out of range 0..{n - 1}", 400)


def _predict_request(region_field: str) -> dict[str, Any]:
    """Parse the form fields shared by ``/outpg`` and ``/api/predict`` and predict."""
    region = _region(region_field)
    axis = _axis(request.form.get("axis") or "axial")
    index = _slice(request.form.get("slice"))
    return _predict(_case_from_request(), region, axis, index)


def _predict(case: Case, region: str, axis: str, index: int | None) -> dict[str, Any]:
    """Run the model and build what both the page and the API report."""
    state = _state()
    _precheck_slice(case, axis, index)
    prediction = state.service.segment(case)
    volumes = prediction.volumes
    if index is None:
        index = best_slice(
            prediction.labels, axis, region=region, affine=volumes.affine, brain=volumes.images["flair"] != 0
        )
    overlay = draw_legend(render_overlay(volumes, prediction.labels, region, axis, index), region)
    # The case id may come from a zip's folder name: keep the download name header-safe.
    key = state.results.put(labels_nifti_gz(prediction), f"{safe_case_id(volumes.case_id)}_seg.nii.gz")
    return {
        "case": volumes.case_id,
        "region": region,
        "axis": axis,
        "slice": index,
        "slices": slice_count(volumes.shape, axis, volumes.affine),
        "shape": list(volumes.shape),
        "modalities": sorted(volumes.images),
        "volumes_cm3": prediction.region_volumes(),
        "seconds": round(prediction.seconds, 3),
        "overlay_png_base64": _b64(to_png(overlay)),
        "labels_url": url_for("api_result", result_id=key),
        "prediction": prediction,
    }


def labels_nifti_gz(prediction: Prediction) -> bytes:
    """The prediction's BraTS 2020 (0/1/2/4) label map as gzipped NIfTI bytes, with the
    input's affine and header, built in memory (no file on disk)."""
    return gzip.compress(prediction.to_nifti().to_bytes(), compresslevel=6, mtime=0)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


# ------------------------------------------------------------------------------------ serve


def serve(args: argparse.Namespace) -> None:
    """Serve the app with waitress (``bratseg serve``); blocks until interrupted.

    The model loads in the background: ``/healthz`` answers 503 until it is ready.
    Concurrency is bounded twice: waitress's ``--threads`` request threads, and at most
    ``--max-concurrent`` predictions at once (the rest wait for a slot).
    """
    import waitress

    max_upload = int(args.max_upload_mb) * 1024 * 1024
    if args.data_root is not None and not Path(args.data_root).is_dir():
        raise BratsegError(f"{args.data_root}: data root not found")  # before loading a model for nothing
    service = InferenceService(args.model, max_concurrent=args.max_concurrent, background=True)
    app = create_app(
        service,
        data_root=args.data_root,
        max_upload_bytes=max_upload,
        max_unzipped_bytes=int(args.max_unzipped_mb) * 1024 * 1024,
    )
    print(
        f"bratseg: serving on http://{args.host}:{args.port} "
        f"({args.threads} threads, {service.max_concurrent} predictions at once); model loading...",
        flush=True,
    )
    waitress.serve(
        app,
        host=args.host,
        port=args.port,
        threads=args.threads,
        # waitress's own cap, a little above Flask's so Flask answers with a clear 413.
        max_request_body_size=max_upload + 1024 * 1024,
        ident="bratseg",
    )
