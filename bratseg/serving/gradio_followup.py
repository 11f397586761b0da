"""The Gradio demo's follow-up mode: two time points of one patient compared (RANO
measurements, change and response category), as ``bratseg followup`` and the Flask API's
``/api/followup`` do (:mod:`bratseg.serving.followup_web`).

:func:`followup_section` adds it to the demo's page (inside its ``gr.Blocks``). API endpoint
``/followup`` (for ``gradio_client``): baseline FLAIR, T1ce, zip, label map, follow-up FLAIR,
T1ce, zip, label map, preprocess -> result (Markdown: category, reasons, flag, criteria),
measurements (table: SPD and volumes, baseline, follow-up, change %), report (PDF file),
followup.json (file), baseline viewer, follow-up viewer (HTML of the embedded viewers).
"""

from __future__ import annotations

import html
import json
import logging
from pathlib import Path
from typing import Any

import gradio as gr

from bratseg.errors import BratsegError
from bratseg.inference.segment import PREPROCESS_CHOICES
from bratseg.serving.followup_web import (
    TIME_POINT_NAMES,
    TIME_POINTS,
    TimePointUpload,
    compare,
    measurement_rows,
    response_markdown,
)
from bratseg.serving.gradio_parts import OUTPUTS, VIEWER_HEIGHT, VIEWER_MOUNT, case_from_inputs, user_errors
from bratseg.serving.results import FOLLOWUP_JSON, REPORT, ResultStore
from bratseg.serving.uploads import request_workdir
from bratseg.serving.web_prediction import SegmentationService, parse_preprocess

log = logging.getLogger("bratseg.gradio")

TABLE_COLUMNS = ["measure", "baseline", "follow-up", "change (%)"]
_NIFTI = [".nii", ".nii.gz"]
_BOX = 120  # px: four upload boxes per time point


def followup_viewer_html(name: str, result_id: str | None) -> str:
    """An embedded viewer of one time point (its label map, T1ce and target lesions'
    diameters), or a note before the first comparison."""
    if result_id is None:
        return f'<p class="viewer-note">The {TIME_POINT_NAMES[name]} viewer opens here after <b>Compare</b>.</p>'
    src = html.escape(f"{VIEWER_MOUNT.lstrip('/')}/viewer/{result_id}", quote=True)
    return (
        f'<iframe id="followup-viewer-{name}" src="{src}" title="{TIME_POINT_NAMES[name]} viewer" loading="lazy" '
        f'style="width:100%;height:{VIEWER_HEIGHT}px;border:1px solid #ccc;border-radius:6px"></iframe>'
        f'<p><a href="{src}" target="_blank" rel="noopener">Open the {TIME_POINT_NAMES[name]} viewer in a new tab'
        "</a></p>"
    )


def followup_section(
    service: SegmentationService, results: ResultStore, max_zip_bytes: int, concurrency: int = 1
) -> None:
    """The follow-up section of the demo, built inside the caller's ``gr.Blocks``."""

    def run(
        baseline_flair: str | None,
        baseline_t1ce: str | None,
        baseline_zip: str | None,
        baseline_seg: str | None,
        followup_flair: str | None,
        followup_t1ce: str | None,
        followup_zip: str | None,
        followup_seg: str | None,
        preprocess: str = "auto",
    ) -> tuple[Any, ...]:
        given = {
            "baseline": (baseline_flair, baseline_t1ce, baseline_zip, baseline_seg),
            "followup": (followup_flair, followup_t1ce, followup_zip, followup_seg),
        }
        with user_errors("comparing", "follow-up refused", "follow-up comparison failed"):
            with request_workdir() as workdir:
                points = {}
                for name in TIME_POINTS:
                    flair, t1ce, zip_file, seg = given[name]
                    folder = workdir / name
                    folder.mkdir()
                    try:
                        source = case_from_inputs(flair, t1ce, None, None, zip_file, folder, max_zip_bytes)
                    except (gr.Error, BratsegError) as exc:  # say which time point
                        message = exc.message if isinstance(exc, gr.Error) else str(exc)
                        title = TIME_POINT_NAMES[name].capitalize()
                        raise gr.Error(f"{title}: {message}", print_exception=False) from None
                    points[name] = TimePointUpload(source, Path(seg) if seg else None)
                comparison = compare(service, points, results, workdir, parse_preprocess(preprocess))
        body = comparison.body
        log.info("follow-up compared: %s", body["response"])
        report = None
        if REPORT in comparison.files:
            report = OUTPUTS.new_file(comparison.files[REPORT].download_name)
            report.write_bytes(comparison.files[REPORT].data)
        summary = OUTPUTS.new_file(comparison.files[FOLLOWUP_JSON].download_name)
        summary.write_text(json.dumps(body, indent=2), encoding="utf-8")
        return (
            response_markdown(body),
            measurement_rows(body),
            None if report is None else str(report),
            str(summary),
            followup_viewer_html("baseline", comparison.keys["baseline"]),
            followup_viewer_html("followup", comparison.keys["followup"]),
        )

    with gr.Accordion("Follow-up: compare two time points (RANO response assessment)", open=False):
        gr.Markdown(
            "Upload the same patient's **baseline** and **follow-up** scans (FLAIR and T1ce, or one `.zip` each), "
            "and optionally a label map of either to use instead of segmenting, then press **Compare**. Each scan is "
            "measured (RANO: perpendicular diameters of the enhancing lesions, their sum of products, volumes), the "
            "follow-up is registered to the baseline, and the change gives a RANO 2.0 category from the imaging "
            "alone. *Research demo, not for diagnosis.*"
        )
        inputs = []
        with gr.Row():
            for name in TIME_POINTS:
                title = TIME_POINT_NAMES[name]
                with gr.Column():
                    gr.Markdown(f"**{title.capitalize()}**")
                    with gr.Row():
                        flair = gr.File(label="FLAIR", file_types=_NIFTI, height=_BOX, elem_id=f"{name}-flair")
                        t1ce = gr.File(label="T1ce", file_types=_NIFTI, height=_BOX, elem_id=f"{name}-t1ce")
                    with gr.Row():
                        zip_file = gr.File(label="or one .zip", file_types=[".zip"], height=_BOX, elem_id=f"{name}-zip")
                        seg = gr.File(
                            label="label map (optional)", file_types=_NIFTI, height=_BOX, elem_id=f"{name}-seg"
                        )
                    inputs += [flair, t1ce, zip_file, seg]
        preprocess = gr.Radio(
            list(PREPROCESS_CHOICES), value="auto", label="Preprocessing (both time points)", elem_id="followup-prep"
        )
        button = gr.Button("Compare", variant="primary", elem_id="followup-compare")
        result = gr.Markdown(elem_id="followup-result")
        table = gr.Dataframe(headers=TABLE_COLUMNS, label="Measurements", interactive=False, elem_id="followup-table")
        with gr.Row():
            report = gr.File(label="Follow-up report (PDF)", interactive=False, height=_BOX, elem_id="followup-report")
            summary = gr.File(label="followup.json", interactive=False, height=_BOX, elem_id="followup-json")
        with gr.Tabs():
            with gr.Tab("Baseline viewer"):
                baseline_viewer = gr.HTML(followup_viewer_html("baseline", None), elem_id="followup-baseline-viewer")
            with gr.Tab("Follow-up viewer"):
                followup_viewer = gr.HTML(followup_viewer_html("followup", None), elem_id="followup-followup-viewer")
        button.click(
            run,
            inputs=[*inputs, preprocess],
            outputs=[result, table, report, summary, baseline_viewer, followup_viewer],
            api_name="followup",
            concurrency_limit=concurrency,
        )
