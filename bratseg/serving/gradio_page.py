"""The Gradio demo's page (:mod:`bratseg.serving.gradio_app`): its components, laid out.

:func:`layout` builds them inside the demo's ``gr.Blocks``, in the order the page shows them
(the order also fixes the components' ids), and returns them as a :class:`Page` for the
events to read and write: the inputs (NIfTI boxes or a zip, the preprocessing), the buttons
and results (status, confidence, time, download, volumes, PDF report) on the left; region,
view, slice, the picture and its legend on the right; the embedded viewer below.
"""

from __future__ import annotations

from dataclasses import dataclass

import gradio as gr

from bratseg.data.labels import ORIGINAL_PARTS
from bratseg.inference.segment import PREPROCESS_CHOICES
from bratseg.reporting.render import AXES
from bratseg.serving.gradio_parts import VOLUME_COLUMNS, viewer_html
from bratseg.serving.legend import legend_html

# The original app's four ``part_of_tumor`` choices first (values kept verbatim so old
# scripts still work), then the three regions BraTS is scored on.
REGION_CHOICES: list[tuple[str, str]] = [(f"{part} ({ORIGINAL_PARTS[part]})", part) for part in ORIGINAL_PARTS] + [
    (f"{name} (BraTS {key})", name)
    for key, name in (("WT", "whole tumour"), ("TC", "tumour core"), ("ET", "enhancing tumour"))
]
DEFAULT_REGION = "all_the_tumor"
DEFAULT_VIEW = "axial"
NIFTI_TYPES = [".nii", ".nii.gz"]
# A session's prediction holds its labels and FLAIR (~45 MB for a BraTS case); drop it when
# the visitor has not segmented anything for this long, as Gradio keeps open tabs' state.
STATE_TTL_S = 3600
FILE_BOX = 140  # px: the upload boxes must fit beside the picture


@dataclass
class Page:
    """The components the demo's events read and write."""

    prediction: gr.State  # the session's prediction (see gradio_app)
    flair: gr.File
    t1ce: gr.File
    t1: gr.File
    t2: gr.File
    zip_file: gr.File
    preprocess: gr.Radio
    segment_button: gr.Button
    example_button: gr.Button
    status: gr.Markdown
    confidence: gr.Markdown
    seconds: gr.Number
    download: gr.File
    volumes: gr.Dataframe
    report: gr.DownloadButton
    region: gr.Dropdown
    view: gr.Radio
    index: gr.Slider
    overlay: gr.Image
    legend: gr.HTML
    viewer: gr.HTML


def layout() -> Page:
    """The page's components, inside the current ``gr.Blocks``."""
    gr.Markdown(
        "# bratseg: brain-tumour segmentation\n"
        "Upload an MRI case (FLAIR and T1ce are required, T1 and T2 optional; `.nii` or `.nii.gz`, in BraTS "
        "space or as scanned), or one `.zip` of a case folder or a DICOM study, and press **Segment**. "
        "A 2-D U-Net labels necrotic core, edema and "
        "enhancing tumour. *Research demo, not for diagnosis.*"
    )
    prediction = gr.State(None, time_to_live=STATE_TTL_S)
    with gr.Row():
        with gr.Column(scale=1):
            left = _input_column()
        with gr.Column(scale=1):
            right = _picture_column()
    with gr.Accordion("Interactive 3-D viewer: all regions, three planes and 3-D, uncertainty map", open=True):
        viewer = gr.HTML(viewer_html(None), elem_id="viewer")
    return Page(prediction=prediction, **left, **right, viewer=viewer)


def _nifti_box(label: str, elem_id: str) -> gr.File:
    return gr.File(label=label, file_types=NIFTI_TYPES, height=FILE_BOX, elem_id=elem_id)


def _upload_tabs() -> dict[str, gr.File]:
    """The case: four NIfTI boxes, or one zip in the other tab."""
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
    return {"flair": flair, "t1ce": t1ce, "t1": t1, "t2": t2, "zip_file": zip_file}


def _input_column() -> dict[str, gr.components.Component]:
    """The left column: the case, the preprocessing, the buttons and the results."""
    uploads = _upload_tabs()
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
    volumes = gr.Dataframe(headers=VOLUME_COLUMNS, label="Region volumes", interactive=False, elem_id="volumes")
    report = gr.DownloadButton("Download the PDF report", interactive=False, elem_id="report")
    return {
        **uploads,
        "preprocess": preprocess,
        "segment_button": segment_button,
        "example_button": example_button,
        "status": status,
        "confidence": confidence,
        "seconds": seconds,
        "download": download,
        "volumes": volumes,
        "report": report,
    }


def _picture_column() -> dict[str, gr.components.Component]:
    """The right column: region, view and slice, the picture and its colour key."""
    with gr.Row():
        region = gr.Dropdown(REGION_CHOICES, value=DEFAULT_REGION, label="Region", elem_id="region")
        view = gr.Radio(list(AXES), value=DEFAULT_VIEW, label="View", elem_id="view")
    index = gr.Slider(0, 154, value=77, step=1, precision=0, label="Axial slice", interactive=False, elem_id="slice")
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
    return {"region": region, "view": view, "index": index, "overlay": overlay, "legend": legend}
