"""The result of a prediction: labels on the input's grid, with what reports and viewers need."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np

from bratseg.data.io import CaseVolumes, label_image, save_nifti
from bratseg.data.labels import region_volumes


@dataclass
class Prediction:
    """A prediction and what a report needs: labels in BraTS 2020's 0/1/2/4 scheme on the
    input's grid, the input volumes, and the prediction's time in seconds (preprocessing,
    network and postprocessing; reading the files is not included).

    ``probabilities`` are the model's region probabilities ``[3, X, Y, Z]`` (WT, TC, ET,
    float16, on the input's grid, 0 outside the brain and the model's window) before
    post-processing: what confidence maps and resampling to another grid are computed from.
    ``warnings`` are the one-line flags of :mod:`bratseg.inference.guards` (empty when
    nothing looked wrong). ``confidence_threshold`` is the confidence score below which the
    model that predicted flags a case (its ``bratseg.json``; None: the default of
    :mod:`bratseg.inference.confidence`).
    """

    labels: np.ndarray
    volumes: CaseVolumes
    seconds: float
    probabilities: np.ndarray | None = None
    warnings: list[str] = field(default_factory=list)
    confidence_threshold: float | None = None

    def region_volumes(self) -> dict[str, float]:
        """Volume of each tumour region in cm3."""
        return region_volumes(self.labels, self.volumes.spacing)

    def save(self, path: str | Path) -> Path:
        """Write the label map with the input's affine and header (atomically)."""
        return save_nifti(self.to_nifti(), path)

    def to_nifti(self) -> nib.Nifti1Image:
        """The label map as a NIfTI image with the input's affine and header."""
        return label_image(self.labels, self.volumes)
