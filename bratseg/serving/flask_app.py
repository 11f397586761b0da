"""The Flask app: the original project's upload form, a JSON API and a health check.

Routes:

* ``GET /``: the original form (``flair`` and ``t1ce`` file uploads, optional ``t1`` and
  ``t2``, select ``part_of_tumor``), posting to ``/outpg``.
* ``POST /outpg``: an HTML page with the two input slices and the overlay, inline as PNG
  data URIs, the region volumes, the confidence and warnings, and links to the viewer and
  the files. The original text fields ``flair_path`` / ``ce_path`` are accepted too, but
  only beneath the configured data root.
* ``POST /api/predict``: the same fields plus ``t1``, ``t2``, ``zip`` (a zipped case
  folder or DICOM study), ``slice``, ``axis``, ``region`` and ``preprocess`` (``auto``, the
  default, sends scans that are not in BraTS space through the native pipeline; ``native``;
  ``none``) and ``report`` (``false``: no PDF, ``report_url`` null); answers JSON with the
  volumes, the overlay, ``confidence``, ``warnings``,
  ``preprocessing`` (``path``, ``reference``, ``steps``), ``viewer_url``, ``labels_url``,
  ``uncertainty_url`` and ``report_url``. A native case's labels are on its T1ce's grid.
  The JSON's ``rano`` is the RANO measurement of the label map returned.
* ``POST /api/followup``: two time points compared (:mod:`bratseg.serving.followup_api`).
* ``GET /viewer/<id>``, ``GET /api/result/<id>/<file>``, ``GET /api/result/<id>.nii.gz``:
  the interactive viewer and the files of a recent prediction, from a bounded in-memory
  store (:mod:`bratseg.serving.viewer`, :mod:`bratseg.serving.results`).
* ``GET /healthz``: 200 once the model is loaded, 503 before (or if loading failed).

Every request's files live in a private temp folder that is removed when the request ends,
whatever happened; bad input gets a 4xx with a message a user can act on, and a failure
nothing foresaw a 422 naming the case, never a bare 500. A full prediction queue answers
503 with ``Retry-After`` at once, so request threads stay free for ``/healthz`` and static
files.

Run it with ``bratseg serve [--host H] [--port P] [--model MODEL_DIR]`` (waitress,
:mod:`bratseg.serving.server`).
"""

from __future__ import annotations

import base64
import logging
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from flask import Flask, Response, current_app, g, jsonify, redirect, render_template, request, url_for
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from bratseg.data.labels import ORIGINAL_PARTS
from bratseg.data.layout import Case
from bratseg.errors import BratsegError, InvalidCaseError, ModelLoadError
from bratseg.inference.segment import Preprocess
from bratseg.reporting.render import (
    AXES,
    best_slice,
    draw_legend,
    render_inputs,
    render_overlay,
    slice_count,
    to_png,
)
from bratseg.serving.followup_api import init_followup
from bratseg.serving.form import (
    UploadLimits,
    UploadRequest,
    case_from_request,
    parse_axis,
    parse_region,
    parse_slice,
    precheck_slice,
)
from bratseg.serving.legend import legend_html
from bratseg.serving.results import DEFAULT_MAX_AGE_S, ResultStore, build_result, labels_nifti_gz
from bratseg.serving.service import CaseProcessingError, InferenceService, ServiceBusyError
from bratseg.serving.uploads import (
    DEFAULT_MAX_CASE_BYTES,
    DEFAULT_MAX_VOXELS,
    UploadError,
    request_workdir,
)
from bratseg.serving.viewer import init_viewer, result_urls
from bratseg.serving.web_prediction import parse_preprocess, segment_for_viewing
from bratseg.serving.zips import DicomStudy

__all__ = ["ResultStore", "create_app", "labels_nifti_gz"]

log = logging.getLogger(__name__)

DEFAULT_MAX_UPLOAD_BYTES = 200 * 1024 * 1024
DEFAULT_MAX_UNZIPPED_BYTES = 1024 * 1024 * 1024
_EXTENSION = "bratseg"


