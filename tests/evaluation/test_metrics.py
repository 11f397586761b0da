"""BraTS metrics: hand-computed cases, an independent SciPy HD95, and real label pairs.

The real pairs are ``../shared/data/metrics`` (BraTS 2023 metastasis labels with a model's
predictions, two of them neither 240 x 240 x 155 nor 1 mm) and the TCGA case's BraTS 2020
algorithm outputs. For the former, the BraTS evaluation package (BraTS/BraTS_evaluation,
``example/sample_mets_metrics.json``) published the whole-volume Dice and the voxel counts of
these very files: they are pinned below as an external reference.
"""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage

from bratseg.data.io import load_volume
from bratseg.errors import InvalidCaseError
from bratseg.evaluation import (
    HD95_EMPTY,
    EvaluationError,
    binary_metrics,
    evaluate_case,
    evaluate_files,
    hd95,
    resolve_scheme,
    to_internal_labels,
)


def scipy_hd95(pred: np.ndarray, ref: np.ndarray, spacing) -> float:
    """Independent HD95 on the full volume: surface = mask minus its 6-connected erosion;
    Euclidean distance transform (in mm) to the other surface; the larger of the two directed
    95th percentiles (linear interpolation)."""
    pred_surface = pred & ~ndimage.binary_erosion(pred)
    ref_surface = ref & ~ndimage.binary_erosion(ref)
    to_ref = ndimage.distance_transform_edt(~ref_surface, sampling=spacing)
    to_pred = ndimage.distance_transform_edt(~pred_surface, sampling=spacing)
    return max(np.percentile(to_ref[pred_surface], 95), np.percentile(to_pred[ref_surface], 95))


def pooled_hd95(pred: np.ndarray, ref: np.ndarray, spacing) -> float:
    """The other common definition (95th percentile of both directions pooled), for contrast."""
    pred_surface = pred & ~ndimage.binary_erosion(pred)
    ref_surface = ref & ~ndimage.binary_erosion(ref)
    to_ref = ndimage.distance_transform_edt(~ref_surface, sampling=spacing)
    to_pred = ndimage.distance_transform_edt(~pred_surface, sampling=spacing)
    return float(np.percentile(np.concatenate([to_ref[pred_surface], to_pred[ref_surface]]), 95))


def random_blob(shape, seed: int, threshold: float) -> np.ndarray:
    noise = np.random.default_rng(seed).standard_normal(shape)
    smooth = ndimage.gaussian_filter(noise, sigma=3)
    return smooth > threshold * smooth.std()


# ----------------------------------------------------------------------------- hand-computed


def test_overlap_metrics_of_two_shifted_cubes():
    ref = np.zeros((10, 10, 10), bool)
    ref[2:6, 2:6, 2:6] = True  # 64 voxels
    pred = np.zeros_like(ref)
    pred[3:7, 2:6, 2:6] = True  # shifted by one: 48 shared, 16 false positives, 16 misses
    m = binary_metrics(pred, ref, spacing=(1.0, 1.0, 2.0))
    assert m["dice"] == pytest.approx(2 * 48 / 128)
    assert m["iou"] == pytest.approx(48 / 80)
    assert m["sensitivity"] == pytest.approx(48 / 64)
    assert m["specificity"] == pytest.approx(920 / 936)  # TN = 1000 - 48 - 16 - 16
    assert m["ref_ml"] == pytest.approx(64 * 2 / 1000) and m["pred_ml"] == pytest.approx(0.128)
    # The symmetric shift of a cube: most surface voxels coincide, the end faces are 1 voxel apart.
    assert m["hd95"] == pytest.approx(scipy_hd95(pred, ref, (1.0, 1.0, 2.0)))


