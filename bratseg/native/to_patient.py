"""The way back from BraTS space and the working grid to the patient's own grid: labels from
the region probabilities, the brain mask, and the sequences to show them over.

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

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from bratseg.data.labels import regions_to_labels, to_internal
from bratseg.inference.prediction import Prediction
from bratseg.native.reader import Scan
from bratseg.native.space import BRATS_AFFINE, array_view, resample, to_array, to_sitk

# Probabilities this far (in BraTS voxels) outside the post-processed label map are kept when
# resampling back, so small components removed in BraTS space do not come back while the
# border of the kept tumour is interpolated from its own sub-threshold values.
_KEEP_MARGIN_VOXELS = 2


def labels_on(ref: Scan, brats: Prediction, ref_to_brats: sitk.Transform) -> np.ndarray:
    """Internal labels on ``ref``'s grid from the BraTS-space region probabilities."""
    probabilities = brats.probabilities
    if probabilities is None:  # a segmenter without probabilities: labels by nearest neighbour
        labels = to_internal(brats.labels)
        image = to_sitk(labels, BRATS_AFFINE)
        return to_array(resample(image, ref.image, ref_to_brats, linear=False, pixel_type=sitk.sitkUInt8))
    kept = ndimage.binary_dilation(brats.labels > 0, iterations=_KEEP_MARGIN_VOXELS)
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
