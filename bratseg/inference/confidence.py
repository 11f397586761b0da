"""How sure the model is: a per-voxel uncertainty map and a case-level confidence score.

Both come from the region probabilities the model already computes
(:attr:`~bratseg.inference.predictor.Prediction.probabilities`, WT/TC/ET sigmoid maps), so
they cost no extra network pass.

* :func:`uncertainty_map`: for each voxel the largest binary entropy, in bits, of the three
  region probabilities: 0 where the model is sure (probability 0 or 1 for every region, as
  everywhere far from the tumour), 1 where some region's probability is 0.5.
* :func:`assess`: the case-level :class:`Confidence`. Its ``score`` is the *soft Dice* of the
  whole tumour: the Dice overlap between the predicted whole-tumour mask ``m`` and the
  model's whole-tumour probability map ``p``, ``2 sum(p m) / (sum(p) + sum(m))``. It is the
  Dice the prediction would score if the truth were drawn from the model's own
  probabilities, so it reads on the Dice scale: near 1 when the probabilities are sharp and
  agree with the mask, lower when much of the tumour is uncertain (large soft borders,
  probability mass left outside the mask). On the 14 cases the shipped model never saw it
  tracks the actual whole-tumour Dice (Spearman correlation and the threshold below:
  ``bench/confidence_calibration.py`` and BENCHMARKS.md). A case scoring below
  :data:`LOW_CONFIDENCE_THRESHOLD` is flagged :data:`LOW_CONFIDENCE_MESSAGE`.

Example:
    >>> import numpy as np
    >>> from bratseg.inference.predictor import Prediction
    >>> from bratseg.data.io import CaseVolumes
    >>> probs = np.zeros((3, 8, 8, 8), np.float16); probs[0, 2:6, 2:6, 2:6] = 0.99
    >>> labels = np.where(probs[0] > 0.5, 2, 0).astype(np.uint8)
    >>> volumes = CaseVolumes("demo", {"flair": np.ones((8, 8, 8), np.float32)}, np.eye(4), None)
    >>> prediction = Prediction(labels, volumes, 0.0, probs)
    >>> round(float(uncertainty_map(prediction).max()), 3)
    0.079
    >>> confidence = assess(prediction)
    >>> round(confidence.score, 3), confidence.low
    (0.995, False)
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
    from bratseg.inference.predictor import Prediction

LOW_CONFIDENCE_THRESHOLD: float = 0.80
"""Cases whose :attr:`Confidence.score` is below this are flagged; chosen on the 14 unseen
cases of ``bench/confidence_calibration.py`` (BENCHMARKS.md)."""

LOW_CONFIDENCE_MESSAGE = "low confidence: review carefully"
"""The flag shown by the CLI, the API, the demo and the report for a low-confidence case."""

_WT = 0  # index of the whole tumour in Prediction.probabilities (WT, TC, ET)


@dataclass
class Confidence:
    """A case-level confidence.

    Attributes:
        score: soft whole-tumour Dice between the model's probability map and its predicted
            mask, in [0, 1] (module docstring); higher means more confident. A prediction
            with no tumour and no tumour probability scores 1.
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
        ``confidence 0.62 (low confidence: review carefully)``."""
        text = f"confidence {self.score:.2f}"
        return f"{text} ({self.message})" if self.low else text


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


def soft_dice(probability: np.ndarray, mask: np.ndarray) -> float:
    """Dice between a probability map and a binary mask, ``2 sum(p m) / (sum(p) + sum(m))``;
    1 when both are empty.

    Example:
        >>> soft_dice(np.array([1.0, 0.5, 0.0, 0.0]), np.array([True, True, False, False]))
        0.8571428571428571
    """
    p = np.asarray(probability, dtype=np.float32)
    m = np.asarray(mask, dtype=bool)
    total = float(p.sum(dtype=np.float64)) + float(m.sum())
    if total == 0.0:
        return 1.0
    return 2.0 * float(p[m].sum(dtype=np.float64)) / total


def confidence_score(prediction: Prediction) -> float:
    """The case-level score of :class:`Confidence` (module docstring)."""
    probs = _probabilities(prediction)
    return soft_dice(probs[_WT], prediction.labels != 0)


def assess(prediction: Prediction, threshold: float = LOW_CONFIDENCE_THRESHOLD) -> Confidence:
    """The case-level :class:`Confidence` of a prediction."""
    score = confidence_score(prediction)
    return Confidence(score=score, low=score < threshold, threshold=threshold)
