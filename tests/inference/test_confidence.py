"""The uncertainty map and the case-level confidence score (bratseg.inference.confidence).

Synthetic probability maps check the behaviour (a sharp map is confident, a blurred one is
not); the shipped model on a real validation case checks the maps on real output. The score's
correlation with Dice is validated in bench/confidence_calibration.py, not here.
"""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage, special

from bratseg.data.io import CaseVolumes
from bratseg.errors import BratsegError, ConfidenceError
from bratseg.inference.confidence import (
    LOW_CONFIDENCE_MESSAGE,
    LOW_CONFIDENCE_THRESHOLD,
    POSSIBLE_PROBABILITY,
    SURE_PROBABILITY,
    Confidence,
    assess,
    binary_entropy,
    save_uncertainty,
    sure_fraction,
    uncertainty_image,
    uncertainty_map,
)
from bratseg.inference.predictor import Prediction

SHAPE = (48, 48, 40)


def _volumes() -> CaseVolumes:
    affine = np.diag([-1.0, -1.0, 1.0, 1.0])
    header = nib.Nifti1Image(np.zeros(SHAPE, np.float32), affine).header
    brain = np.ones(SHAPE, dtype=np.float32)
    return CaseVolumes("SYNTH_1", {"flair": brain, "t1ce": brain}, affine, header)


def _prediction(width: float, radius_vox: float = 15.0) -> Prediction:
    """A spherical tumour of radius ``radius_vox`` whose probabilities fall from 1 to 0 over
    about ``width`` voxels at its border (labels: the probabilities thresholded at 0.5)."""
    grid = np.indices(SHAPE).astype(np.float32)
    radius = np.sqrt(((grid - np.array(SHAPE, np.float32)[:, None, None, None] / 2) ** 2).sum(axis=0))
    wt = special.expit((radius_vox - radius) / width)
    probs = np.stack([wt, wt * 0.8, wt * 0.5]).astype(np.float16)
    labels = np.where(probs[0] > 0.5, 2, 0).astype(np.uint8)
    labels[probs[1] > 0.5] = 1
    return Prediction(labels, _volumes(), 0.0, probs)


def test_binary_entropy_is_zero_when_sure_and_one_bit_at_half():
    h = binary_entropy(np.array([0.0, 1e-6, 0.25, 0.5, 0.75, 1.0]))
    assert h.dtype == np.float32
    assert h[0] == 0.0 and h[-1] == 0.0 and h[1] < 1e-4
    assert h[3] == pytest.approx(1.0)
    assert h[2] == pytest.approx(h[4]) == pytest.approx(0.8113, abs=1e-4)


def test_uncertainty_map_shape_range_and_where_it_is_high():
    prediction = _prediction(width=1.0)
    u = uncertainty_map(prediction)
    assert u.shape == SHAPE and u.dtype == np.float32
    assert 0.0 <= u.min() and u.max() <= 1.0
    border = ndimage.binary_dilation(prediction.labels > 0) & ~ndimage.binary_erosion(prediction.labels > 0)
    far = ndimage.distance_transform_edt(prediction.labels == 0) > 8
    assert u[border].mean() > 0.5  # at the border some region is near probability 0.5
    assert u[far].max() < 0.01  # far from the tumour the model is sure
    # It is the largest of the three regions' entropies.
    expected = np.max([binary_entropy(p.astype(np.float32)) for p in prediction.probabilities], axis=0)
    np.testing.assert_allclose(u, expected, atol=1e-6)


def test_uncertainty_image_round_trips_through_nifti(tmp_path):
    prediction = _prediction(width=2.0)
    img = uncertainty_image(prediction)
    assert img.get_data_dtype() == np.float32
    path = save_uncertainty(prediction, tmp_path / "case_uncertainty.nii.gz")
    back = nib.load(path)
    np.testing.assert_array_equal(np.asarray(back.dataobj), uncertainty_map(prediction))
    np.testing.assert_allclose(back.affine, prediction.volumes.affine)
    assert back.get_data_dtype() == np.float32
    assert not list(tmp_path.glob(".*.tmp"))  # written atomically, no temporary left


def test_sharp_map_is_confident_blurred_map_is_flagged():
    sharp, blurred = assess(_prediction(width=0.2)), assess(_prediction(width=2.0))
    assert sharp.score > 0.8 and not sharp.low
    assert blurred.score < LOW_CONFIDENCE_THRESHOLD and blurred.low
    assert blurred.message == LOW_CONFIDENCE_MESSAGE == "low confidence: review carefully"
    assert LOW_CONFIDENCE_MESSAGE in blurred.describe() and "review" not in sharp.describe()
    assert sharp.to_dict() == {"score": round(sharp.score, 3), "low": False}
    assert blurred.to_dict()["low"] is True


def test_score_is_the_sure_share_of_the_possible_tumour():
    prediction = _prediction(width=1.0)
    p = prediction.probabilities[0]
    expected = (p > SURE_PROBABILITY).sum() / (p > POSSIBLE_PROBABILITY).sum()
    assert assess(prediction).score == pytest.approx(expected)
    # For a sphere: the radius inside which p > 0.9, over the one inside which p > 0.1, cubed.
    assert expected == pytest.approx(((15 - np.log(9)) / (15 + np.log(9))) ** 3, abs=0.03)
    # A smaller tumour with the same border is less certain, as its Dice would be lower.
    assert assess(_prediction(width=1.0, radius_vox=8.0)).score < expected - 0.1
    assert sure_fraction(np.zeros((4, 4))) == 1.0  # nothing possibly tumour: sure there is none


def test_threshold_is_respected():
    prediction = _prediction(width=2.0)
    score = assess(prediction).score
    assert assess(prediction, threshold=score + 0.01).low
    assert not assess(prediction, threshold=score - 0.01).low
    assert Confidence(0.5, True).threshold == LOW_CONFIDENCE_THRESHOLD


def test_missing_or_mismatched_probabilities_raise_a_typed_error():
    prediction = _prediction(width=1.0)
    without = Prediction(prediction.labels, prediction.volumes, 0.0)
    with pytest.raises(ConfidenceError, match="SYNTH_1: the prediction has no region probabilities"):
        assess(without)
    wrong = Prediction(prediction.labels, prediction.volumes, 0.0, prediction.probabilities[:, :10])
    with pytest.raises(BratsegError, match="do not match"):
        uncertainty_map(wrong)


@pytest.fixture(scope="module")
def real_prediction(brats18_case, one_torch_thread):
    import bratseg

    return bratseg.from_pretrained().segment(brats18_case)


def test_real_case(real_prediction):
    u = uncertainty_map(real_prediction)
    assert u.shape == real_prediction.labels.shape and u.dtype == np.float32
    assert 0.0 <= u.min() and u.max() <= 1.0
    brain = np.any([image != 0 for image in real_prediction.volumes.images.values()], axis=0)
    tumour = real_prediction.labels > 0
    assert u[~brain].max() == 0.0  # the brain: non-zero voxels of any modality
    far = brain & (ndimage.distance_transform_edt(~tumour) > 10)
    border = ndimage.binary_dilation(tumour) & ~ndimage.binary_erosion(tumour)
    assert u[far].mean() < 0.02
    assert u[border].mean() > 10 * u[far].mean()
    confidence = assess(real_prediction)
    # A case the shipped model trained on: it is sure of most of the tumour (0.887 measured),
    # above its own threshold, which the model folder carries (0.76, bratseg.json).
    assert confidence.threshold == 0.76
    assert 0.82 < confidence.score < 0.95 and not confidence.low