@pytest.mark.parametrize(
    ("spacing", "expected_mm"),
    [
        ((1.0, 1.0, 1.0), 3.0),
        ((1.0, 1.0, 3.0), 9.0),  # planes 3 slices apart along the 3 mm axis
        ((3.0, 1.0, 1.0), 3.0),  # the 3 mm axis is not the one the planes are apart along
        ((0.5, 0.5, 0.5), 1.5),
    ],
)
def test_hd95_honours_anisotropic_spacing(spacing, expected_mm):
    a = np.zeros((8, 8, 8), bool)
    a[2:6, 2:6, 1] = True
    b = np.zeros_like(a)
    b[2:6, 2:6, 4] = True
    # Every voxel of each plane lies exactly 3 slices from the other plane.
    assert hd95(a, b, spacing) == pytest.approx(expected_mm)
    assert hd95(b, a, spacing) == pytest.approx(expected_mm)


def test_hd95_is_a_percentile_not_the_maximum():
    ref = np.zeros((40, 40, 40), bool)
    ref[5:15, 5:15, 5:15] = True  # 488 surface voxels
    pred = ref.copy()
    pred[35, 35, 35] = True  # one stray voxel ~35 mm away: under 5 % of the surface
    assert hd95(pred, ref) == 0.0
    assert binary_metrics(pred, ref)["dice"] == pytest.approx(2000 / 2001)


def test_hd95_is_the_larger_directed_percentile():
    # A 3 x 3 x 5 bar far from the cube is 42 of pred's 530 surface voxels (8 %, above 5 %)
    # but only 4 % of both surfaces pooled: the definitions disagree and ours takes the max.
    ref = np.zeros((40, 40, 40), bool)
    ref[5:15, 5:15, 5:15] = True
    pred = ref.copy()
    pred[30:33, 30:33, 30:35] = True
    spacing = (1.0, 1.0, 1.5)
    value = hd95(pred, ref, spacing)
    assert value > 20
    assert hd95(ref, pred, spacing) == value  # symmetric: not only the prediction's direction
    assert value == pytest.approx(scipy_hd95(pred, ref, spacing), rel=1e-5)
    assert pooled_hd95(pred, ref, spacing) == 0.0


def test_empty_mask_conventions():
    empty = np.zeros((12, 12, 12), bool)
    blob = empty.copy()
    blob[3:6, 3:6, 3:6] = True
    both_empty = binary_metrics(empty, empty)
    assert (both_empty["dice"], both_empty["iou"], both_empty["hd95"]) == (1.0, 1.0, 0.0)
    assert (both_empty["sensitivity"], both_empty["specificity"]) == (1.0, 1.0)

    false_alarm = binary_metrics(blob, empty)  # prediction where the reference has nothing
    assert (false_alarm["dice"], false_alarm["iou"], false_alarm["hd95"]) == (0.0, 0.0, HD95_EMPTY)
    assert false_alarm["sensitivity"] == 0.0
    assert false_alarm["specificity"] == pytest.approx((1728 - 27) / 1728)

    missed = binary_metrics(empty, blob)  # nothing predicted where the reference has tumour
    assert (missed["dice"], missed["hd95"], missed["sensitivity"], missed["specificity"]) == (0.0, HD95_EMPTY, 0, 1)
    assert HD95_EMPTY == 373.13


@pytest.mark.parametrize(
    ("seed", "spacing"),
    [(0, (1.0, 1.0, 1.0)), (1, (0.8, 1.2, 2.5)), (2, (3.0, 0.5, 1.0)), (3, (0.859375, 0.859375, 1.5))],
)
def test_hd95_matches_independent_scipy_implementation(seed, spacing):
    shape = (48, 40, 32)
    ref = random_blob(shape, seed, 1.0)
    pred = random_blob(shape, seed + 100, 1.0) | ref & random_blob(shape, seed + 200, 0.0)
    ref[:, :, 0] |= ref[:, :, 1]  # reach the volume border: the crop must not change the surface
    assert ref.any() and pred.any()
    expected = scipy_hd95(pred, ref, spacing)
    assert hd95(pred, ref, spacing) == pytest.approx(expected, rel=1e-5)
    # Small, nearby structures too (the crop margin matters most there).
    small_ref, small_pred = np.zeros(shape, bool), np.zeros(shape, bool)
    small_ref[10:13, 20:22, 5:7] = True
    small_pred[11:15, 21:24, 6:7] = True
    assert hd95(small_pred, small_ref, spacing) == pytest.approx(scipy_hd95(small_pred, small_ref, spacing), rel=1e-5)


