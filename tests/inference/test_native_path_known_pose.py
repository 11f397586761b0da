"""A labelled BraTS case moved into a known native pose (each sequence rotated and shifted its
own way, resampled to 5 mm axial slices, the label moved with the T1ce) and run through the
native pipeline: the label must come back with a small, measured Dice loss against the fast
path on the original BraTS-space case, and the recovered transforms must match the known ones."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from bratseg.data.io import load_case
from bratseg.data.labels import REGIONS, labels_to_regions, to_internal
from bratseg.data.layout import case_from_folder
from bratseg.inference.native_path import segment_native
from bratseg.native.space import BRATS_AFFINE, chain, rigid_ras_matrix, to_array, to_sitk

# (angles about x, y, z in degrees, translation in mm) of native point -> BraTS point, per grid.
POSES = {"t1ce": ((6.0, -4.0, 8.0), (5.0, -7.0, 4.0)), "other": ((-5.0, 3.0, -6.0), (-6.0, 4.0, -8.0))}
# Largest Dice loss allowed in BraTS space, per region (measured: see the test).
BRATS_LOSS = {"WT": 0.1, "TC": 0.15, "ET": 0.25}
GRIDS = {"t1ce": ((256, 256, 32), (0.9375, 0.9375, 5.0)), "other": ((232, 256, 30), (1.0, 0.9, 5.0))}


def _pose(name: str, centre: tuple[float, ...]) -> sitk.Euler3DTransform:
    angles, shift = POSES[name]
    transform = sitk.Euler3DTransform()
    transform.SetCenter(centre)
    transform.SetRotation(*np.radians(angles))
    transform.SetTranslation(shift)
    return transform


def _grid(name: str, centre: np.ndarray) -> sitk.Image:
    size, spacing = GRIDS[name]
    grid = sitk.Image(size, sitk.sitkFloat32)
    grid.SetSpacing(spacing)
    grid.SetOrigin(tuple(centre - (np.array(size) - 1) / 2 * np.array(spacing)))
    return grid


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2.0 * float((a & b).sum()) / max(float(a.sum() + b.sum()), 1.0)


def _region_dice(labels: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    ours, ref = labels_to_regions(labels), labels_to_regions(truth)
    return {name: _dice(ours[i], ref[i]) for i, name in enumerate(REGIONS)}


@pytest.fixture(scope="module")
def moved(brats18_case: Path):
    """The case's images and label in native poses, with the transforms that made them."""
    volumes = load_case(case_from_folder(brats18_case))
    brats_images = {m: to_sitk(d, BRATS_AFFINE) for m, d in volumes.images.items()}
    centre = np.array(brats_images["t1ce"].TransformContinuousIndexToPhysicalPoint((119.5, 119.5, 77.0)))
    poses = {name: _pose(name, tuple(centre)) for name in POSES}
    grids = {name: _grid(name, centre) for name in GRIDS}
    native = {}
    for modality, image in brats_images.items():
        which = "t1ce" if modality in ("t1ce", "t1") else "other"
        native[modality] = sitk.Resample(image, grids[which], poses[which], sitk.sitkLinear, 0.0, sitk.sitkFloat32)
    label = to_sitk(volumes.label, BRATS_AFFINE)
    truth = to_array(sitk.Resample(label, grids["t1ce"], poses["t1ce"], sitk.sitkNearestNeighbor, 0, sitk.sitkUInt8))
    return volumes, native, poses, grids, truth


@pytest.fixture(scope="module")
def segmenter():
    import bratseg

    return bratseg.from_pretrained()


def test_label_recovered_in_native_pose(moved, segmenter) -> None:
    volumes, native, poses, grids, truth = moved
    result = segment_native(segmenter, native)
    labels = to_internal(np.asanyarray(result.native.labels.dataobj))
    assert labels.shape == truth.shape
    native_dice = _region_dice(labels, truth)

    # The fast path on the untouched BraTS-space case, its labels moved into the same pose.
    fast = segmenter.segment(volumes)
    fast_image = to_sitk(to_internal(fast.labels), BRATS_AFFINE)
    fast_native = to_array(
        sitk.Resample(fast_image, grids["t1ce"], poses["t1ce"], sitk.sitkNearestNeighbor, 0, sitk.sitkUInt8)
    )
    fast_dice = _region_dice(fast_native, truth)
    # And in BraTS space: what the model saw after 5 mm slices and two registrations, against
    # the original case, each scored against the expert label.
    native_brats = _region_dice(to_internal(result.model_space.labels), volumes.label)
    fast_brats = _region_dice(to_internal(fast.labels), volumes.label)
    print("native pose", native_dice, fast_dice, "BraTS space", native_brats, fast_brats)
    # Measured on Brats18_2013_11_1 with the shipped model, which trained on this case (native
    # pipeline vs fast path), on the native grid: WT 0.929 vs 0.935, TC 0.736 vs 0.748, ET 0.565
    # vs 0.626 (the fast path's labels moved by nearest neighbour, ours resampled as
    # probabilities); in BraTS space: WT 0.933 vs 0.937, TC 0.736 vs 0.752, ET 0.433 vs 0.644.
    # This case's enhancing rim is thin, and 5 mm slices lose much of it: the model that knows
    # the case best loses the most (the model before it: ET 0.160 vs 0.287).
    for region, loss in (("WT", 0.05), ("TC", 0.08), ("ET", 0.1)):
        assert native_dice[region] >= fast_dice[region] - loss, (region, native_dice, fast_dice)
    for region, loss in BRATS_LOSS.items():
        assert native_brats[region] >= fast_brats[region] - loss, (region, native_brats, fast_brats)

    # The transforms found match the ones that made the poses.
    brain = np.argwhere(volumes.images["t1ce"] > 0)[::211]
    atlas_points = np.c_[brain, np.ones(len(brain))] @ BRATS_AFFINE.T
    truth_atlas_to_t1ce = rigid_ras_matrix(poses["t1ce"].GetInverse())
    error = np.linalg.norm((atlas_points @ (result.native.atlas_to_reference - truth_atlas_to_t1ce).T)[:, :3], axis=1)
    assert error.mean() < 2.5, error.mean()  # measured 1.7 mm
    t1ce_points = atlas_points @ truth_atlas_to_t1ce.T
    truth_t1ce_to_flair = rigid_ras_matrix(chain(poses["t1ce"], poses["other"].GetInverse()))
    error = np.linalg.norm(
        (t1ce_points @ (result.native.t1ce_to_sequence["flair"] - truth_t1ce_to_flair).T)[:, :3], axis=1
    )
    assert error.mean() < 1.5, error.mean()  # measured 1.0 mm


