"""Checks only the native pipeline can make, each a one-line reason naming the file: slices too
thick to use, sequences that stay misaligned after registration, a skull strip that failed.

``*_problem`` functions return the reason to refuse (or None), ``*_warnings`` the doubts that
let the prediction go on; the caller puts the file's name in front. The thresholds and what
they were measured on are beside them.

Example:
    >>> slice_problem((0.9, 0.9, 12.0))
    'slices 12.0 mm apart are too thick to use (at most 8 mm)'
"""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk

# Clinical axial series have 3-6 mm slices; the native TCGA case has 5.5 mm. Beyond 8 mm a
# BraTS-space slice is interpolated from slices more than a small tumour apart.
SLICE_REFUSE_MM = 8.0
SLICE_WARN_MM = 6.0
# Normalised mutual information with the T1ce over its brain mask dilated by 6 voxels in-plane
# (brain and skull): 1.047-1.086 for the T1, T2 and FLAIR of TCGA-FG-6692 once registered,
# at most 1.025 for the same pairs moved 5 mm and 3 degrees off (1.014 at 15 mm and 10 degrees).
MIN_COREGISTERED_NMI = 1.035
# Brain volume of a deepbet mask: the 27 labelled BraTS cases' brains span 1173-1729 cm3; adult
# brains with CSF 900-2000 cm3. Outside 700-2300 cm3 the mask holds skull or lost brain.
BRAIN_CM3 = (700.0, 2300.0)
# Brain on an outer face of the scan (except the faces across the head's long axis, since the
# lowest slice often cuts through the cerebellum), against the brain's mean cross-section
# parallel to that face: 0 in TCGA-FG-6692; about 1 for a brain the field of view cuts through,
# or a mask that leaked into the background.
EDGE_REFUSE = 0.25
EDGE_WARN = 0.05


def slice_problem(spacing: tuple[float, float, float]) -> str | None:
    """Refuse a scan whose thickest voxel side exceeds :data:`SLICE_REFUSE_MM`."""
    thickest = max(spacing)
    if thickest > SLICE_REFUSE_MM:
        return f"slices {thickest:.1f} mm apart are too thick to use (at most {SLICE_REFUSE_MM:g} mm)"
    return None


def slice_warnings(spacing: tuple[float, float, float]) -> list[str]:
    thickest = max(spacing)
    if thickest > SLICE_WARN_MM:
        return [f"{thickest:.1f} mm slices: tumour borders between slices are interpolated"]
    return []


def coregistration_problem(reference: str, similarity: float) -> str | None:
    """Refuse a sequence that still looks unrelated to the reference after registration."""
    if similarity < MIN_COREGISTERED_NMI:
        return (
            f"still misaligned with {reference} after registration (normalised mutual information {similarity:.3f}, "
            f"aligned sequences score above {MIN_COREGISTERED_NMI}); is it the same patient and study?"
        )
    return None


def brain_mask_problem(mask: sitk.Image) -> str | None:
    """Refuse a skull strip whose brain volume is outside an adult range, or that covers the
    edge of the field of view."""
    volume_cm3 = _volume_cm3(mask)
    low, high = BRAIN_CM3
    if not low <= volume_cm3 <= high:
        return (
            f"skull stripping failed: brain volume {volume_cm3:.0f} cm3 is outside the adult range "
            f"{low:.0f}-{high:.0f} cm3"
        )
    if _edge_share(mask) > EDGE_REFUSE:
        return "skull stripping failed: the brain mask runs into the edge of the field of view"
    return None


def brain_mask_warnings(mask: sitk.Image) -> list[str]:
    share = _edge_share(mask)
    if EDGE_WARN < share <= EDGE_REFUSE:
        return ["the brain touches the edge of the field of view; part of it may be cut off"]
    return []


def _volume_cm3(mask: sitk.Image) -> float:
    voxels = int(np.count_nonzero(sitk.GetArrayViewFromImage(mask)))
    return voxels * float(np.prod(mask.GetSpacing())) / 1000.0


def _edge_share(mask: sitk.Image) -> float:
    """The largest share, over the side faces of the scan, of brain on the face against the
    brain's mean cross-section parallel to it (see :data:`EDGE_REFUSE`)."""
    array = np.moveaxis(sitk.GetArrayViewFromImage(mask) > 0, (0, 1, 2), (2, 1, 0))  # [x, y, z]
    total = int(array.sum())
    if total == 0:
        return 0.0
    direction = np.array(mask.GetDirection()).reshape(3, 3)
    head_axis = int(np.argmax(np.abs(direction[2])))  # the voxel axis closest to inferior-superior
    worst = 0.0
    for axis in {0, 1, 2} - {head_axis}:
        others = tuple(a for a in range(3) if a != axis)
        per_plane = array.sum(axis=others)
        mean_area = total / max(int(np.count_nonzero(per_plane)), 1)
        worst = max(worst, float(per_plane[0]) / mean_area, float(per_plane[-1]) / mean_area)
    return worst
