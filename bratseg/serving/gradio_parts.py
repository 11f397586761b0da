"""Pieces of the Gradio demo (:mod:`bratseg.serving.gradio_app`) that are plain functions:
the prediction a session keeps, the pictures, tables and texts it shows, the case its
inputs describe and the frame of the embedded viewer. Every failure they meet becomes a
``gr.Error`` with a message for the user.
"""

from __future__ import annotations

import html
import logging
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import gradio as gr
import numpy as np
import pandas as pd

from bratseg.data.io import CaseVolumes
from bratseg.data.labels import REGION_LABELS, resolve_region
from bratseg.data.layout import Case
from bratseg.errors import BratsegError
from bratseg.inference.prediction import Prediction
from bratseg.reporting.render import best_slice, render_overlay, slice_count
from bratseg.serving.demo_files import OutputFolder, private_cache
from bratseg.serving.legend import legend_html
from bratseg.serving.results import Result
from bratseg.serving.uploads import case_from_uploads
from bratseg.serving.zips import DicomStudy, case_from_zip
from bratseg.synthetic import write_synthetic_case

log = logging.getLogger("bratseg.gradio")


@contextmanager
def user_errors(action: str, refused: str, failed: str) -> Iterator[None]:
    """Every failure inside the block as a :class:`gr.Error` for the user: bad input (or a busy
    or broken model) with its own message, which names the file and the problem; anything
    else as an unexpected error while ``action``, its details left in the server log.
    ``refused`` and ``failed`` begin the log lines of each."""
    try:
        yield
    except gr.Error:
        raise
    except BratsegError as exc:
        log.info("%s: %s", refused, exc)
        raise gr.Error(str(exc), print_exception=False) from None
    except Exception as exc:
        log.exception(failed)
        raise gr.Error(
            f"Unexpected error while {action} ({type(exc).__name__}: {exc}); the server log has the details.",
            print_exception=False,
        ) from None


VOLUME_COLUMNS = ["region", "volume (cm³)"]
SYNTHETIC_PREFIX = "SYNTHETIC"
EXAMPLE_CASE_ID = "SYNTHETIC_EXAMPLE"
OUTPUT_MAX_AGE_S = 3600.0
VIEWER_MOUNT = "/bratseg"  # where the Flask viewer is mounted in the demo's server
VIEWER_HEIGHT = 760  # px: the viewer page without a scroll bar

OUTPUTS = OutputFolder(OUTPUT_MAX_AGE_S)
_EXAMPLE_LOCK = threading.Lock()
_EXAMPLE: Case | None = None


def synthetic_example() -> Case:
    """The demo's example: a full-size synthetic case, generated on first use into the
    process's private folder (removed at exit) and reused afterwards. Its id starts with
    ``SYNTHETIC``."""
    global _EXAMPLE
    with _EXAMPLE_LOCK:
        if _EXAMPLE is None or not all(p.is_file() for p in _EXAMPLE.images.values()):
            root = Path(tempfile.mkdtemp(prefix="example-", dir=private_cache()))
            _EXAMPLE = write_synthetic_case(root / EXAMPLE_CASE_ID, seed=0)
        return _EXAMPLE


def is_synthetic(case_id: str) -> bool:
    return case_id.upper().startswith(SYNTHETIC_PREFIX)


def volumes_table(prediction: Prediction) -> pd.DataFrame:
    """Region volumes in cm3, BraTS regions first."""
    volumes = prediction.region_volumes()
    return pd.DataFrame([(name, volumes[name]) for name in REGION_LABELS], columns=VOLUME_COLUMNS)


def slim(prediction: Prediction) -> Prediction:
    """The prediction as kept in the session: labels plus the FLAIR the overlay is drawn on.

    The other three input volumes (~110 MB for a BraTS case) are never drawn, and every
    open browser tab holds one prediction, so they are dropped.
    """
    vols = prediction.volumes
    slim = CaseVolumes(vols.case_id, {"flair": vols.images["flair"]}, vols.affine, vols.header)
    return Prediction(prediction.labels, slim, prediction.seconds)