# ----------------------------------------------------------------------------- label maps


def _label_map(et_value: int) -> np.ndarray:
    seg = np.zeros((30, 30, 20), np.uint8)
    seg[5:25, 5:25, 4:16] = 2  # edema
    seg[10:20, 10:20, 6:14] = 1  # necrotic core
    seg[12:18, 12:18, 8:12] = et_value  # enhancing
    return seg


def test_evaluate_case_regions_and_both_schemes():
    ref_2020, ref_2023 = _label_map(4), _label_map(3)
    pred = ref_2020.copy()
    pred[pred == 4] = 1  # the enhancing part predicted as necrosis
    n_et, n_ncr = 6 * 6 * 4, 10 * 10 * 8 - 6 * 6 * 4
    for ref in (ref_2020, ref_2023):
        scores = evaluate_case(pred, ref, spacing=(1.0, 1.0, 2.0))  # "auto": 4 -> 2020, 3 -> 2023
        assert scores["WT"]["dice"] == 1.0 and scores["WT"]["hd95"] == 0.0
        assert scores["TC"]["dice"] == 1.0
        assert scores["ET"]["dice"] == 0.0 and scores["ET"]["hd95"] == HD95_EMPTY
        assert scores["NCR"]["dice"] == pytest.approx(2 * n_ncr / (n_ncr + n_ncr + n_et))
        assert scores["NCR"]["sensitivity"] == 1.0
        assert scores["ED"]["dice"] == 1.0
        assert scores["ET"]["ref_ml"] == pytest.approx(n_et * 2 / 1000)
    explicit = evaluate_case(pred, ref_2023, spacing=(1.0, 1.0, 2.0), pred_scheme="brats2020", ref_scheme="brats2023")
    assert explicit == evaluate_case(pred, ref_2020, spacing=(1.0, 1.0, 2.0))


def test_evaluate_case_rejects_mismatched_shapes():
    with pytest.raises(EvaluationError, match=r"shape \(30, 30, 20\) differs .* \(30, 30, 19\)"):
        evaluate_case(_label_map(4), _label_map(4)[:, :, :19])


def test_scheme_resolution():
    assert resolve_scheme([0, 1, 2, 4]) == "brats2020"
    assert resolve_scheme([0, 2, 3]) == "brats2023"
    assert resolve_scheme([0, 1, 2]) == "brats2020"  # either: same internal labels
    assert resolve_scheme([0, 1, 2, 4], path="BraTS-GLI-00001-000-seg.nii.gz") == "brats2023"  # the name wins
    assert resolve_scheme([0, 3], path="Brats18_2013_11_1_seg.nii.gz") == "brats2020"
    assert resolve_scheme([0, 3], "brats2020") == "brats2020"
    with pytest.raises(InvalidCaseError, match="pred.nii.gz: holds both labels 3 and 4"):
        resolve_scheme([0, 3, 4], path="pred.nii.gz")
    with pytest.raises(EvaluationError, match="unknown label scheme"):
        resolve_scheme([0], "brats2021")


def test_label_values_are_validated():
    labels, scheme = to_internal_labels(np.array([[0, 1], [2, 4]], np.float32))
    assert scheme == "brats2020" and labels.tolist() == [[0, 1], [2, 3]]
    with pytest.raises(InvalidCaseError, match=r"X-seg.nii.gz: label values \[4\] are not in the brats2023"):
        to_internal_labels(np.array([0, 4]), path="X-seg.nii.gz")
    with pytest.raises(InvalidCaseError, match=r"label values \[5, 300\] are not in the brats2020"):
        to_internal_labels(np.array([0, 5, 300], np.float32), path="p.nii.gz")
    with pytest.raises(InvalidCaseError, match=r"p.nii.gz: holds non-integer values \(e.g. 1.5\)"):
        to_internal_labels(np.array([0, 1.5], np.float32), path="p.nii.gz")
    # Float storage error is not a fraction.
    labels, _ = to_internal_labels(np.array([0, 0.9999999, 4.0000005], np.float32))
    assert labels.tolist() == [0, 1, 3]


