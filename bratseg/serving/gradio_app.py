"""The Gradio demo: upload a BraTS case, see the predicted tumour regions slice by slice.

:func:`build_demo` wires the page to an :class:`~bratseg.serving.service.InferenceService`
(one model, loaded once, shared by every visitor); ``app.py`` at the repository root parses
the command line and calls :func:`launch`.

The model runs only in the ``segment`` event. Its :class:`~bratseg.inference.predictor.Prediction`
is kept in the visitor's session (``gr.State``), so choosing another region, view or slice
only re-renders a picture (the ``render`` and ``view`` events), which takes milliseconds.

The interactive viewer is the Flask app's (:mod:`bratseg.serving.viewer`), mounted in the
demo's own server under ``/bratseg`` and embedded in an iframe (``gr.HTML`` runs no
scripts, an iframe's page does); its files come from the demo's
:class:`~bratseg.serving.results.ResultStore`. Uploads and outputs stay in a private
folder of the process (:mod:`bratseg.serving.demo_files`), removed at exit.

API endpoints (for ``gradio_client``; the session's prediction is implicit):

* ``/segment`` (flair, t1ce, t1, t2, zip, region, view, preprocess = auto) -> overlay, legend, slice, volumes,
  segmentation file, seconds, status, viewer (HTML of the embedded viewer), confidence
  (Markdown: score, flag and warnings), report (PDF file)
* ``/render`` (region, view, slice) -> overlay, legend
* ``/view`` (region, view) -> overlay, legend, slice (moved to the view's best slice)
* ``/load_example`` () -> flair, t1ce, t1, t2, zip, status (a synthetic case's files)
* ``/followup``: two time points compared (:mod:`bratseg.serving.gradio_followup`)

Example:
    >>> from bratseg.serving.service import InferenceService        # doctest: +SKIP
    >>> demo = build_demo(InferenceService())                        # doctest: +SKIP
    >>> launch(demo, host="127.0.0.1", port=7860)                   # doctest: +SKIP
"""

from __future__ import annotations

import logging
from typing import Any

import gradio as gr

from bratseg.data.labels import ORIGINAL_PARTS
from bratseg.errors import BratsegError
from bratseg.inference.prediction import Prediction
from bratseg.inference.segment import PREPROCESS_CHOICES
from bratseg.reporting.render import AXES
from bratseg.serving.demo_files import private_cache
from bratseg.serving.demo_parts import (
    OUTPUTS,
    VIEWER_MOUNT,
    VOLUME_COLUMNS,
    case_from_inputs,
    confidence_markdown,
    draw,
    is_synthetic,
    preprocessing_markdown,
    slice_range,
    slider,
    slim,
    synthetic_example,
    viewer_html,
    volumes_table,
)
from bratseg.serving.gradio_followup import followup_section
from bratseg.serving.legend import legend_html
from bratseg.serving.results import REPORT, Result, ResultStore, build_result
from bratseg.serving.shown import SegmentationService, parse_preprocess, segment_for_viewing
from bratseg.serving.uploads import request_workdir

log = logging.getLogger("bratseg.gradio")

# The original app's four ``part_of_tumor`` choices first (values kept verbatim so old
# scripts still work), then the three regions BraTS is scored on.
REGION_CHOICES: list[tuple[str, str]] = [(f"{part} ({ORIGINAL_PARTS[part]})", part) for part in ORIGINAL_PARTS] + [
    (f"{name} (BraTS {key})", name)
    for key, name in (("WT", "whole tumour"), ("TC", "tumour core"), ("ET", "enhancing tumour"))
]
DEFAULT_REGION = "all_the_tumor"
DEFAULT_VIEW = "axial"
NIFTI_TYPES = [".nii", ".nii.gz"]
DEFAULT_MAX_ZIP_BYTES = 2_000_000_000  # four float32 BraTS volumes are ~150 MB; room for big grids
# Gradio's cache: every 10 minutes, files older than an hour go (uploads are patient data).
DELETE_CACHE = (600, 3600)
# A session's prediction holds its labels and FLAIR (~45 MB for a BraTS case); drop it when
# the visitor has not segmented anything for this long, as Gradio keeps open tabs' state.
STATE_TTL_S = 3600
NO_PREDICTION = "Nothing segmented yet in this session: upload a case and press Segment."
FILE_BOX = 140  # px: the upload boxes must fit beside the picture
CSS = """
/* Slices are ~240 voxels: enlarge them to the column (Gradio's own rules need !important),
   keeping label edges crisp. */
#overlay button, #overlay .image-frame { width: 100%; }
#overlay .image-frame { padding-top: 28px; }  /* clear of the component's label */
#overlay .image-frame img {
  width: 100% !important; max-width: 480px !important; height: auto !important; max-height: none !important;
  object-fit: contain !important; margin: 0 auto; display: block; image-rendering: pixelated;
}
#status { min-height: 1.5em; }
"""


