"""The way back from BraTS space and the working grid to the patient's own grid: labels from
the region probabilities, the brain mask, and the sequences to show them over
(:func:`back_to_patient`), and any other BraTS-space volume (:func:`from_brats_space`).

The patient's grid may be far finer than the model's (0.5 mm in-plane: 35 million voxels per
sequence), so each step here makes one full-size array at a time and shares the scans' own
buffers where nothing needs resampling.

Example:
    >>> import SimpleITK as sitk
    >>> mask = sitk.Image(10, 10, 5, sitk.sitkUInt8)
    >>> mask[2:8, 2:8, 1:4] = 1
    >>> fine = sitk.Image(20, 20, 5, sitk.sitkUInt8)
    >>> fine.SetSpacing((0.5, 0.5, 1.0))
    >>> fine.SetOrigin((-0.25, -0.25, 0.0))
    >>> int(to_array(mask_on(mask, fine, sitk.Transform())).sum()), 6 * 6 * 3 * 4  # each voxel now four
    (432, 432)
"""

from __future__ import annotations

from dataclasses import dataclass

import nibabel as nib
import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from bratseg.data.labels import regions_to_labels, to_brats2020, to_internal
from bratseg.native.reader import Scan
from bratseg.native.space import (
    BRATS_AFFINE,
    affine_transform_from_ras,
    array_view,
    chain,
    grid_image,
    resample,
    rigid_ras_matrix,
    to_array,
    to_sitk,
)
from bratseg.native.steps import StepLog
from bratseg.native.to_brats import BratsSpaceCase, grid_text

# Probabilities this far (in BraTS voxels) outside the post-processed label map are kept when
# resampling back, so small components removed in BraTS space do not come back while the
# border of the kept tumour is interpolated from its own sub-threshold values.
_KEEP_MARGIN_VOXELS = 2


@dataclass
class PatientGrid:
    """A native case's result on the grid of its reference sequence.

    ``labels`` are BraTS 2020 labels (0/1/2/4) with the reference scan's affine and header;
    ``brain_mask`` is the skull strip on that grid; ``images`` the sequences co-registered
    onto it (float32 ``[x, y, z]`` arrays in the label map's voxel order), to show the labels
    over the patient's own scans. ``atlas_to_reference`` is the 4 x 4 matrix (RAS world
    coordinates, NiftyReg's convention) taking BraTS/atlas coordinates to the reference
    scan's, and ``t1ce_to_sequence`` holds, for every sequence, the matrix taking T1ce
    coordinates to that sequence's (the rigid co-registration). ``mask_on_t1ce`` is the brain
    mask on the T1ce's full grid (for the intermediate files).
    """

    labels: nib.Nifti1Image
    brain_mask: nib.Nifti1Image
    images: dict[str, np.ndarray]
    atlas_to_reference: np.ndarray
    t1ce_to_sequence: dict[str, np.ndarray]
    mask_on_t1ce: sitk.Image


def back_to_patient(
    case: BratsSpaceCase, labels: np.ndarray, probabilities: np.ndarray | None, steps: StepLog, keep_scans: bool = False
) -> PatientGrid:
    """The BraTS-space ``labels`` (BraTS 2020 values) and region ``probabilities`` (None: the
    labels by nearest neighbour) of ``case`` on its reference grid, as step "back to the
    patient". The scans are released as they are used unless ``keep_scans``."""
    scans, reference, to_t1ce = case.scans, case.reference, case.to_t1ce
    ref = scans[reference]
    with steps.step("back to the patient") as say:
        to_ref_grid = chain(to_t1ce[reference].GetInverse(), case.atlas_to_t1ce.GetInverse())  # ref point -> BraTS
        internal = labels_on(ref, labels, probabilities, to_ref_grid)
        ref_to_t1ce = to_t1ce[reference].GetInverse()
        mask_on_t1ce = mask_on(case.brain_mask, scans["t1ce"].image, sitk.Transform())
        ref_mask = mask_on_t1ce if reference == "t1ce" else mask_on(case.brain_mask, ref.image, ref_to_t1ce)
        # Every sequence on the reference grid, for showing the labels over the patient's scans:
        # a float32 sequence already there is shown as it is (no copy), the others resampled or
        # cast, each releasing its scan (unless kept for the intermediate files) as it goes.
        on_ref = {}
        for modality in list(scans):
            on_ref[modality] = on_reference(scans[modality], ref, chain(ref_to_t1ce, to_t1ce[modality]))
            if not keep_scans and modality != reference:
                del scans[modality]
        say(f"region probabilities resampled onto {ref.name} ({grid_text(ref)}) and thresholded at 0.5")
    return PatientGrid(
        labels=nifti_like(to_brats2020(internal), ref),
        brain_mask=nifti_like(to_array(ref_mask), ref),
        images=on_ref,
        atlas_to_reference=rigid_ras_matrix(chain(case.atlas_to_t1ce, to_t1ce[reference])),
        t1ce_to_sequence={m: rigid_ras_matrix(t) for m, t in to_t1ce.items()},
        mask_on_t1ce=mask_on_t1ce,
    )