class _State:
    """Per-app settings and shared objects, kept in ``app.extensions['bratseg']``."""

    def __init__(self, **kwargs: Any):
        self.service: InferenceService = kwargs["service"]
        self.data_root: Path | None = kwargs["data_root"]
        self.workdir_root: Path | None = kwargs["workdir_root"]
        self.limits: UploadLimits = kwargs["limits"]
        self.results: ResultStore = kwargs["results"]
        self.model_dir: Path | None = kwargs["model_dir"]


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
    max_case_bytes: int = DEFAULT_MAX_CASE_BYTES,
    max_waiting: int | None = None,
    result_max_age_s: float = DEFAULT_MAX_AGE_S,
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
        max_results: results kept for download and the viewer (oldest dropped first).
        max_case_bytes: the most a case's images may take once loaded (from their headers).
        max_waiting: predictions allowed to wait for a slot when ``service`` is None (None:
            no bound); more are answered 503 at once.
        result_max_age_s: seconds a result stays downloadable.
    """
    if data_root is not None:
        data_root = Path(data_root).resolve()
        if not data_root.is_dir():
            raise BratsegError(f"{data_root}: data root not found")
    if service is None:
        service = InferenceService(model_dir, max_concurrent=max_concurrent, background=True, max_waiting=max_waiting)
    app = Flask(__name__)
    app.request_class = UploadRequest
    app.config["MAX_CONTENT_LENGTH"] = max_upload_bytes
    app.extensions[_EXTENSION] = _State(
        service=service,
        data_root=data_root,
        workdir_root=None if workdir_root is None else Path(workdir_root),
        limits=UploadLimits(data_root, max_unzipped_bytes, max_voxels, max_case_bytes),
        results=(results := ResultStore(max_results, max_age_s=result_max_age_s)),
        model_dir=service.model_dir,
    )
    init_viewer(app, results)
    init_followup(app)  # POST /api/followup
    _register_workdir(app)
    _register_pages(app)
    _register_api(app)
    _register_errors(app)
    return app


# ------------------------------------------------------------------------- routes


def _register_workdir(app: Flask) -> None:
    """Every POST gets a private folder, removed when its request ends, whatever happened."""

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


def _register_pages(app: Flask) -> None:
    """The original project's pages: the form (``GET /``) and its result (``POST /outpg``)."""

    @app.get("/")
    def index() -> str:
        return _render_form()

    @app.get("/outpg")
    def outpg_get() -> Response:
        return redirect(url_for("index"))

    @app.post("/outpg")
    def outpg() -> Response | tuple[str, int]:
        try:
            result = _predict_request(("part_of_tumor",), "all_the_tumor", with_inputs=True)
        except (BratsegError, RequestEntityTooLarge) as exc:
            status, message = _error(exc)
            return _render_form(error=message), status
        return _render_result(result)


def _register_api(app: Flask) -> None:
    """The JSON API (``POST /api/predict``) and the health check (``GET /healthz``)."""

    @app.post("/api/predict")
    def api_predict() -> tuple[Response, int]:
        try:
            result = _predict_request(("region", "part_of_tumor"), "whole tumour")
        except (BratsegError, RequestEntityTooLarge) as exc:
            status, message = _error(exc)
            response = jsonify(error=message)
            if isinstance(exc, ServiceBusyError):
                response.headers["Retry-After"] = str(exc.retry_after)
            return response, status
        return jsonify(result), 200

    @app.get("/healthz")
    def healthz() -> tuple[Response, int]:
        service = _state().service
        body: dict[str, Any] = {
            "max_concurrent": service.max_concurrent,
            "active": service.active,
            "waiting": service.waiting,
            "max_waiting": service.max_waiting,
            "results_cached": len(_state().results),
        }
        if service.ready:
            return jsonify(status="ok", **body), 200
        if service.error is not None:
            return jsonify(status="error", error=str(service.error), **body), 503
        return jsonify(status="loading", **body), 503


