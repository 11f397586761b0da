"""The Gradio demo: upload a BraTS case, see the predicted tumour regions slice by slice.

:func:`build_demo` wires the page to an :class:`~bratseg.serving.service.InferenceService`
(one model, loaded once, shared by every visitor); ``app.py`` at the repository root parses
the command line and calls :func:`launch`.

The model runs only in the ``segment`` event. Its :class:`~bratseg.inference.predictor.Prediction`
is kept in the visitor's session (``gr.State``), so choosing another region, view or slice
only re-renders a picture (the ``render`` and ``view`` events), which takes milliseconds.

API endpoints (for ``gradio_client``; the session's prediction is implicit):

* ``/segment`` (flair, t1ce, t1, t2, zip, region, view) -> overlay, legend, slice, volumes,
  segmentation file, seconds, status
* ``/render`` (region, view, slice) -> overlay, legend
* ``/view`` (region, view) -> overlay, legend, slice (moved to the view's best slice)
* ``/load_example`` () -> flair, t1ce, t1, t2, zip, status (a synthetic case's files)

Example:
    >>> from bratseg.serving.service import InferenceService        # doctest: +SKIP
    >>> demo = build_demo(InferenceService())                        # doctest: +SKIP
    >>> launch(demo, host="127.0.0.1", port=7860)                   # doctest: +SKIP
"""

from __future__ import annotations

import atexit
import logging
import shutil
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Protocol

import gradio as gr
import numpy as np
import pandas as pd

from bratseg.data.io import CaseVolumes
from bratseg.data.layout import Case
from bratseg.errors import BratsegError
from bratseg.inference.predictor import Prediction
from bratseg.inference.regions import ORIGINAL_PARTS, REGION_LABELS, resolve_region
from bratseg.serving.render import AXES, best_slice, legend_html, render_overlay, slice_count
from bratseg.serving.uploads import case_from_uploads, case_from_zip, request_workdir
from bratseg.synthetic import write_synthetic_case

log = logging.getLogger("bratseg.gradio")

# The original app's four ``part_of_tumor`` choices first (values kept verbatim so old
# scripts still work), then the three regions BraTS is scored on.
REGION_CHOICES: list[tuple[str, str]] = [(f"{part} ({ORIGINAL_PARTS[part]})", part) for part in ORIGINAL_PARTS] + [
    (f"{name} (BraTS {key})", name)
    for key, name in (("WT", "whole tumour"), ("TC", "tumour core"), ("ET", "enhancing tumour"))
]
DEFAULT_REGION = "all_the_tumor"
DEFAULT_VIEW = "axial"
VOLUME_COLUMNS = ["region", "volume (cm³)"]
NIFTI_TYPES = [".nii", ".nii.gz"]
SYNTHETIC_PREFIX = "SYNTHETIC"
EXAMPLE_CASE_ID = "SYNTHETIC_EXAMPLE"
DEFAULT_MAX_ZIP_BYTES = 2_000_000_000  # four float32 BraTS volumes are ~150 MB; room for big grids
OUTPUT_MAX_AGE_S = 3600.0
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


class SegmentationService(Protocol):
    """What the demo needs of a service: :class:`~bratseg.serving.service.InferenceService`."""

    def segment(self, case: Case) -> Prediction: ...


# ------------------------------------------------------------------------------ helpers


class _OutputFolder:
    """Where segmentations are written for download: one private temp folder per process.

    Gradio copies each returned file into its own cache (cleaned by ``delete_cache``), so
    our copy is only needed briefly; entries older than ``max_age`` seconds are pruned at
    each write and the folder is removed when the process exits.
    """

    def __init__(self, max_age: float = OUTPUT_MAX_AGE_S):
        self.max_age = max_age
        self._root: Path | None = None
        self._lock = threading.Lock()

    def new_file(self, name: str) -> Path:
        with self._lock:
            if self._root is None:
                self._root = Path(tempfile.mkdtemp(prefix="bratseg-gradio-out-"))
                atexit.register(shutil.rmtree, self._root, True)
            cutoff = time.time() - self.max_age
            for entry in self._root.iterdir():
                if entry.stat().st_mtime < cutoff:
                    shutil.rmtree(entry, ignore_errors=True)
            folder = self._root / uuid.uuid4().hex
            folder.mkdir()
        return folder / name


_OUTPUTS = _OutputFolder()
_EXAMPLE_LOCK = threading.Lock()
_EXAMPLE: Case | None = None


