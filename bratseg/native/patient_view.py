"""A native-path result as a :class:`~bratseg.inference.predictor.Prediction` on the patient's
own grid, so that everything drawn from a prediction (overlays, the viewer's files, the
uncertainty map, the PDF report) shows the labels over the scans the user gave.

The label map is the one :func:`~bratseg.native.segment_native` pulled back onto the reference
sequence; the images are the sequences co-registered onto that grid; the region probabilities
are the model's, resampled the same way (linear), so that confidence maps follow the labels.

Example:
    >>> import numpy as np, nibabel as nib
    >>> from bratseg.data.io import CaseVolumes
    >>> from bratseg.inference.prediction import Prediction
    >>> from bratseg.native.pipeline import NativePrediction
    >>> grid = nib.Nifti1Image(np.zeros((8, 8, 4), np.uint8), np.diag([2.0, 2.0, 5.0, 1.0]))
    >>> brats = Prediction(np.zeros((8, 8, 4), np.uint8), CaseVolumes("c", {"t1ce": np.zeros((8, 8, 4))},
    ...     np.eye(4), nib.Nifti1Header()), 1.0, np.zeros((3, 8, 8, 4), np.float16))
    >>> native = NativePrediction(grid, "t1ce", brats, grid, np.eye(4), images={"t1ce": np.ones((8, 8, 4))})
    >>> shown = on_patient_grid(native)
    >>> shown.volumes.spacing, shown.probabilities.shape
    ((2.0, 2.0, 5.0), (3, 8, 8, 4))
"""

from __future__ import annotations

import numpy as np

from bratseg.data.io import CaseVolumes
from bratseg.inference.prediction import Prediction
from bratseg.native.pipeline import NativePrediction


def on_patient_grid(native: NativePrediction) -> Prediction:
    """``native``'s labels, co-registered scans and region probabilities on the grid of its
    reference sequence (the T1ce unless the user named another), with that scan's affine."""
    labels = np.asarray(native.labels.dataobj, dtype=np.uint8)
    header = native.labels.header.copy()
    header.set_data_dtype(np.float32)
    volumes = CaseVolumes(
        native.brats.volumes.case_id,
        {m: np.asarray(image, dtype=np.float32) for m, image in native.images.items()},
        native.labels.affine.copy(),
        header,
    )
    probabilities = None
    if native.brats.probabilities is not None:
        # One region at a time into float16: a fine patient grid holds tens of millions of voxels.
        regions = native.brats.probabilities
        probabilities = np.empty((len(regions), *labels.shape), dtype=np.float16)
        for index, region in enumerate(regions):
            probabilities[index] = np.asarray(native.on_reference_grid(region).dataobj)
    return Prediction(
        labels, volumes, native.seconds, probabilities, list(native.warnings), native.brats.confidence_threshold
    )