# ----------------------------------------------------------------------------- real label maps

# Whole-volume Dice (WT, TC, ET) and reference voxel counts (WT) published by the BraTS
# evaluation package for these files.
PUBLISHED = {
    "BraTS-MET-00132-000": ((0.7564775269473256, 0.6887811516543336, 0.6840802390098165), 12971),
    "BraTS-MET-00217-000": ((None, 0.896434730979106, 0.7913234934355378), None),
    "BraTS-MET-00630-001": ((0.9275450621985275, 0.9266599484940097, 0.9147945524385985), 19176),
    "BraTS-MET-01325-000": ((0.9854805103820593, 0.9751643535427319, 0.9721611721611721), 412780),
}


def _metrics_pair(data_dir: Path, case: str) -> tuple[Path, Path]:
    folder = data_dir / "metrics" / case
    if not folder.is_dir():
        pytest.skip(f"{folder} not found")
    ref = next(folder.glob("*-seg.nii.gz"))
    pred = next(p for p in folder.glob("*.nii.gz") if p != ref)
    return pred, ref


@pytest.mark.parametrize("case", sorted(PUBLISHED))
def test_real_brats2023_pairs_match_published_dice(data_dir, case):
    pred, ref = _metrics_pair(data_dir, case)
    result = evaluate_files(pred, ref, case)
    assert (result.ref_scheme, result.pred_scheme) == ("brats2023", "brats2023")
    ref_header_spacing = tuple(float(z) for z in load_volume(ref).header.get_zooms()[:3])
    assert result.spacing == ref_header_spacing
    dice, wt_voxels = PUBLISHED[case]
    for region, expected in zip(("WT", "TC", "ET"), dice):
        if expected is not None:
            assert result.metrics[region]["dice"] == pytest.approx(expected, abs=1e-9), region
    if wt_voxels is not None:
        assert result.metrics["WT"]["ref_ml"] == pytest.approx(wt_voxels * np.prod(result.spacing) / 1000)
    for scores in result.metrics.values():
        assert 0 <= scores["dice"] <= 1 and 0 <= scores["hd95"] <= HD95_EMPTY


def test_real_anisotropic_pair_hd95_matches_scipy(data_dir):
    pred_path, ref_path = _metrics_pair(data_dir, "BraTS-MET-00630-001")
    result = evaluate_files(pred_path, ref_path)
    assert result.shape == (256, 256, 106)
    assert result.spacing == pytest.approx((0.8594, 0.8594, 1.5), abs=1e-4)
    pred = np.rint(load_volume(pred_path).data).astype(np.uint8)
    ref = np.rint(load_volume(ref_path).data).astype(np.uint8)
    # Distance transforms of the full 7 M voxels take seconds each: keep the tumours' box with
    # a wide margin (no surface voxel touches the box's faces, so the distances are unchanged).
    lo = np.argwhere((pred > 0) | (ref > 0)).min(axis=0) - 5
    hi = np.argwhere((pred > 0) | (ref > 0)).max(axis=0) + 6
    assert (lo > 0).all() and (hi < pred.shape).all()
    box = tuple(slice(a, b) for a, b in zip(lo, hi))
    pred, ref = pred[box], ref[box]
    for region, values in (("WT", (1, 2, 3)), ("ET", (3,))):
        expected = scipy_hd95(np.isin(pred, values), np.isin(ref, values), result.spacing)
        assert result.metrics[region]["hd95"] == pytest.approx(expected, rel=1e-5), region
    # Ignoring the 1.5 mm slices would give another number: the spacing is really used.
    assert hd95(pred > 0, ref > 0, (1.0, 1.0, 1.0)) != pytest.approx(result.metrics["WT"]["hd95"], rel=1e-3)


