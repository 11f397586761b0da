"""``bratseg report``: the PDF report of one case.

    bratseg report CASE_DIR --out report.pdf [--model MODEL_DIR] [--png panel.png]
    bratseg report CASE_DIR --seg SEG.nii.gz --out report.pdf [--confidence]

Given a case folder it runs the model and reports its prediction; scans as scanned (with skull,
each sequence on its own grid) take the native pipeline, as under ``bratseg predict``, and are
reported on the patient's T1ce grid with every preprocessing step listed. Given ``--seg`` as well it
reports that label map (BraTS 2020 0/1/2/4 or BraTS 2023 0/1/2/3, on the case's grid) without
running the model, so it takes seconds; the confidence score is then "not computed", since it
is read from the model's probabilities. ``--confidence`` runs the model once for them. The
score measures the model's own certainty on the case and does not depend on the label map:
for a label map this model wrote (``bratseg predict``) it is the calibrated score; for one
from another tool it says how sure this model is about the case, not how good that label map
is.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from bratseg.data.io import CaseVolumes, load_volume
from bratseg.data.labels import to_brats2020
from bratseg.data.layout import case_from_folder, nifti_stem
from bratseg.errors import InvalidCaseError, ReportError


def add_report_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """The ``report`` sub-command's arguments (``bratseg.cli`` sets its handler)."""
    p = sub.add_parser(
        "report",
        help="PDF report of a case: volumes, confidence, key slices",
        description="Write a one-page PDF report of a case: sequences used, preprocessing, region volumes, "
        "confidence score and flag, key slices in three planes, the model's name and weights hash. "
        "Research use only; not a medical device.",
    )
    p.add_argument("case", type=Path, metavar="CASE_DIR", help="the case folder (its images are shown)")
    p.add_argument("--out", "-o", type=Path, required=True, help="the PDF to write")
    p.add_argument(
        "--model", help="model folder or Hugging Face Hub id namespace/name[@revision] (default: the shipped model)"
    )
    p.add_argument("--seg", type=Path, metavar="SEG", help="report this label map instead of running the model")
    p.add_argument(
        "--confidence",
        action="store_true",
        help="with --seg: run the model for its probabilities, to report its confidence on the case",
    )
    p.add_argument("--png", type=Path, metavar="PNG", help="also write the key-slice panel as a PNG")
    return p


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


def run_report(args: argparse.Namespace) -> None:
    """Run ``bratseg report`` (errors are :class:`~bratseg.errors.BratsegError`)."""
    if nifti_stem(args.case) is not None and args.case.is_file():
        raise ReportError(
            f"{args.case}: a label map alone has no images to show; give the case folder and --seg {args.case.name}"
        )
    if args.confidence and args.seg is None:
        raise ReportError("--confidence goes with --seg (without --seg the model runs and scores anyway)")
    case = case_from_folder(args.case)  # check the input before loading the model
    if args.out.is_dir():
        raise ReportError(f"{args.out}: is a folder; give the PDF's file name")

    from bratseg.data.io import load_case
    from bratseg.inference.confidence import assess
    from bratseg.inference.predictor import Prediction, from_pretrained
    from bratseg.model.hub import resolve_model
    from bratseg.reporting.report import write_report

    model = resolve_model(args.model)  # a Hub id: its folder in the Hugging Face cache; None: the shipped model

    steps = confidence = None  # the model's own preprocessing; scored on the prediction itself
    if args.seg is not None:
        volumes = load_case(case, with_label=False)
        labels = load_label_map(args.seg, volumes)
        prediction = Prediction(labels, volumes, 0.0)
        if args.confidence:
            modelled = from_pretrained(model).segment(volumes)
            prediction.probabilities, prediction.warnings = modelled.probabilities, modelled.warnings
            prediction.confidence_threshold = modelled.confidence_threshold
    else:
        from bratseg.inference.segment import DEFAULT_PREPROCESS, segment

        steps_run: list[str] = []
        result = segment(case, DEFAULT_PREPROCESS, model=from_pretrained(model), log=steps_run.append)
        prediction = result.on_patient_grid()  # scans as scanned: reported on the patient's T1ce grid
        if result.native is not None:
            from bratseg.reporting.report import native_steps

            steps = native_steps(steps_run, model)
            confidence = assess(result.model_space)  # where the score was calibrated
    out = write_report(prediction, args.out, model_dir=model, preprocessing=steps, confidence=confidence)
    if args.png is not None:
        from bratseg.reporting.figures import key_slice_panel

        key_slice_panel(prediction, args.png)
    line = f"report written to {out}"
    if confidence is None and prediction.probabilities is not None:
        confidence = assess(prediction)
    if confidence is not None:
        line += f"; {confidence.describe()}"
    print(line)
