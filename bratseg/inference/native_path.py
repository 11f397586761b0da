"""The native path: scans as they came off the scanner in, a label map on the patient's own grid
out.

The native stage brings the scans into BraTS space (:func:`~bratseg.native.to_brats.to_brats_space`:
read, skull strip, co-registration, atlas registration), the one
:class:`~bratseg.inference.predictor.Segmenter` path segments them (guards included), and the
native stage resamples the region probabilities back onto the reference sequence's grid
(linear) and thresholds them (:func:`~bratseg.native.to_patient.back_to_patient`). Only the
way back works on the patient's full grid, one full-size array at a time.

:func:`bratseg.segment` picks this path per case; call :func:`segment_native` to force it with
its options (reference sequence, affine atlas registration, names for in-memory images).

Example (about 20 s on a laptop CPU)::

    import bratseg
    from bratseg.inference.native_path import segment_native

    result = segment_native(bratseg.from_pretrained(), {"flair": "flair.nii.gz", "t1ce": "t1c.nii.gz"}, log=print)
    result.save("seg.nii.gz")                 # on the T1ce's grid, with its affine and header
    result.native.save_brats_space("brats/")  # the BraTS-space images, brain mask and labels
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from bratseg.data.io import CaseVolumes
from bratseg.inference.prediction import NativeView, Prediction
from bratseg.native.reader import ScanSource
from bratseg.native.steps import StepLog
from bratseg.native.to_brats import BratsSpaceCase, to_brats_space
from bratseg.native.to_patient import PatientGrid, back_to_patient

if TYPE_CHECKING:
    from bratseg.inference.predictor import Segmenter


def segment_native(
    segmenter: Segmenter,
    images: Mapping[str, ScanSource],
    *,
    reference: str = "t1ce",
    keep_intermediate: str | Path | None = None,
    log: Callable[[str], None] | None = None,
    case_id: str | None = None,
    atlas_affine: bool = False,
    names: Mapping[str, str] | None = None,
) -> Prediction:
    """Segment native scans (any grid, orientation and spacing, with skull) and return the
    prediction on the grid of the ``reference`` sequence (its :attr:`~Prediction.native` says
    how it got there).

    ``images`` maps modalities (``flair``, ``t1ce``, ``t1``, ``t2``; FLAIR and T1ce required)
    to NIfTI paths, DICOM series folders or zips, or images. ``keep_intermediate`` names a
    folder for every intermediate volume and transform; ``log`` receives one line per step.
    ``names`` and ``atlas_affine``: as :func:`~bratseg.native.to_brats.to_brats_space` takes them.

    Raises :class:`~bratseg.errors.InvalidCaseError` (a subclass names the step) with one line
    naming the file when the scans cannot be used.
    """
    steps = StepLog(log)
    case = to_brats_space(images, steps, reference=reference, case_id=case_id, atlas_affine=atlas_affine, names=names)
    with steps.step("segment") as say:
        model_space = segmenter.segment(case.volumes)
        steps.warnings += model_space.warnings
        say(f"{model_space.seconds:.2f} s in the network and its pre- and post-processing")
    keep = keep_intermediate is not None
    patient = back_to_patient(case, model_space.labels, model_space.probabilities, steps, keep_scans=keep)
    if keep:
        with steps.step("keep intermediate") as say:
            from bratseg.native.intermediate import write_intermediate

            written = write_intermediate(Path(keep_intermediate), case, patient, model_space.labels, steps)
            say(f"{len(written)} files in {keep_intermediate}")
    return _patient_prediction(case, model_space, patient, steps)


def _patient_prediction(
    case: BratsSpaceCase, model_space: Prediction, patient: PatientGrid, steps: StepLog
) -> Prediction:
    """The prediction on the reference grid: the labels and co-registered scans there (sharing
    the pipeline's arrays), the BraTS-space prediction and the pipeline's record in its view."""
    labels = np.asarray(patient.labels.dataobj, dtype=np.uint8)
    header = patient.labels.header.copy()
    header.set_data_dtype(np.float32)
    volumes = CaseVolumes(
        model_space.volumes.case_id,
        {m: np.asarray(image, dtype=np.float32) for m, image in patient.images.items()},
        patient.labels.affine.copy(),
        header,
    )
    view = NativeView(
        labels=patient.labels,
        reference=case.reference,
        model_space=model_space,
        brain_mask=patient.brain_mask,
        atlas_to_reference=patient.atlas_to_reference,
        t1ce_to_sequence=patient.t1ce_to_sequence,
        timings=steps.timings,
        cpu_seconds=steps.cpu_seconds,
        steps=steps.steps,
    )
    return Prediction(
        labels, volumes, steps.seconds, None, steps.warnings, model_space.confidence_threshold, native=view
    )