def test_real_tcga_algorithm_outputs(tcga_case):
    seg = tcga_case / "segmentation"
    isen = evaluate_files(seg / "isen-20.nii.gz", seg / "consensus-mav.nii.gz")
    assert isen.spacing == (1.0, 1.0, 1.0) and isen.shape == (240, 240, 155)
    assert isen.metrics["WT"]["dice"] > 0.8
    assert isen.metrics["TC"]["dice"] > 0.8
    assert isen.metrics["WT"]["hd95"] < 10
    # Neither map has enhancing tumour (label 4): the both-empty convention.
    assert (isen.metrics["ET"]["dice"], isen.metrics["ET"]["hd95"]) == (1.0, 0.0)
    # hnfnetv1-20 marks 352 voxels enhancing where the consensus has none.
    hnf = evaluate_files(seg / "hnfnetv1-20.nii.gz", seg / "consensus-mav.nii.gz")
    assert hnf.pred_scheme == "brats2020"
    assert (hnf.metrics["ET"]["dice"], hnf.metrics["ET"]["hd95"]) == (0.0, HD95_EMPTY)
    assert hnf.metrics["ET"]["pred_ml"] == pytest.approx(0.352)


def test_real_mismatched_files_raise_typed_errors(data_dir, tcga_case, tmp_path):
    pred, _ = _metrics_pair(data_dir, "BraTS-MET-00630-001")
    consensus = tcga_case / "segmentation" / "consensus-mav.nii.gz"
    with pytest.raises(InvalidCaseError, match=r"BraTS-MET-00630-001.nii.gz: shape \(256, 256, 106\) differs .*"):
        evaluate_files(pred, consensus)
    with pytest.raises(InvalidCaseError, match="consensus-mav.nii.gz's"):
        evaluate_files(pred, consensus)
    # Same shape, other voxel grid: the BraTS 2023 case in the same 240 x 240 x 155 shape.
    other_grid, _ = _metrics_pair(data_dir, "BraTS-MET-00132-000")
    with pytest.raises(
        InvalidCaseError, match=r"affine differs from the reference consensus-mav.nii.gz's.*RAS .* vs LPS"
    ):
        evaluate_files(other_grid, consensus)


def test_a_brats2017_label_at_origin_zero_is_scored_voxel_by_voxel(data_dir, tmp_path):
    # Brats17_TCIA_105_1's expert label sits at origin 0 while its images (and so a prediction
    # written with their affine) carry the real origin: voxel-aligned, scored as such.
    case = data_dir / "brats-extra" / "Brats17_TCIA_105_1"
    if not case.is_dir():
        pytest.skip(f"case not found at {case}")
    seg = nib.load(case / "Brats17_TCIA_105_1_seg.nii.gz")
    flair = nib.load(case / "Brats17_TCIA_105_1_flair.nii.gz")
    assert np.allclose(seg.affine[:3, 3], 0) and not np.allclose(flair.affine[:3, 3], 0)
    pred = tmp_path / "Brats17_TCIA_105_1.nii.gz"
    nib.save(nib.Nifti1Image(np.asarray(seg.dataobj).astype(np.uint8), flair.affine), str(pred))
    result = evaluate_files(pred, case / "Brats17_TCIA_105_1_seg.nii.gz")
    assert result.metrics["WT"]["dice"] == 1.0
    # Any other origin difference is still another grid.
    shifted = flair.affine.copy()
    shifted[:3, 3] += (0.0, 0.0, 5.0)
    moved = tmp_path / "moved.nii.gz"
    nib.save(nib.Nifti1Image(np.asarray(seg.dataobj).astype(np.uint8), shifted), str(moved))
    with pytest.raises(InvalidCaseError, match="affine differs"):
        evaluate_files(moved, pred)