def _register_errors(app: Flask) -> None:
    """Errors outside the views: JSON under ``/api/``, the form with a message elsewhere."""

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
        # A bug outside the prediction routes (they answer 422 themselves): log it, answer
        # briefly, keep serving.
        log.exception("unexpected error on %s %s", request.method, request.path)
        if request.path.startswith("/api/"):
            return jsonify(error="internal server error; the request was not processed"), 500
        return _render_form(error="Internal server error; the request was not processed."), 500


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


def _render_result(result: dict[str, Any]) -> str:
    """The ``/outpg`` page of a prediction (:func:`_predict`'s body, with the input slices)."""
    return render_template(
        "result.html",
        case=result["case"],
        region=result["region"],
        axis=result["axis"],
        slice=result["slice"],
        slices=result["slices"],
        volumes=result["volumes_cm3"],
        seconds=result["seconds"],
        inputs_png=result.pop("inputs_png_base64"),
        overlay_png=result["overlay_png_base64"],
        legend=legend_html(result["region"]),
        labels_url=result["labels_url"],
        viewer_url=result["viewer_url"],
        uncertainty_url=result["uncertainty_url"],
        report_url=result["report_url"],
        confidence=result["confidence"],
        warnings=result["warnings"],
        preprocessing=result.get("preprocessing"),
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
    if isinstance(exc, ServiceBusyError):
        return 503, f"{exc} (in about {exc.retry_after} s)"
    if isinstance(exc, ModelLoadError):
        return 503, str(exc)
    if isinstance(exc, CaseProcessingError):
        return 422, str(exc)
    return 400, str(exc)


def _predict_request(region_fields: tuple[str, ...], default_region: str, with_inputs: bool = False) -> dict[str, Any]:
    """Parse the form fields shared by ``/outpg`` and ``/api/predict`` and predict.

    The request takes its place in the prediction queue before its body is parsed (a full
    queue is refused at once, before the upload costs disk); failures nothing foresaw become
    a :class:`CaseProcessingError` naming the case.
    """
    state = _state()
    with state.service.reserved():
        given = (request.form.get(field) for field in region_fields)
        region = parse_region(next((value for value in given if value), default_region))
        axis = parse_axis(request.form.get("axis") or "axial")
        index = parse_slice(request.form.get("slice"))
        preprocess = parse_preprocess(request.form.get("preprocess"))
        # report=false: no PDF (a second and a half of a request), for clients that want the label map.
        report = (request.form.get("report") or "true").strip().lower() not in ("false", "0", "no")
        case = case_from_request(request, state.limits)
        try:
            return _predict(case, region, axis, index, with_inputs, preprocess, report)
        except BratsegError:
            raise
        except Exception as exc:
            log.exception("processing %s failed", case.case_id)
            raise CaseProcessingError(
                f"{case.case_id}: the result could not be prepared ({type(exc).__name__}: {exc})"
            ) from exc


def _predict(
    case: Case | DicomStudy,
    region: str,
    axis: str,
    index: int | None,
    with_inputs: bool,
    preprocess: Preprocess,
    report: bool = True,
) -> dict[str, Any]:
    """Run the model and build what both the page and the API report."""
    state = _state()
    precheck_slice(case, axis, index)
    shown = segment_for_viewing(state.service, case, preprocess)
    prediction = shown.prediction
    volumes = prediction.volumes
    if index is None:
        index = best_slice(
            prediction.labels, axis, region=region, affine=volumes.affine, brain=volumes.images["flair"] != 0
        )
    overlay = draw_legend(render_overlay(volumes, prediction.labels, region, axis, index), region)
    stored = build_result(
        prediction,
        shown.scans,
        max_bytes=state.results.max_result_bytes,
        model_dir=state.service.model_dir,
        model_space=shown.model_space,
        preprocessing=shown.preprocessing,
        report=report,
    )
    key = state.results.put(stored)
    body = {
        **stored.summary,
        "region": region,
        "axis": axis,
        "slice": index,
        "slices": slice_count(volumes.shape, axis, volumes.affine),
        "overlay_png_base64": _b64(to_png(overlay)),
        **result_urls(key, stored),
    }
    if with_inputs:
        body["inputs_png_base64"] = _b64(to_png(render_inputs(volumes, axis, index)))
    return body


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")