def synthetic_example() -> Case:
    """The demo's example: a full-size synthetic case, generated on first use into a temp
    folder (removed at exit) and reused afterwards. Its id starts with ``SYNTHETIC``."""
    global _EXAMPLE
    with _EXAMPLE_LOCK:
        if _EXAMPLE is None or not all(p.is_file() for p in _EXAMPLE.images.values()):
            root = Path(tempfile.mkdtemp(prefix="bratseg-example-"))
            atexit.register(shutil.rmtree, root, True)
            _EXAMPLE = write_synthetic_case(root / EXAMPLE_CASE_ID, seed=0)
        return _EXAMPLE


def is_synthetic(case_id: str) -> bool:
    return case_id.upper().startswith(SYNTHETIC_PREFIX)


def volumes_table(prediction: Prediction) -> pd.DataFrame:
    """Region volumes in cm3, BraTS regions first."""
    volumes = prediction.region_volumes()
    return pd.DataFrame([(name, volumes[name]) for name in REGION_LABELS], columns=VOLUME_COLUMNS)


def _slim(prediction: Prediction) -> Prediction:
    """The prediction as kept in the session: labels plus the FLAIR the overlay is drawn on.

    The other three input volumes (~110 MB for a BraTS case) are never drawn, and every
    open browser tab holds one prediction, so they are dropped.
    """
    vols = prediction.volumes
    slim = CaseVolumes(vols.case_id, {"flair": vols.images["flair"]}, vols.affine, vols.header)
    return Prediction(prediction.labels, slim, prediction.seconds)


def _draw(prediction: Prediction, region: str, view: str, index: int) -> tuple[np.ndarray, str]:
    """Overlay and legend of one slice; bad arguments become a message for the user."""
    try:
        image = render_overlay(prediction.volumes, prediction.labels, region, axis=view, index=int(index))
    except (KeyError, ValueError) as exc:
        raise gr.Error(str(exc).strip("'\""), print_exception=False) from None
    return image, legend_html(region)


def _best(prediction: Prediction, region: str, view: str) -> tuple[int, int]:
    """(number of slices, slice with the most of ``region``) along ``view``."""
    vols = prediction.volumes
    n = slice_count(vols.shape, view, vols.affine)
    best = best_slice(
        prediction.labels, view, region=resolve_region(region), affine=vols.affine, brain=vols.images["flair"] != 0
    )
    return n, best


def _slider(view: str, n: int, value: int) -> gr.Slider:
    return gr.Slider(
        minimum=0, maximum=n - 1, value=value, step=1, label=f"{view.capitalize()} slice", interactive=True
    )


def _case_from_inputs(
    flair: str | None,
    t1ce: str | None,
    t1: str | None,
    t2: str | None,
    zip_file: str | None,
    workdir: Path,
    max_zip_bytes: int,
) -> Case:
    nifti = {"flair": flair, "t1ce": t1ce, "t1": t1, "t2": t2}
    given = {k: Path(v) for k, v in nifti.items() if v}
    if zip_file and given:
        raise gr.Error(
            "Give either NIfTI files or one .zip, not both: clear the files or the zip.", print_exception=False
        )
    if zip_file:
        return case_from_zip(Path(zip_file), workdir, max_zip_bytes)
    if not given:
        raise gr.Error(
            "Upload the FLAIR and T1ce images (.nii or .nii.gz), or one .zip of a case folder, then press Segment.",
            print_exception=False,
        )
    return case_from_uploads(given, workdir=workdir)


# --------------------------------------------------------------------------------- demo


def _nifti_box(label: str, elem_id: str) -> gr.File:
    return gr.File(label=label, file_types=NIFTI_TYPES, height=FILE_BOX, elem_id=elem_id)