def draw(prediction: Prediction, region: str, view: str, index: int) -> tuple[np.ndarray, str]:
    """Overlay and legend of one slice; any failure becomes a message for the user."""
    try:
        image = render_overlay(prediction.volumes, prediction.labels, region, axis=view, index=int(index))
    except (KeyError, ValueError) as exc:
        raise gr.Error(str(exc).strip("'\""), print_exception=False) from None
    except Exception as exc:
        log.exception("drawing %s failed", prediction.volumes.case_id)
        raise gr.Error(
            f"Could not draw {view} slice {index} of {prediction.volumes.case_id}: {type(exc).__name__}: {exc}",
            print_exception=False,
        ) from None
    return image, legend_html(region)


def slice_range(prediction: Prediction, region: str, view: str) -> tuple[int, int]:
    """(number of slices, slice with the most of ``region``) along ``view``."""
    vols = prediction.volumes
    n = slice_count(vols.shape, view, vols.affine)
    best = best_slice(
        prediction.labels, view, region=resolve_region(region), affine=vols.affine, brain=vols.images["flair"] != 0
    )
    return n, best


def slider(view: str, n: int, value: int) -> gr.Slider:
    if n <= 1:
        # A slider from 0 to 0 breaks Gradio's page: show the one slice, fixed.
        return gr.Slider(
            minimum=0, maximum=1, value=0, step=1, label=f"{view.capitalize()} slice (only one)", interactive=False
        )
    return gr.Slider(
        minimum=0, maximum=n - 1, value=value, step=1, label=f"{view.capitalize()} slice", interactive=True
    )


def confidence_markdown(result: Result) -> str:
    """The result's confidence score, its flag and the warnings, as Markdown."""
    confidence = result.summary.get("confidence")
    if confidence is None:
        lines = ["**Confidence:** not available for this result."]
    else:
        flag = " — ⚠️ **low confidence: review carefully**" if confidence["low"] else ""
        lines = [f"**Confidence:** {confidence['score']:.2f}{flag}"]
    lines += [f"- ⚠️ {warning}" for warning in result.summary.get("warnings", []) if "low confidence" not in warning]
    return "\n".join(lines)


def preprocessing_markdown(result: Result) -> str:
    """What ran before the model, for the status line: nothing, or the native steps."""
    info = result.summary.get("preprocessing") or {}
    if info.get("path") != "native":
        return "No preprocessing: the scans are in BraTS space."
    steps = "\n".join(f"{i}. {step}" for i, step in enumerate(info.get("steps", []), 1))
    return (
        f"Native scans: skull-stripped, co-registered and registered to BraTS space; the labels are shown on "
        f"the {info.get('reference', 't1ce')} grid.\n\n{steps}"
    )


def viewer_html(result_id: str | None) -> str:
    """The embedded viewer (an iframe onto the mounted Flask viewer) and a link to open it
    full-size; a note when there is no result."""
    if result_id is None:
        return '<p class="viewer-note">The interactive 3-D viewer opens here after <b>Segment</b>.</p>'
    src = html.escape(f"{VIEWER_MOUNT.lstrip('/')}/viewer/{result_id}", quote=True)
    return (
        f'<iframe id="viewer-frame" src="{src}" title="Interactive 3-D viewer" loading="lazy" '
        f'style="width:100%;height:{VIEWER_HEIGHT}px;border:1px solid #ccc;border-radius:6px"></iframe>'
        f'<p><a href="{src}" target="_blank" rel="noopener">Open the viewer in a new tab</a></p>'
    )


def case_from_inputs(
    flair: str | None,
    t1ce: str | None,
    t1: str | None,
    t2: str | None,
    zip_file: str | None,
    workdir: Path,
    max_zip_bytes: int,
) -> Case | DicomStudy:
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