# ------------------------------------------------------------------------------ helpers


def _nifti_box(label: str, elem_id: str) -> gr.File:
    return gr.File(label=label, file_types=NIFTI_TYPES, height=FILE_BOX, elem_id=elem_id)


def build_demo(
    service: SegmentationService,
    concurrency: int = 2,
    max_queue: int = 16,
    max_zip_bytes: int = DEFAULT_MAX_ZIP_BYTES,
    results: ResultStore | None = None,
) -> gr.Blocks:
    """The demo page, its events and its queue, around ``service`` (which loads the model).

    Args:
        service: anything with ``segment(case) -> Prediction``, usually an
            :class:`~bratseg.serving.service.InferenceService`.
        concurrency: predictions Gradio runs at once (match the service's ``max_concurrent``);
            re-rendering is cheap and allowed more.
        max_queue: requests allowed to wait; beyond it visitors are told the queue is full.
        max_zip_bytes: the most a zipped case may hold uncompressed.
        results: where results are kept for the embedded viewer (default: a new store);
            :func:`launch` serves the viewer from it.
    """
    private_cache()  # before gr.Blocks: Gradio reads its cache folder when a Blocks is made
    results = ResultStore() if results is None else results

    def predict(flair, t1ce, t1, t2, zip_file, preprocess) -> tuple[Prediction, Result, str, str]:
        """Predict (on the native path for scans not in BraTS space), keep the result for the
        viewer, write the downloads; every failure becomes a message for the user."""
        try:
            with request_workdir() as workdir:
                case = case_from_inputs(flair, t1ce, t1, t2, zip_file, workdir, max_zip_bytes)
                shown = segment_for_viewing(service, case, parse_preprocess(preprocess))
                prediction = shown.prediction
                # Read the scans the viewer shows while the request folder still holds them.
                result = build_result(
                    prediction,
                    shown.scans,
                    max_bytes=results.max_result_bytes,
                    model_space=shown.model_space,
                    preprocessing=shown.preprocessing,
                )
            key = results.put(result)
            out = OUTPUTS.new_file(f"{prediction.volumes.case_id}_seg.nii.gz")
            out.write_bytes(result.files["labels.nii.gz"].data)
            return prediction, result, key, str(out)
        except gr.Error:
            raise
        except BratsegError as exc:
            # Bad input (or a busy or broken model): the message names the file and the problem.
            log.info("refused input: %s", exc)
            raise gr.Error(str(exc), print_exception=False) from None
        except Exception as exc:
            log.exception("segmentation failed")
            raise gr.Error(
                f"Unexpected error while segmenting this case ({type(exc).__name__}: {exc}); "
                "the server log has the details.",
                print_exception=False,
            ) from None

    def segment(
        flair: str | None,
        t1ce: str | None,
        t1: str | None,
        t2: str | None,
        zip_file: str | None,
        region: str,
        view: str,
        preprocess: str = "auto",
    ) -> tuple[Any, ...]:
        prediction, result, key, labels_file = predict(flair, t1ce, t1, t2, zip_file, preprocess)
        vols = prediction.volumes
        log.info("segmented %s %s in %.2f s", vols.case_id, "x".join(map(str, vols.shape)), prediction.seconds)
        prediction = slim(prediction)
        try:
            n, best = slice_range(prediction, region, view)
        except Exception as exc:
            log.exception("choosing a slice of %s failed", vols.case_id)
            raise gr.Error(f"Could not choose a slice of {vols.case_id}: {exc}", print_exception=False) from None
        image, legend = draw(prediction, region, view, best)
        synthetic = " — a **synthetic** example, not a patient scan" if is_synthetic(vols.case_id) else ""
        spacing = " × ".join(f"{s:g}" for s in vols.spacing)
        status = (
            f"Segmented **{vols.case_id}**{synthetic}: {' × '.join(map(str, vols.shape))} voxels of "
            f"{spacing} mm, in {prediction.seconds:.1f} s. {preprocessing_markdown(result)}"
        )
        report = None
        if REPORT in result.files:
            report = OUTPUTS.new_file(result.files[REPORT].download_name)
            report.write_bytes(result.files[REPORT].data)
        return (
            prediction,
            image,
            legend,
            slider(view, n, best),
            volumes_table(prediction),
            labels_file,
            round(prediction.seconds, 2),
            status,
            viewer_html(key),
            confidence_markdown(result),
            gr.DownloadButton(value=None if report is None else str(report), interactive=report is not None),
        )

    def render(prediction: Prediction | None, region: str, view: str, index: float) -> tuple[Any, Any]:
        if prediction is None:  # nothing segmented yet, or the session's prediction expired
            gr.Warning(NO_PREDICTION)
            return gr.skip(), legend_html(region)
        return draw(prediction, region, view, int(index))

    def change_view(prediction: Prediction | None, region: str, view: str) -> tuple[Any, Any, Any]:
        if prediction is None:
            gr.Warning(NO_PREDICTION)
            return gr.skip(), gr.skip(), gr.skip()
        try:
            n, best = slice_range(prediction, region, view)
        except Exception as exc:
            log.exception("choosing a slice failed")
            raise gr.Error(f"Could not choose a {view} slice: {exc}", print_exception=False) from None
        image, legend = draw(prediction, region, view, best)
        return image, legend, slider(view, n, best)

    def load_example() -> tuple[Any, ...]:
        case = synthetic_example()
        files = [str(case.images[m]) for m in ("flair", "t1ce", "t1", "t2")]
        status = f"Loaded **{case.case_id}**, a **synthetic** example (generated shapes, not a patient scan)."
        return (*files, None, status)

    with gr.Blocks(
        title="bratseg: brain-tumour segmentation", analytics_enabled=False, delete_cache=DELETE_CACHE
    ) as demo:
        gr.Markdown(
            "# bratseg: brain-tumour segmentation\n"
            "Upload an MRI case (FLAIR and T1ce are required, T1 and T2 optional; `.nii` or `.nii.gz`, in BraTS "
            "space or as scanned), or one `.zip` of a case folder or a DICOM study, and press **Segment**. "
            "A 2-D U-Net labels necrotic core, edema and "
            "enhancing tumour. *Research demo, not for diagnosis.*"
        )
        prediction_state = gr.State(None, time_to_live=STATE_TTL_S)
        with gr.Row():
            with gr.Column(scale=1):
                with gr.Tabs():
                    with gr.Tab("NIfTI files"):
                        with gr.Row():
                            flair = _nifti_box("FLAIR (required)", "flair")
                            t1ce = _nifti_box("T1ce (required)", "t1ce")
                        with gr.Row():
                            t1 = _nifti_box("T1 (optional)", "t1")
                            t2 = _nifti_box("T2 (optional)", "t2")
                    with gr.Tab("Zipped case folder or DICOM study"):
                        zip_file = gr.File(
                            label="One .zip of a case folder (any BraTS naming, any depth) or of a DICOM study",
                            file_types=[".zip"],
                            height=FILE_BOX,
                            elem_id="zip",
                        )
                preprocess = gr.Radio(
                    list(PREPROCESS_CHOICES),
                    value="auto",
                    label="Preprocessing",
                    info="auto: scans not in BraTS space (with skull, any grid, DICOM) are skull-stripped and "
                    "registered first; native: always; none: the scans are already in BraTS space",
                    elem_id="preprocess",
                )
                with gr.Row():
                    segment_button = gr.Button("Segment", variant="primary", elem_id="segment")
                    example_button = gr.Button("Load synthetic example", elem_id="example")
                status = gr.Markdown(elem_id="status")
                confidence = gr.Markdown(elem_id="confidence")
                with gr.Row():
                    seconds = gr.Number(label="Prediction time (s)", precision=2, interactive=False, elem_id="seconds")
                    download = gr.File(
                        label="Segmentation (NIfTI, labels 0/1/2/4)",
                        interactive=False,
                        height=FILE_BOX,
                        elem_id="download",
                    )
                volumes = gr.Dataframe(
                    headers=VOLUME_COLUMNS, label="Region volumes", interactive=False, elem_id="volumes"
                )
                report = gr.DownloadButton("Download the PDF report", interactive=False, elem_id="report")
            with gr.Column(scale=1):
                with gr.Row():
                    region = gr.Dropdown(REGION_CHOICES, value=DEFAULT_REGION, label="Region", elem_id="region")
                    view = gr.Radio(list(AXES), value=DEFAULT_VIEW, label="View", elem_id="view")
                index = gr.Slider(
                    0, 154, value=77, step=1, precision=0, label="Axial slice", interactive=False, elem_id="slice"
                )
                overlay = gr.Image(
                    label="Prediction over FLAIR",
                    type="numpy",
                    format="png",  # lossless: label edges must not smear
                    interactive=False,
                    buttons=["download", "fullscreen"],  # no "share": it would upload to a third party
                    alt_text="FLAIR slice with the predicted tumour region in colour",
                    elem_id="overlay",
                )
                legend = gr.HTML(legend_html(DEFAULT_REGION), elem_id="legend")
        with gr.Accordion("Interactive 3-D viewer: all regions, three planes and 3-D, uncertainty map", open=True):
            viewer = gr.HTML(viewer_html(None), elem_id="viewer")
        followup_section(service, results, max_zip_bytes, concurrency)  # two time points: /followup

        segment_event = dict(
            fn=segment,
            inputs=[flair, t1ce, t1, t2, zip_file, region, view, preprocess],
            outputs=[
                prediction_state,
                *(overlay, legend, index, volumes, download, seconds, status, viewer, confidence, report),
            ],
        )
        segment_button.click(**segment_event, api_name="segment")
        example_button.click(
            load_example, outputs=[flair, t1ce, t1, t2, zip_file, status], api_name="load_example"
        ).success(**segment_event, api_visibility="private")
        # .input fires on the visitor's changes only, not when ``segment`` moves the slider;
        # always_last drops the intermediate positions of a drag that rendering cannot keep up with.
        gr.on(
            [region.input, index.input],
            render,
            inputs=[prediction_state, region, view, index],
            outputs=[overlay, legend],
            api_name="render",
            trigger_mode="always_last",
            concurrency_limit=4 * concurrency,
            show_progress="hidden",
        )
        view.input(
            change_view,
            inputs=[prediction_state, region, view],
            outputs=[overlay, legend, index],
            api_name="view",
            concurrency_limit=4 * concurrency,
            show_progress="hidden",
        )
    demo.queue(default_concurrency_limit=concurrency, max_size=max_queue)
    demo.bratseg_results = results  # what launch() serves the viewer from
    return demo


