"""Voxel geometry of NIfTI volumes: what a usable grid looks like, and exact reorientation.

- :func:`geometry_problem` names what makes a grid unusable (too few voxels, a non-finite,
  singular or rank-deficient affine, voxel sizes no MRI scanner produces, a header whose voxel
  size disagrees with its affine); :func:`bratseg.data.io.load_volume` refuses such files.
- :func:`reorient_onto` brings a volume stored in another voxel order (axes permuted or
  flipped, with an affine that says so) onto a reference grid, when that maps the two grids
  exactly: the same voxels in world space, only enumerated differently. Anything else is
  misregistration and is left to the caller to refuse.

Example:
    >>> import numpy as np
    >>> ref = np.diag([-1.0, -1.0, 1.0, 1.0]); ref[1, 3] = 9.0
    >>> data = np.arange(10 * 10 * 4, dtype=np.float32).reshape(10, 10, 4)
    >>> flipped_affine = ref.copy(); flipped_affine[:, 0] *= -1; flipped_affine[0, 3] = -9.0
    >>> back = reorient_onto(data[::-1], flipped_affine, ref, data.shape)
    >>> bool(np.array_equal(back, data))
    True
    >>> geometry_problem((1, 1, 1), ref, (1.0, 1.0, 1.0))
    'shape (1, 1, 1) is too small for a brain scan (at least 4 voxels along each axis)'
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from nibabel import orientations

MIN_AXIS_VOXELS = 4
# MRI voxels range from about 0.1 mm (high-resolution research scans) to about 10 mm (thick
# clinical slices); outside this range the header is broken, not the scan unusual.
VOXEL_SIZE_RANGE_MM = (0.05, 20.0)
_ZOOM_TOLERANCE = 0.01  # relative: header voxel sizes and the affine's agree to float precision
_GRID_TOLERANCE = 1e-3  # mm, as for the modalities of one BraTS case
_SINGULAR_MM = 1e-4  # a voxel thinner than this in some direction has no 3-D extent


def voxel_sizes(affine: np.ndarray) -> np.ndarray:
    """Voxel edge lengths in mm along the three voxel axes (the affine's column norms)."""
    return np.linalg.norm(np.asarray(affine, dtype=np.float64)[:3, :3], axis=0)


def geometry_problem(shape: Sequence[int], affine: np.ndarray, zooms: Sequence[float] | None = None) -> str | None:
    """Why a volume's grid cannot be a brain scan, or None when it can.

    ``zooms`` are the header's voxel sizes (``header.get_zooms()[:3]``); when given they must
    agree with the affine, since volumes in cm3 come from the one and the written label map
    carries the other.
    """
    shape = tuple(int(n) for n in shape)
    if min(shape) < MIN_AXIS_VOXELS:
        return f"shape {shape} is too small for a brain scan (at least {MIN_AXIS_VOXELS} voxels along each axis)"
    affine = np.asarray(affine, dtype=np.float64)
    if affine.shape != (4, 4) or not np.isfinite(affine).all():
        return "the affine (voxel-to-world matrix) holds NaN or infinite values"
    singular = np.linalg.svd(affine[:3, :3], compute_uv=False)
    if singular[-1] < _SINGULAR_MM:
        rank = int((singular >= _SINGULAR_MM).sum())
        return f"the affine (voxel-to-world matrix) is singular (rank {rank} of 3): voxels have no 3-D position"
    lo, hi = VOXEL_SIZE_RANGE_MM
    sizes = voxel_sizes(affine)
    if sizes.min() < lo or sizes.max() > hi:
        return f"voxel size {_mm(sizes)} from the affine is outside the plausible {lo:g}-{hi:g} mm"
    if zooms is not None:
        zooms = np.asarray(zooms, dtype=np.float64)
        if not np.isfinite(zooms).all() or zooms.min() < lo or zooms.max() > hi:
            return f"header voxel size {_mm(zooms)} is outside the plausible {lo:g}-{hi:g} mm"
        if np.any(np.abs(zooms - sizes) > _ZOOM_TOLERANCE * sizes):
            return f"header voxel size {_mm(zooms)} disagrees with the affine's {_mm(sizes)}"
    return None


def _mm(sizes: np.ndarray) -> str:
    return " x ".join(f"{s:.4g}" for s in sizes) + " mm"


def _transform(affine: np.ndarray, ref_affine: np.ndarray) -> np.ndarray:
    """nibabel's orientation transform from ``affine``'s voxel axes to ``ref_affine``'s."""
    return orientations.ornt_transform(orientations.io_orientation(affine), orientations.io_orientation(ref_affine))


def reorient_onto(
    data: np.ndarray, affine: np.ndarray, ref_affine: np.ndarray, ref_shape: Sequence[int]
) -> np.ndarray | None:
    """``data`` (on ``affine``'s grid) in the voxel order of the reference grid, or None when
    no permutation or flip of its axes lands exactly on that grid (true misregistration, or
    already the same order)."""
    if np.allclose(affine, ref_affine, atol=_GRID_TOLERANCE):
        return None
    transform = _transform(affine, ref_affine)
    if np.array_equal(transform, [[0, 1], [1, 1], [2, 1]]):
        return None  # same voxel order: the affines differ by more than an axis flip
    moved_affine = affine @ orientations.inv_ornt_aff(transform, data.shape)
    moved = orientations.apply_orientation(data, transform)
    if moved.shape != tuple(ref_shape) or not np.allclose(moved_affine, ref_affine, atol=_GRID_TOLERANCE):
        return None
    return np.ascontiguousarray(moved)


def axis_flips(affine: np.ndarray, ref_affine: np.ndarray) -> str:
    """How ``affine``'s voxel order differs from ``ref_affine``'s, in words (for a warning)."""
    transform = _transform(affine, ref_affine)
    parts = []
    order = [int(a) for a in transform[:, 0]]
    if order != [0, 1, 2]:
        parts.append("axes permuted " + "".join("xyz"[i] for i in np.argsort(order)))
    flipped = [axis for axis, (_, sign) in zip("xyz", transform) if sign < 0]
    if flipped:
        parts.append("flipped along " + ", ".join(flipped))
    return " and ".join(parts)


def bounding_box(mask: np.ndarray, margin: int = 0) -> tuple[slice, ...] | None:
    """Slices of the smallest box holding ``mask``'s True voxels, grown by ``margin`` and
    clipped to the array; None when the mask is empty.

    >>> bounding_box(np.array([0, 1, 1, 0, 0], bool), margin=1)
    (slice(0, 4, None),)
    """
    box = []
    for axis in range(mask.ndim):
        others = tuple(a for a in range(mask.ndim) if a != axis)
        hits = np.flatnonzero(mask.any(axis=others))
        if hits.size == 0:
            return None
        box.append(slice(max(int(hits[0]) - margin, 0), min(int(hits[-1]) + margin + 1, mask.shape[axis])))
    return tuple(box)
