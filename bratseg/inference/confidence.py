"""How sure the model is: a per-voxel uncertainty map and a case-level confidence score.

Both come from the region probabilities the model already computes
(:attr:`~bratseg.inference.predictor.Prediction.probabilities`, WT/TC/ET sigmoid maps), so
they cost no extra network pass.

* :func:`uncertainty_map`: for each voxel the largest binary entropy, in bits, of the three
  region probabilities: 0 where the model is sure (probability 0 or 1 for every region, as
  everywhere far from the tumour), 1 where some region's probability is 0.5.
* :func:`assess`: the case-level :class:`Confidence`. Its ``score`` is the share of the
  possible tumour that the model is sure of: of the voxels whose whole-tumour probability
  is above 0.1 (the model gives them at least a 1-in-10 chance of being tumour), the
  fraction whose probability is above 0.9. It is 1 when everything the model considers
  possibly tumour it is sure of, and falls when the uncertain border or uncertain blobs are
  large relative to the tumour, as they are for small, faint or unfamiliar tumours. It does
  not depend on the label map, only on the model's probabilities.

  Validated on cross-validation predictions over the 27 expert-labelled cases (each case
  predicted by a fold model that never saw it; ``bench/confidence_calibration.py``,
  BENCHMARKS.md): Spearman correlation 0.76 with the actual whole-tumour Dice on the 5-fold
  CV (p = 5e-6; 0.85 on a 3-fold one), first of six candidate scores. A case scoring below
  the model's threshold is flagged :data:`LOW_CONFIDENCE_MESSAGE`. The threshold is
  calibrated per model, on cases it (or its recipe's fold models) never saw, and shipped in
  its ``bratseg.json`` (``confidence_threshold``); the shipped model's is 0.76, which flagged
  all 7 of the 27 cases with WT Dice below 0.80 on the 3-fold CV (2 false alarms) and 3 of 4
  on the 5-fold one (3 false alarms). A calibration on 27 cases is a first one, not a
  guarantee.

Example:
    >>> import numpy as np
    >>> from bratseg.inference.prediction import Prediction
    >>> from bratseg.data.io import CaseVolumes
    >>> probs = np.zeros((3, 8, 8, 8), np.float16); probs[0, 2:6, 2:6, 2:6] = 0.99
    >>> probs[0, 1, 2:6, 2:6] = 0.3  # an uncertain rim on one side: 16 of the 80 possible voxels
    >>> labels = np.where(probs[0] > 0.5, 2, 0).astype(np.uint8)
    >>> volumes = CaseVolumes("demo", {"flair": np.ones((8, 8, 8), np.float32)}, np.eye(4), None)
    >>> prediction = Prediction(labels, volumes, 0.0, probs)
    >>> round(float(uncertainty_map(prediction).max()), 3)
    0.881
    >>> confidence = assess(prediction)
    >>> round(confidence.score, 3), confidence.low
    (0.8, False)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import nibabel as nib
import numpy as np

from bratseg.data.io import save_nifti
from bratseg.errors import ConfidenceError

if TYPE_CHECKING:
    from bratseg.inference.prediction import Prediction

LOW_CONFIDENCE_THRESHOLD: float = 0.71
"""The threshold for a model folder that carries none in its ``bratseg.json``: the one
calibrated for the first shipped model on the 14 cases it never saw (BENCHMARKS.md)."""


POSSIBLE_PROBABILITY = 0.1
"""Whole-tumour probability above which a voxel counts as possibly tumour."""
SURE_PROBABILITY = 0.9
"""Whole-tumour probability above which the model counts as sure of a tumour voxel."""

LOW_CONFIDENCE_MESSAGE = "low confidence: review carefully"
"""The flag shown by the CLI, the API, the demo and the report for a low-confidence case."""

_WT = 0  # index of the whole tumour in Prediction.probabilities (WT, TC, ET)


@dataclass
class Confidence:
    """A case-level confidence.

    Attributes:
        score: the share of the possible tumour the model is sure of, in [0, 1] (module
            docstring); higher means more confident. A case where no voxel is possibly
            tumour scores 1 (the model is sure there is none).
        low: ``score < threshold``: the case should be reviewed carefully.
        threshold: the score below which a case is flagged.
    """

    score: float
    low: bool
    threshold: float = LOW_CONFIDENCE_THRESHOLD

    def to_dict(self) -> dict[str, float | bool]:
        """``{"score": ..., "low": ...}``, the form of the API's JSON."""
        return {"score": round(float(self.score), 3), "low": bool(self.low)}

    @property
    def message(self) -> str:
        """:data:`LOW_CONFIDENCE_MESSAGE` for a low-confidence case, else an empty string."""
        return LOW_CONFIDENCE_MESSAGE if self.low else ""

    def describe(self) -> str:
        """One line for a terminal or a report, e.g. ``confidence 0.91``, or
        ``confidence 0.62, low confidence: review carefully``."""
        text = f"confidence {self.score:.2f}"
        return f"{text}, {self.message}" if self.low else text


