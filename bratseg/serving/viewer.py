"""The interactive result viewer: a Flask blueprint serving a NiiVue page and the files of a
recent prediction from the :class:`~bratseg.serving.results.ResultStore`.

Routes (``<id>`` is a result's unguessable id):

* ``GET /viewer/<id>``: the viewer page. The scan (a choice of the input sequences) with
  every tumour region in one colour-coded overlay, opacity, per-region toggles, axial,
  coronal, sagittal, multiplanar + 3-D and 3-D layouts, a crosshair readout (voxel,
  intensity, label) and the uncertainty map as an optional overlay. The result's RANO
  measurement (``summary["rano"]``) is listed beside the image, and the two diameters of each
  target lesion are drawn on its axial slice (NiiVue measurement lines; a button per target
  moves there). NiiVue is vendored in ``static/niivue/``: the page fetches nothing from any
  other host.
* ``GET /api/result/<id>/<name>``: one file of the result, ``name`` one of
  :data:`~bratseg.serving.results.RESULT_FILES` (``labels.nii.gz``, ``uncertainty.nii.gz``,
  ``report.pdf``, ``flair.nii.gz``...); anything else is 404.
* ``GET /api/result/<id>/summary.json``: the result's summary and file URLs.
* ``GET /api/result/<id>.nii.gz``: the label map (the original download URL).

The viewer only needs NIfTI files on one world grid, so BraTS-space and native-space
results look the same to it. :func:`create_viewer_app` is a Flask app with these routes
only, for mounting inside the Gradio demo's server.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Flask, Response, current_app, jsonify, render_template, url_for

from bratseg.reporting.render import LABEL_COLOURS
from bratseg.serving.results import LABELS, REPORT, RESULT_FILES, SCANS, UNCERTAINTY, Result, ResultStore

RESULTS_EXTENSION = "bratseg.results"
# The BraTS 2017-2020 label names, as the challenge gives them.
LABEL_NAMES = {
    1: "necrotic / non-enhancing tumour core",
    2: "peritumoral edema",
    4: "GD-enhancing tumour",
}
SEQUENCE_NAMES = {"flair": "FLAIR", "t1ce": "T1ce", "t1": "T1", "t2": "T2"}
# Everything the page loads comes from this server; NiiVue needs blob: workers and inline
# style attributes, nothing else. frame-ancestors 'self': the Gradio demo embeds it.
_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data: blob:; "
    "connect-src 'self' blob: data:; worker-src 'self' blob:; frame-ancestors 'self'; base-uri 'none'; "
    "form-action 'none'; object-src 'none'"
)
_CACHE = "private, max-age=3600"  # a result id's files never change, and expire within the hour

viewer = Blueprint("viewer", __name__)


def init_viewer(app: Flask, results: ResultStore) -> None:
    """Register the viewer's routes on ``app``, serving files from ``results``."""
    app.extensions[RESULTS_EXTENSION] = results
    app.register_blueprint(viewer)


def create_viewer_app(results: ResultStore) -> Flask:
    """A Flask app with the viewer routes and the static files only (no prediction routes),
    for the Gradio demo, whose predictions put their results in ``results``."""
    app = Flask(__name__)  # this package's templates/ and static/, as the full app's
    init_viewer(app, results)
    return app


def _results() -> ResultStore:
    return current_app.extensions[RESULTS_EXTENSION]


def result_urls(result_id: str, result: Result) -> dict[str, str | None]:
    """The URLs of a result's viewer and files (None for a file it does not hold)."""

    def file_url(name: str) -> str | None:
        return url_for("viewer.result_file", result_id=result_id, name=name) if name in result.files else None

    return {
        "viewer_url": url_for("viewer.page", result_id=result_id),
        "labels_url": url_for("viewer.labels_download", result_id=result_id),
        "uncertainty_url": file_url(UNCERTAINTY),
        "report_url": file_url(REPORT),
    }


def _not_found() -> tuple[Response, int]:
    return jsonify(error="unknown or expired result id; predict again"), 404


def _file_response(result: Result, name: str) -> Response:
    stored = result.files[name]
    return Response(
        stored.data,
        mimetype=stored.mimetype,
        headers={
            "Content-Disposition": f'attachment; filename="{stored.download_name}"',
            "Cache-Control": _CACHE,
            "X-Content-Type-Options": "nosniff",
        },
    )


def manifest(result_id: str, result: Result) -> dict[str, Any]:
    """What the viewer page needs: the summary, the file URLs and the label colours."""
    urls = result_urls(result_id, result)
    return {
        **result.summary,
        **urls,
        "scans": {
            m: {"name": SEQUENCE_NAMES.get(m, m), "url": url_for("viewer.result_file", result_id=result_id, name=n)}
            for m, n in SCANS.items()
            if n in result.files
        },
        "labels_file_url": url_for("viewer.result_file", result_id=result_id, name=LABELS),
        "labels": [
            {"value": value, "name": LABEL_NAMES[value], "rgb": list(LABEL_COLOURS[value])} for value in LABEL_NAMES
        ],
    }


@viewer.get("/viewer/<result_id>")
def page(result_id: str) -> Response | tuple[str, int]:
    result = _results().get(result_id)
    if result is None:
        return render_template("viewer_missing.html"), 404
    html = render_template("viewer.html", case=result.case_id, manifest=manifest(result_id, result))
    return Response(html, headers={"Content-Security-Policy": _CSP, "Cache-Control": "private, no-store"})


@viewer.get("/api/result/<result_id>/summary.json")
def summary(result_id: str) -> Response | tuple[Response, int]:
    result = _results().get(result_id)
    if result is None:
        return _not_found()
    return jsonify(manifest(result_id, result))


@viewer.get("/api/result/<result_id>/<name>")
def result_file(result_id: str, name: str) -> Response | tuple[Response, int]:
    result = _results().get(result_id)
    if result is None or name not in RESULT_FILES or name not in result.files:
        return _not_found()
    return _file_response(result, name)


@viewer.get("/api/result/<result_id>.nii.gz")
def labels_download(result_id: str) -> Response | tuple[Response, int]:
    result = _results().get(result_id)
    if result is None:
        return _not_found()
    return _file_response(result, LABELS)
