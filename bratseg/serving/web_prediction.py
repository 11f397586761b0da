"""What a web user is shown of a prediction, for the Flask app and the Gradio demo alike.

A web request may hold BraTS-space files, native scans (any grid, with skull) or a zipped
DICOM study. :func:`segment_for_viewing` sends it down the path ``bratseg predict`` would take
(:func:`~bratseg.inference.segment.segment`) and returns a :class:`Shown`: the prediction on
the grid of the scans the user gave (for a native case, its T1ce's), the scans to draw it
over, the prediction the model made on its own grid (where the confidence score is
calibrated), and what preprocessing ran, step by step, for the page to state.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import nibabel as nib

from bratseg.data.layout import Case
from bratseg.inference.prediction import Prediction
from bratseg.inference.segment import DEFAULT_PREPROCESS, PREPROCESS_CHOICES, Preprocess
from bratseg.serving.uploads import UploadError
from bratseg.serving.zips import DicomStudy

BRATS_SPACE_STEP = "none: the scans are already in BraTS space (co-registered, skull-stripped, 1 mm)"


class SegmentationService(Protocol):
    """What the front ends need of a service: :class:`~bratseg.serving.service.InferenceService`."""

    def segment(
        self, case: Any, preprocess: Preprocess = ..., progress: Callable[[str], None] | None = None
    ) -> Prediction: ...


@dataclass
class Shown:
    """A prediction as the user sees it.

    ``prediction`` is on the grid of the user's scans and ``scans`` are what it is drawn over
    (files as uploaded on the fast path; the sequences co-registered onto the reference grid on
    the native path); ``model_space`` is the prediction on the grid the model saw;
    ``preprocessing`` is the JSON the API answers: ``path`` (``brats-space`` or ``native``),
    ``reference`` (the sequence whose grid the labels are on) and ``steps`` (one line each).
    """

    prediction: Prediction
    model_space: Prediction
    scans: dict[str, Path | nib.Nifti1Image]
    preprocessing: dict[str, Any] = field(default_factory=dict)


def parse_preprocess(value: str | None) -> Preprocess:
    """The ``preprocess`` form field: ``auto`` (the default), ``native`` or ``none``."""
    value = (value or DEFAULT_PREPROCESS).strip().lower()
    if value not in PREPROCESS_CHOICES:
        raise UploadError(f"unknown preprocess {value!r}; choose one of {', '.join(PREPROCESS_CHOICES)}", 400)
    return value  # type: ignore[return-value]


def segment_for_viewing(
    service: SegmentationService, source: Case | DicomStudy, preprocess: Preprocess = DEFAULT_PREPROCESS
) -> Shown:
    """Predict ``source`` by the path ``preprocess`` picks and return what the user is shown."""
    steps: list[str] = []
    result = service.segment(
        source.folder if isinstance(source, DicomStudy) else source, preprocess, progress=steps.append
    )
    if result.native is None:
        return Shown(result, result, dict(source.images), {"path": "brats-space", "steps": [BRATS_SPACE_STEP]})
    shown = result.on_patient_grid()
    volumes = shown.volumes
    scans = {m: nib.Nifti1Image(image, volumes.affine, volumes.header) for m, image in volumes.images.items()}
    info = {"path": "native", "reference": result.native.reference, "steps": steps or result.steps}
    return Shown(shown, result.model_space, scans, info)