def _probabilities(prediction: Prediction) -> np.ndarray:
    probs = prediction.probabilities
    if probs is None:
        raise ConfidenceError(
            f"{prediction.volumes.case_id}: the prediction has no region probabilities; "
            "confidence needs the model's output (run Segmenter.segment on the case)"
        )
    if probs.ndim != 4 or probs.shape[0] != 3 or probs.shape[1:] != prediction.labels.shape:
        raise ConfidenceError(
            f"{prediction.volumes.case_id}: region probabilities of shape {probs.shape} do not match "
            f"the label map's {prediction.labels.shape} (expected [3, X, Y, Z])"
        )
    return probs


def binary_entropy(p: np.ndarray) -> np.ndarray:
    """Entropy in bits of a Bernoulli probability, elementwise (float32; 0 at p = 0 and 1).

    Example:
        >>> [round(float(h), 3) for h in binary_entropy(np.array([0.0, 0.5, 0.9, 1.0]))]
        [0.0, 1.0, 0.469, 0.0]
    """
    p = np.clip(np.asarray(p, dtype=np.float32), 0.0, 1.0)
    q = 1.0 - p
    with np.errstate(divide="ignore", invalid="ignore"):
        h = -(p * np.log2(p) + q * np.log2(q))
    return np.nan_to_num(h, nan=0.0).astype(np.float32, copy=False)


def uncertainty_map(prediction: Prediction) -> np.ndarray:
    """Per-voxel uncertainty, float32 ``[X, Y, Z]`` in [0, 1]: the largest binary entropy
    (bits) of the WT, TC and ET probabilities. 0 outside the brain and the model's window.

    Raises :class:`~bratseg.errors.ConfidenceError` when the prediction has no probabilities.
    """
    probs = _probabilities(prediction)
    out = np.zeros(probs.shape[1:], dtype=np.float32)
    box = _nonzero_box(probs)
    if box is None:
        return out
    # Entropy rises with min(p, 1 - p), so the largest entropy over the regions is the
    # entropy of the largest such distance from certainty: one entropy pass, not three.
    nearest_half = np.zeros(out[box].shape, dtype=np.float32)
    for region in probs:
        p = region[box].astype(np.float32)
        np.maximum(nearest_half, np.minimum(p, 1.0 - p), out=nearest_half)
    out[box] = binary_entropy(nearest_half)
    return out


def _nonzero_box(probs: np.ndarray) -> tuple[slice, slice, slice] | None:
    """Bounding box of the voxels where any region probability is non-zero (the brain inside
    the model's window): outside it the entropy is 0, and it is about half the volume."""
    any_region = (probs != 0).any(axis=0)
    box = []
    for axis in range(3):
        present = np.flatnonzero(any_region.any(axis=tuple(a for a in range(3) if a != axis)))
        if present.size == 0:
            return None
        box.append(slice(int(present[0]), int(present[-1]) + 1))
    return tuple(box)


def uncertainty_image(prediction: Prediction) -> nib.Nifti1Image:
    """:func:`uncertainty_map` as a float32 NIfTI image with the input's affine and header."""
    data = uncertainty_map(prediction)
    volumes = prediction.volumes
    header = volumes.header.copy() if volumes.header is not None else None
    img = nib.Nifti1Image(data, volumes.affine, header)
    img.set_data_dtype(np.float32)
    img.header.set_slope_inter(1, 0)
    img.header["cal_min"], img.header["cal_max"] = 0.0, 1.0  # the map's range, for viewers' windowing
    img.header["descrip"] = b"bratseg uncertainty (bits)"
    return img


def save_uncertainty(prediction: Prediction, path: str | Path) -> Path:
    """Write :func:`uncertainty_image` to ``path`` (``.nii`` or ``.nii.gz``) atomically."""
    return save_nifti(uncertainty_image(prediction), path)


def sure_fraction(probability: np.ndarray) -> float:
    """Of the voxels with probability above :data:`POSSIBLE_PROBABILITY`, the fraction above
    :data:`SURE_PROBABILITY`; 1 when no voxel is above the first.

    Example:
        >>> sure_fraction(np.array([0.0, 0.05, 0.3, 0.95, 0.99, 1.0]))
        0.75
    """
    p = np.asarray(probability)
    possible = p > POSSIBLE_PROBABILITY
    n_possible = int(np.count_nonzero(possible))
    if n_possible == 0:
        return 1.0
    return int(np.count_nonzero(p > SURE_PROBABILITY)) / n_possible


def confidence_score(prediction: Prediction) -> float:
    """The case-level score of :class:`Confidence`: :func:`sure_fraction` of the
    whole-tumour probabilities (module docstring)."""
    return sure_fraction(_probabilities(prediction)[_WT])


def assess(prediction: Prediction, threshold: float | None = None) -> Confidence:
    """The case-level :class:`Confidence` of a prediction, flagged below ``threshold``: by
    default the threshold of the model that predicted (``prediction.confidence_threshold``),
    else :data:`LOW_CONFIDENCE_THRESHOLD`."""
    if threshold is None:
        threshold = prediction.confidence_threshold or LOW_CONFIDENCE_THRESHOLD
    score = confidence_score(prediction)
    return Confidence(score=score, low=score < threshold, threshold=threshold)