def build_demo(
    service: SegmentationService,
    concurrency: int = 2,
    max_queue: int = 16,
    max_zip_bytes: int = DEFAULT_MAX_ZIP_BYTES,
) -> gr.Blocks:
    """The demo page, its events and its queue, around ``service`` (which loads the model).

    Args:
        service: anything with ``segment(case) -> Prediction``, usually an
            :class:`~bratseg.serving.service.InferenceService`.
        concurrency: predictions Gradio runs at once (match the service's ``max_concurrent``);
            re-rendering is cheap and allowed more.
        max_queue: requests allowed to wait; beyond it visitors are told the queue is full.
        max_zip_bytes: the most a zipped case may hold uncompressed.
    """

    def segment(
        flair: str | None,
        t1ce: str | None,
        t1: str | None,
        t2: str | None,
        zip_file: str | None,
        region: str,
        view: str,
    ) -> tuple[Any, ...]:
        try:
            with request_workdir() as workdir:
                case = _case_from_inputs(flair, t1ce, t1, t2, zip_file, workdir, max_zip_bytes)
                # The prediction holds the volumes in memory, so the request folder can go.
                prediction = service.segment(case)
            out = _OUTPUTS.new_file(f"{prediction.volumes.case_id}_seg.nii.gz")
            prediction.save(out)
        except gr.Error:
            raise
        except BratsegError as exc:
            # Bad input (or a busy or broken model): the message names the file and the problem.
            log.info("refused input: %s", exc)
            raise gr.Error(str(exc), print_exception=False) from None
        except Exception:
            log.exception("segmentation failed")
            raise gr.Error(
                "Unexpected error while segmenting this case; the server log has the details.", print_exception=False
            ) from None
        vols = prediction.volumes
        log.info("segmented %s %s in %.2f s", vols.case_id, "x".join(map(str, vols.shape)), prediction.seconds)
        prediction = _slim(prediction)
        n, best = _best(prediction, region, view)
        image, legend = _draw(prediction, region, view, best)
        synthetic = " — a **synthetic** example, not a patient scan" if is_synthetic(vols.case_id) else ""
        spacing = " × ".join(f"{s:g}" for s in vols.spacing)
        status = (
            f"Segmented **{vols.case_id}**{synthetic}: {' × '.join(map(str, vols.shape))} voxels of "
            f"{spacing} mm, in {prediction.seconds:.1f} s."
        )
        return (
            prediction,
            image,
            legend,
            _slider(view, n, best),
            volumes_table(prediction),
            str(out),
            round(prediction.seconds, 2),
            status,
        )

    def render(prediction: Prediction | None, region: str, view: str, index: float) -> tuple[Any, Any]:
        if prediction is None:  # nothing segmented yet, or the session's prediction expired
            gr.Warning(NO_PREDICTION)
            return gr.skip(), legend_html(region)
        return _draw(prediction, region, view, int(index))

    def change_view(prediction: Prediction | None, region: str, view: str) -> tuple[Any, Any, Any]:
        if prediction is None:
            gr.Warning(NO_PREDICTION)
            return gr.skip(), gr.skip(), gr.skip()
        n, best = _best(prediction, region, view)
        image, legend = _draw(prediction, region, view, best)
        return image, legend, _slider(view, n, best)

    def load_example() -> tuple[Any, ...]:
        case = synthetic_example()
        files = [str(case.images[m]) for m in ("flair", "t1ce", "t1", "t2")]
        status = f"Loaded **{case.case_id}**, a **synthetic** example (generated shapes, not a patient scan)."
        return (*files, None, status)

    with gr.Blocks(
        title="bratseg: brain-tumour segmentation", analytics_enabled=False, delete_cache=(1800, 3600)
    ) as demo:
        gr.Markdown(
            "# bratseg: brain-tumour segmentation\n"
            "Upload a BraTS-style MRI case (FLAIR and T1ce are required, T1 and T2 optional; `.nii` or `.nii.gz`), "
            "or one `.zip` of a case folder, and press **Segment**. A 2-D U-Net labels necrotic core, edema and "
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
                    with gr.Tab("Zipped case folder"):
                        zip_file = gr.File(
                            label="One .zip of a case folder (any BraTS naming, any depth)",
                            file_types=[".zip"],
                            height=FILE_BOX,
                            elem_id="zip",
                        )
                with gr.Row():
                    segment_button = gr.Button("Segment", variant="primary", elem_id="segment")
                    example_button = gr.Button("Load synthetic example", elem_id="example")
                status = gr.Markdown(elem_id="status")
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

        segment_event = dict(
            fn=segment,
            inputs=[flair, t1ce, t1, t2, zip_file, region, view],
            outputs=[prediction_state, overlay, legend, index, volumes, download, seconds, status],
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
    return demo


def launch(
    demo: gr.Blocks,
    host: str = "127.0.0.1",
    port: int = 7860,
    max_upload_mb: int = 1024,
    max_sessions: int = 64,
    prevent_thread_lock: bool = False,
) -> None:
    """Serve ``demo`` locally with no network needs: no share link, no server-side
    rendering (which wants Node), no MCP server, the theme's fonts served by Gradio itself."""
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
    )