def viewer_routes(demo: gr.Blocks) -> list[Any]:
    """The Flask viewer (:func:`~bratseg.serving.viewer.create_viewer_app`) on ``demo``'s
    results, as a route to mount at :data:`VIEWER_MOUNT` of the demo's server."""
    from a2wsgi import WSGIMiddleware
    from starlette.routing import Mount

    from bratseg.serving.viewer import create_viewer_app

    return [Mount(VIEWER_MOUNT, app=WSGIMiddleware(create_viewer_app(demo.bratseg_results)))]


def launch(
    demo: gr.Blocks,
    host: str = "127.0.0.1",
    port: int = 7860,
    max_upload_mb: int = 1024,
    max_sessions: int = 64,
    prevent_thread_lock: bool = False,
) -> None:
    """Serve ``demo`` locally with no network needs: no share link, no server-side
    rendering (which wants Node), no MCP server, the theme's fonts served by Gradio itself;
    the viewer is mounted at :data:`VIEWER_MOUNT` (routes given to the server before
    Gradio's own, so they come first)."""
    demo.launch(
        server_name=host,
        server_port=port,
        share=False,
        ssr_mode=False,
        mcp_server=False,
        pwa=False,
        show_error=False,  # only our gr.Error messages reach the page, never a traceback
        max_file_size=f"{max_upload_mb}mb",
        state_session_capacity=max_sessions,
        prevent_thread_lock=prevent_thread_lock,
        css=CSS,
        footer_links=["api", "settings"],
        app_kwargs={"routes": viewer_routes(demo)},
    )
