"""The Gradio demo: upload a BraTS case, see the predicted tumour regions slice by slice.

:func:`build_demo` wires the page (:mod:`bratseg.serving.gradio_page`) to an
:class:`~bratseg.serving.service.InferenceService` (one model, loaded once, shared by every
visitor); ``app.py`` at the repository root parses the command line and calls :func:`launch`.

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
from collections.abc import Callable
from typing import Any

import gradio as gr

from bratseg.inference.prediction import Prediction
from bratseg.serving.demo_files import private_cache
from bratseg.serving.gradio_followup import followup_section
from bratseg.serving.gradio_page import Page, layout
from bratseg.serving.gradio_parts import (
    OUTPUTS,
    VIEWER_MOUNT,
    case_from_inputs,
    confidence_markdown,
    draw,
    is_synthetic,
    preprocessing_markdown,
    slice_range,
    slider,
    slim,
    synthetic_example,
    user_errors,
    viewer_html,
    volumes_table,
)
from bratseg.serving.legend import legend_html
from bratseg.serving.results import REPORT, Result, ResultStore, build_result
from bratseg.serving.uploads import request_workdir
from bratseg.serving.web_prediction import SegmentationService, parse_preprocess, segment_for_viewing

log = logging.getLogger("bratseg.gradio")

DEFAULT_MAX_ZIP_BYTES = 2_000_000_000  # four float32 BraTS volumes are ~150 MB; room for big grids
# Gradio's cache: every 10 minutes, files older than an hour go (uploads are patient data).
DELETE_CACHE = (600, 3600)
NO_PREDICTION = "Nothing segmented yet in this session: upload a case and press Segment."
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
    segment = _segment_handler(service, results, max_zip_bytes)
    with gr.Blocks(
        title="bratseg: brain-tumour segmentation", analytics_enabled=False, delete_cache=DELETE_CACHE
    ) as demo:
        page = layout()
        followup_section(service, results, max_zip_bytes, concurrency)  # two time points: /followup
        _wire_events(page, segment, concurrency)
    demo.queue(default_concurrency_limit=concurrency, max_size=max_queue)
    demo.bratseg_results = results  # what launch() serves the viewer from
    return demo


# ------------------------------------------------------------------------------ events


def _predict(
    service: SegmentationService,
    results: ResultStore,
    max_zip_bytes: int,
    inputs: tuple[str | None, ...],
    preprocess: str,
) -> tuple[Prediction, Result, str, str]:
    """Predict the case of ``inputs`` (flair, t1ce, t1, t2, zip; on the native path for scans
    not in BraTS space), keep the result for the viewer, write the downloads; every failure
    becomes a message for the user."""
    with user_errors("segmenting this case", "refused input", "segmentation failed"):
        with request_workdir() as workdir:
            case = case_from_inputs(*inputs, workdir, max_zip_bytes)
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


def _segment_handler(service: SegmentationService, results: ResultStore, max_zip_bytes: int) -> Callable[..., Any]:
    """The ``segment`` event (its parameter names are the ``/segment`` endpoint's)."""

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
        inputs = (flair, t1ce, t1, t2, zip_file)
        prediction, result, key, labels_file = _predict(service, results, max_zip_bytes, inputs, preprocess)
        vols = prediction.volumes
        log.info("segmented %s %s in %.2f s", vols.case_id, "x".join(map(str, vols.shape)), prediction.seconds)
        prediction = slim(prediction)
        try:
            n, best = slice_range(prediction, region, view)
        except Exception as exc:
            log.exception("choosing a slice of %s failed", vols.case_id)
            raise gr.Error(f"Could not choose a slice of {vols.case_id}: {exc}", print_exception=False) from None
        image, legend = draw(prediction, region, view, best)
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
            _status(prediction, result),
            viewer_html(key),
            confidence_markdown(result),
            gr.DownloadButton(value=None if report is None else str(report), interactive=report is not None),
        )

    return segment


def _status(prediction: Prediction, result: Result) -> str:
    """The status line after ``segment``: the case, its grid, the time and the preprocessing."""
    vols = prediction.volumes
    synthetic = " — a **synthetic** example, not a patient scan" if is_synthetic(vols.case_id) else ""
    spacing = " × ".join(f"{s:g}" for s in vols.spacing)
    return (
        f"Segmented **{vols.case_id}**{synthetic}: {' × '.join(map(str, vols.shape))} voxels of "
        f"{spacing} mm, in {prediction.seconds:.1f} s. {preprocessing_markdown(result)}"
    )


def render(prediction: Prediction | None, region: str, view: str, index: float) -> tuple[Any, Any]:
    # The ``render`` event: another region or slice (no docstring: Gradio would show it in the API page).
    if prediction is None:  # nothing segmented yet, or the session's prediction expired
        gr.Warning(NO_PREDICTION)
        return gr.skip(), legend_html(region)
    return draw(prediction, region, view, int(index))


def change_view(prediction: Prediction | None, region: str, view: str) -> tuple[Any, Any, Any]:
    # The ``view`` event: another view, at its best slice.
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
    # The ``load_example`` event: the synthetic case's files in the upload boxes.
    case = synthetic_example()
    files = [str(case.images[m]) for m in ("flair", "t1ce", "t1", "t2")]
    status = f"Loaded **{case.case_id}**, a **synthetic** example (generated shapes, not a patient scan)."
    return (*files, None, status)


def _wire_events(page: Page, segment: Callable[..., Any], concurrency: int) -> None:
    """The page's events, in the order the API lists them."""
    segment_event = dict(
        fn=segment,
        inputs=[page.flair, page.t1ce, page.t1, page.t2, page.zip_file, page.region, page.view, page.preprocess],
        outputs=[
            page.prediction,
            *(page.overlay, page.legend, page.index, page.volumes, page.download, page.seconds),
            *(page.status, page.viewer, page.confidence, page.report),
        ],
    )
    page.segment_button.click(**segment_event, api_name="segment")
    page.example_button.click(
        load_example,
        outputs=[page.flair, page.t1ce, page.t1, page.t2, page.zip_file, page.status],
        api_name="load_example",
    ).success(**segment_event, api_visibility="private")
    # .input fires on the visitor's changes only, not when ``segment`` moves the slider;
    # always_last drops the intermediate positions of a drag that rendering cannot keep up with.
    gr.on(
        [page.region.input, page.index.input],
        render,
        inputs=[page.prediction, page.region, page.view, page.index],
        outputs=[page.overlay, page.legend],
        api_name="render",
        trigger_mode="always_last",
        concurrency_limit=4 * concurrency,
        show_progress="hidden",
    )
    page.view.input(
        change_view,
        inputs=[page.prediction, page.region, page.view],
        outputs=[page.overlay, page.legend, page.index],
        api_name="view",
        concurrency_limit=4 * concurrency,
        show_progress="hidden",
    )


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
