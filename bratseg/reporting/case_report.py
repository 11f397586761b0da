"""The PDF report of one case, from its folder: what ``bratseg report`` writes.

Given a case folder, :func:`report_case` runs the model and reports its prediction; scans as
scanned (with skull, each sequence on its own grid) take the native pipeline, as under
``bratseg predict``, and are reported on the patient's T1ce grid with every preprocessing step
listed. Given a label map as well (``seg``) it reports that label map (BraTS 2020 0/1/2/4 or
BraTS 2023 0/1/2/3, on the case's grid) without running the model, so it takes seconds; the
confidence score is then "not computed", since it is read from the model's probabilities.
``confidence=True`` runs the model once for them. The score measures the model's own
certainty on the case and does not depend on the label map: for a label map this model wrote
(``bratseg predict``) it is the calibrated score; for one from another tool it says how sure
this model is about the case, not how good that label map is.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from bratseg.data.io import CaseVolumes, load_volume
from bratseg.data.labels import to_brats2020
from bratseg.data.layout import case_from_folder
from bratseg.errors import InvalidCaseError, ReportError

if TYPE_CHECKING:
    from bratseg.inference.confidence import Confidence


def load_label_map(path: Path, volumes: CaseVolumes) -> np.ndarray:
    """The label map at ``path`` as BraTS 2020 labels (uint8) on ``volumes``' grid.

    Raises :class:`~bratseg.errors.InvalidCaseError` naming the file for an unreadable file,
    values outside the BraTS schemes, or another shape or orientation than the case's images
    (the origin alone may differ, as in some BraTS 2017 label files).
    """
    from bratseg.data.label_schemes import to_internal_labels

    volume = load_volume(path)
    if volume.data.shape != volumes.shape:
        shape = volume.data.shape
        raise InvalidCaseError(path, f"label map of shape {shape} does not match the images' {volumes.shape}")
    if not np.allclose(volume.affine[:3, :3], volumes.affine[:3, :3], atol=1e-3):
        raise InvalidCaseError(path, "the label map's affine differs from the images': not on the case's grid")
    internal, _scheme = to_internal_labels(volume.data, "auto", path)
    return to_brats2020(internal)


def report_case(
    case_dir: Path,
    out: Path,
    *,
    model: str | None = None,
    seg: Path | None = None,
    confidence: bool = False,
    png: Path | None = None,
) -> tuple[Path, Confidence | None]:
    """Write the PDF report of the case in ``case_dir`` to ``out`` (module docstring), and the
    key-slice panel to ``png`` if given; returns the PDF's path and the model's confidence on
    the case (None when not computed).

    ``model`` is a model folder or Hub id (None: the shipped model); ``seg`` a label map to
    report instead of running the model; ``confidence`` runs the model for its probabilities
    with ``seg``. The case and ``out`` are checked before the model loads; errors are
    :class:`~bratseg.errors.BratsegError`.
    """
    case = case_from_folder(case_dir)  # check the input before loading the model
    if out.is_dir():
        raise ReportError(f"{out}: is a folder; give the PDF's file name")

    from bratseg.data.io import load_case
    from bratseg.inference.confidence import assess
    from bratseg.inference.predictor import Prediction, from_pretrained
    from bratseg.model.hub import resolve_model
    from bratseg.reporting.report import write_report

    model_dir = resolve_model(model)  # a Hub id: its folder in the Hugging Face cache; None: the shipped model

    steps = scored = None  # the model's own preprocessing; scored on the prediction itself
    if seg is not None:
        volumes = load_case(case, with_label=False)
        prediction = Prediction(load_label_map(seg, volumes), volumes, 0.0)
        if confidence:
            modelled = from_pretrained(model_dir).segment(volumes)
            prediction.probabilities, prediction.warnings = modelled.probabilities, modelled.warnings
            prediction.confidence_threshold = modelled.confidence_threshold
    else:
        from bratseg.inference.segment import DEFAULT_PREPROCESS, segment

        steps_run: list[str] = []
        result = segment(case, DEFAULT_PREPROCESS, model=from_pretrained(model_dir), log=steps_run.append)
        prediction = result.on_patient_grid()  # scans as scanned: reported on the patient's T1ce grid
        if result.native is not None:
            from bratseg.reporting.report import native_steps

            steps = native_steps(steps_run, model_dir)
            scored = assess(result.model_space)  # where the score was calibrated
    written = write_report(prediction, out, model_dir=model_dir, preprocessing=steps, confidence=scored)
    if png is not None:
        from bratseg.reporting.figures import key_slice_panel

        key_slice_panel(prediction, png)
    if scored is None and prediction.probabilities is not None:
        scored = assess(prediction)
    return written, scored
