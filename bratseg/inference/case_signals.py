"""Measurements on a case's images that tell whether the model can be trusted on it, for
:mod:`bratseg.inference.guards`: each modality's background, the brain mask's size, rim and
reach, left-right mirroring between modalities, T1ce enhancement over T1.

:class:`CaseSignals` computes each measurement once, when first asked for, so the checks cost
a fraction of a second on a BraTS case.

Example:
    >>> import numpy as np
    >>> t1 = np.zeros((40, 40, 20), dtype=np.float32)
    >>> t1[12:30, 8:32, 4:16] = 100.0
    >>> signals = CaseSignals({"t1": t1}, np.eye(4))
    >>> round(signals.cm3, 3), signals.worst_face, signals.window_fraction((160, 192))
    (5.184, ('left', 0.0), 1.0)
    >>> CaseSignals({"flair": t1, "t1": t1[::-1].copy()}, np.eye(4)).mirrored(margin=0.003)
    ['flair', 't1']
"""

from __future__ import annotations

from functools import cached_property

import nibabel as nib
import numpy as np
from scipy import ndimage

from bratseg.data.geometry import bounding_box, voxel_sizes
from bratseg.preprocessing.crop import window_fraction
from bratseg.preprocessing.normalize import background_value

RIM_MM = 3  # the outer shell that skull stripping leaves as cortex and CSF
_WORDS = {"L": "left", "R": "right", "A": "front", "P": "back", "S": "top", "I": "bottom"}
_OPPOSITE = {"L": "R", "R": "L", "A": "P", "P": "A", "S": "I", "I": "S"}


class CaseSignals:
    """What the guards measure on one case's images (``{modality: array}`` on one grid with
    ``affine``)."""

    def __init__(self, images: dict[str, np.ndarray], affine: np.ndarray, mask: np.ndarray | None = None):
        self.images = images
        self.affine = np.asarray(affine, dtype=np.float64)
        self.spacing = voxel_sizes(self.affine)
        if mask is not None:  # the brain mask already made from these images: not made again
            self.__dict__["mask"] = mask

    @cached_property
    def backgrounds(self) -> dict[str, tuple[float, float]]:
        """Per modality: its background value and the share of the border that value fills."""
        return {modality: background_value(data) for modality, data in self.images.items()}

    @cached_property
    def masks(self) -> dict[str, np.ndarray]:
        """Per modality: the voxels that differ from its background."""
        return {m: data != self.backgrounds[m][0] for m, data in self.images.items()}

    @cached_property
    def mask(self) -> np.ndarray:
        """The brain mask: as :func:`bratseg.preprocessing.normalize.brain_mask` makes it."""
        masks = iter(self.masks.values())
        union = next(masks).copy()
        for mask in masks:
            union |= mask
        return union

    @property
    def cm3(self) -> float:
        return float(np.count_nonzero(self.mask)) * float(np.prod(self.spacing)) / 1000

    @cached_property
    def extent_mm(self) -> tuple[float, float, float]:
        """Bounding-box size of the brain in mm along the voxel axes."""
        extent = [float(b.stop - b.start) * s for b, s in zip(self._box, self.spacing)]
        return extent[0], extent[1], extent[2]

    @property
    def box(self) -> tuple[slice, slice, slice]:
        """The brain mask's bounding box: where every content check looks."""
        return self._box

    @cached_property
    def _box(self) -> tuple[slice, slice, slice]:
        box = bounding_box(self.mask)  # projections: 10x faster than ndimage.find_objects here
        return box if box is not None else (slice(0, 0),) * 3

    @cached_property
    def worst_face(self) -> tuple[str, float]:
        """The face of the volume the brain covers most, in words, and the share covered."""
        codes = nib.aff2axcodes(self.affine)
        best = (_face_name(0, 0, codes[0]), 0.0)
        for axis in range(3):
            for end in (0, -1):
                share = float(self.mask[(slice(None),) * axis + (end,)].mean())
                if share > best[1]:
                    best = (_face_name(axis, end, codes[axis]), share)
        return best

    def window_fraction(self, size: tuple[int, int]) -> float:
        """Share of the brain inside the model's in-plane window of ``size`` voxels."""
        return window_fraction(self.mask, size)

    @cached_property
    def rim(self) -> np.ndarray:
        """The brain mask's outer shell, :data:`RIM_MM` voxels deep."""
        return rim_of(self.mask)

    @cached_property
    def rim_contrast(self) -> dict[str, float]:
        """Per T1-weighted modality: the rim's median minus the brain's, in brain SDs."""
        out = {}
        for modality in ("t1", "t1ce"):
            data = self.images.get(modality)
            if data is None or not self.rim.any():
                continue
            inside = data[self.mask]
            spread = float(inside.std())
            if spread > 0:
                out[modality] = (float(np.median(data[self.rim])) - float(np.median(inside))) / spread
        return out

    def mirrored(self, margin: float) -> list[str]:
        """Modalities whose brain outline matches most of the others' better when flipped
        left-right than as given, by more than ``margin`` in Dice. With two modalities both
        are named: which one is mirrored cannot be told."""
        names = list(self.masks)
        if len(names) < 2:
            return []
        axis = left_right_axis(self.affine)
        counts = {m: np.count_nonzero(mask) for m, mask in self.masks.items()}
        against = dict.fromkeys(names, 0)
        for i, a in enumerate(names):
            flipped = np.flip(self.masks[a], axis=axis)
            for b in names[i + 1 :]:
                total = counts[a] + counts[b]
                as_given = np.count_nonzero(self.masks[a] & self.masks[b])
                as_flipped = np.count_nonzero(flipped & self.masks[b])
                if total and 2 * (as_given - as_flipped) / total < -margin:
                    against[a] += 1
                    against[b] += 1
        return [m for m in names if against[m] > (len(names) - 1) / 2]

    def enhancement_excess(self) -> float | None:
        """Per mille of the brain brighter on T1ce than on T1 by more than half the median,
        minus the reverse (each image over its background, scaled by its median in the brain):
        contrast uptake shows as a positive excess; T1 given as T1ce gives 0, the two swapped a
        negative one. None without both T1 and T1ce."""
        if "t1" not in self.images or "t1ce" not in self.images:
            return None
        scaled = []
        for modality in ("t1", "t1ce"):
            inside = self.images[modality][self.mask].astype(np.float64) - self.backgrounds[modality][0]
            median = float(np.median(inside)) if inside.size else 0.0
            scaled.append(inside / median if median > 0 else inside)
        difference = scaled[1] - scaled[0]
        if difference.size == 0:
            return 0.0
        brighter, darker = np.count_nonzero(difference > 0.5), np.count_nonzero(difference < -0.5)
        return 1000 * (float(brighter) - float(darker)) / difference.size