def from_brats_space(
    volume: np.ndarray, brats_affine: np.ndarray, atlas_to_reference: np.ndarray, like: nib.Nifti1Image, order: int = 1
) -> nib.Nifti1Image:
    """A BraTS-space volume (say, an uncertainty map) resampled onto the grid of ``like`` (the
    label map on the reference grid) through ``atlas_to_reference`` (linear by default;
    ``order`` 0: nearest neighbour), as float32 with ``like``'s affine."""
    image = to_sitk(np.asarray(volume, dtype=np.float32), brats_affine)
    to_brats = affine_transform_from_ras(np.linalg.inv(atlas_to_reference))  # reference -> BraTS world
    grid = grid_image(like.shape, like.affine)
    data = array_view(resample(image, grid, to_brats, linear=order != 0))
    header = like.header.copy()
    header.set_data_dtype(np.float32)
    return nib.Nifti1Image(data, like.affine, header)


def nifti_like(data: np.ndarray, scan: Scan) -> nib.Nifti1Image:
    """A uint8 map on ``scan``'s grid with its affine and header, as the data layer writes labels."""
    header = scan.header.copy()
    header.set_data_dtype(np.uint8)
    image = nib.Nifti1Image(data.astype(np.uint8, copy=False), scan.affine, header)
    image.header.set_slope_inter(1, 0)
    return image


def labels_on(
    ref: Scan, labels: np.ndarray, probabilities: np.ndarray | None, ref_to_brats: sitk.Transform
) -> np.ndarray:
    """Internal labels on ``ref``'s grid from the BraTS-space region probabilities (WT, TC, ET),
    kept near the post-processed BraTS-space ``labels``; without probabilities, ``labels``
    themselves by nearest neighbour."""
    if probabilities is None:  # a segmenter without probabilities: labels by nearest neighbour
        image = to_sitk(to_internal(labels), BRATS_AFFINE)
        return to_array(resample(image, ref.image, ref_to_brats, linear=False, pixel_type=sitk.sitkUInt8))
    kept = ndimage.binary_dilation(labels > 0, iterations=_KEEP_MARGIN_VOXELS)
    regions = []
    for region in range(3):
        p = np.where(kept, probabilities[region].astype(np.float32), np.float32(0))
        resampled = resample(to_sitk(p, BRATS_AFFINE), ref.image, ref_to_brats)
        regions.append(sitk.GetArrayViewFromImage(resampled).transpose(2, 1, 0) > 0.5)
        del resampled
    return regions_to_labels(np.stack(regions))


def mask_on(brain_mask: sitk.Image, grid: sitk.Image, transform: sitk.Transform) -> sitk.Image:
    """The working-grid brain mask on a (finer) grid: linear, thresholded at one half, so that its
    outline is smooth where the working grid is coarser; exact where the grids are one."""
    if grid.GetSize() == brain_mask.GetSize() and np.allclose(grid.GetSpacing(), brain_mask.GetSpacing()):
        return resample(brain_mask, grid, transform, linear=False, pixel_type=sitk.sitkUInt8)
    moved = resample(sitk.Cast(brain_mask, sitk.sitkFloat32), grid, transform)
    return sitk.Cast(sitk.BinaryThreshold(moved, 0.5, 2.0, 1, 0), sitk.sitkUInt8)


def on_reference(scan: Scan, ref: Scan, ref_to_scan: sitk.Transform) -> np.ndarray:
    """``scan`` on the reference grid as a float32 ``[x, y, z]`` array: where it is on that grid
    already and aligned with it, its own buffer (or a float32 cast of an integer scan), else
    resampled."""
    if scan is ref or (_is_identity(ref_to_scan) and _same_grid(scan.image, ref.image)):
        as_float = (
            scan.image if scan.image.GetPixelID() == sitk.sitkFloat32 else sitk.Cast(scan.image, sitk.sitkFloat32)
        )
        return array_view(as_float)
    return array_view(resample(scan.image, ref.image, ref_to_scan))


def _is_identity(transform: sitk.Transform) -> bool:
    probe = np.vstack([np.zeros(3), 100.0 * np.eye(3)])
    return all(np.allclose(transform.TransformPoint(tuple(p)), p, atol=1e-6) for p in probe)


def _same_grid(a: sitk.Image, b: sitk.Image) -> bool:
    return (
        a.GetSize() == b.GetSize()
        and np.allclose(a.GetSpacing(), b.GetSpacing(), atol=1e-6)
        and np.allclose(a.GetOrigin(), b.GetOrigin(), atol=1e-4)
        and np.allclose(a.GetDirection(), b.GetDirection(), atol=1e-6)
    )