def test_aligned_sequences_are_not_registered_and_moved_ones_are(brats18_case: Path) -> None:
    """Two sequences of one BraTS case share a grid and a head position: the scanner's geometry
    passes the alignment check and nothing is registered. The same FLAIR turned 4 degrees and
    shifted 5 mm on the same grid fails it (though its similarity, 1.061, is above the refusal
    threshold), and is registered back within 1 mm."""
    from bratseg.native import checks
    from bratseg.native.registration import coregister, similarity_region

    volumes = load_case(case_from_folder(brats18_case))
    t1ce, flair = (to_sitk(volumes.images[m].astype(np.float32), BRATS_AFFINE) for m in ("t1ce", "flair"))
    region = similarity_region(sitk.Cast(t1ce > 0, sitk.sitkUInt8))
    aligned = coregister(t1ce, flair, region, checks.MIN_COREGISTERED_NMI)
    assert not aligned.registered and aligned.similarity >= checks.MIN_COREGISTERED_NMI
    assert np.allclose(rigid_ras_matrix(aligned.transform), np.eye(4))

    centre = t1ce.TransformContinuousIndexToPhysicalPoint((119.5, 119.5, 77.0))
    pose = sitk.Euler3DTransform()
    pose.SetCenter(centre)
    pose.SetRotation(*np.radians((0.0, 2.0, 4.0)))
    pose.SetTranslation((5.0, -3.0, 0.0))
    moved = sitk.Resample(flair, t1ce, pose.GetInverse(), sitk.sitkLinear, 0.0, sitk.sitkFloat32)
    found = coregister(t1ce, moved, region, checks.MIN_COREGISTERED_NMI)
    assert found.registered and found.similarity > found.similarity_before + 0.03
    brain = np.argwhere(volumes.images["t1ce"] > 0)[::401]
    points = np.c_[brain, np.ones(len(brain))] @ BRATS_AFFINE.T
    truth = rigid_ras_matrix(pose)  # t1ce point -> moved FLAIR point
    error = np.linalg.norm((points @ (rigid_ras_matrix(found.transform) - truth).T)[:, :3], axis=1)
    assert error.mean() < 1.0, error.mean()


def test_half_millimetre_case_on_one_grid(brats18_case: Path, segmenter) -> None:
    """FLAIR and T1ce of a BraTS case moved onto a 0.5 x 0.5 x 1 mm grid (480 x 480 x 155, one
    grid: a common clinical 3-D acquisition), given in memory: skull stripping and registration
    run on the 1 mm working grid, the FLAIR is found aligned (not registered), the labels come
    back on the fine grid, and the whole tumour matches the moved expert label."""
    volumes = load_case(case_from_folder(brats18_case))
    label = to_sitk(volumes.label.astype(np.uint8), BRATS_AFFINE)
    fine = sitk.Image(480, 480, 155, sitk.sitkUInt8)
    fine.SetSpacing((0.5, 0.5, 1.0))
    fine.SetDirection(label.GetDirection())
    fine.SetOrigin(label.TransformContinuousIndexToPhysicalPoint((-0.25, -0.25, 0.0)))
    images = {
        m: sitk.Resample(to_sitk(volumes.images[m].astype(np.float32), BRATS_AFFINE), fine, sitk.Transform())
        for m in ("flair", "t1ce")
    }
    truth = to_array(sitk.Resample(label, fine, sitk.Transform(), sitk.sitkNearestNeighbor, 0, sitk.sitkUInt8))
    result = segment_native(segmenter, images)
    steps = " ".join(result.steps)
    assert "1x1x1 mm working grid" in steps and "flair already aligned with t1ce" in steps
    assert result.native.labels.shape == (480, 480, 155) and result.native.brain_mask.shape == (480, 480, 155)
    assert np.allclose(result.volumes.images["t1ce"][::7, ::7, ::5], to_array(images["t1ce"])[::7, ::7, ::5])
    labels = to_internal(np.asanyarray(result.native.labels.dataobj))
    dice = _region_dice(labels, truth)
    assert dice["WT"] >= 0.85, dice