def _face_name(axis: int, end: int, code: str) -> str:
    # An axis code names where indices grow towards: the last slice lies on that side.
    return _WORDS[code if end == -1 else _OPPOSITE[code]]


def left_right_axis(affine: np.ndarray) -> int:
    """The voxel axis closest to the world's left-right direction."""
    ornt = nib.orientations.io_orientation(affine)
    return int(np.flatnonzero(ornt[:, 0] == 0)[0])


def rim_of(mask: np.ndarray, within: np.ndarray | None = None) -> np.ndarray:
    """The outer :data:`RIM_MM` voxels of ``mask``, where ``within`` is (default: everywhere).
    The erosion runs in a box around ``within`` (or the mask) only: several times faster
    than over the whole volume, and exact, since a voxel's rim status depends on voxels at
    most :data:`RIM_MM` away."""
    rim = np.zeros_like(mask)
    box = bounding_box(mask if within is None else within, margin=1 if within is None else RIM_MM + 1)
    if box is None:
        return rim
    inner = mask[box]
    # Voxels beyond the volume count as brain: a brain cut by the field of view has no rim
    # on that face, only where skull stripping drew its outline.
    rim[box] = inner & ~ndimage.binary_erosion(inner, iterations=RIM_MM, border_value=1)
    return rim


def rim_share(region: np.ndarray, mask: np.ndarray) -> float | None:
    """Share of ``region``'s voxels in the outer :data:`RIM_MM` voxels of ``mask`` (None when
    the region is empty)."""
    total = int(np.count_nonzero(region))
    if total == 0:
        return None
    return int(np.count_nonzero(region & rim_of(mask, within=region))) / total
