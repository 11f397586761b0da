"""The part of the window a batch of slices needs: the brain's in-plane box, grown to a size
the U-Net takes.

The window (160 x 192 for the shipped models) is sized for the largest brains at their widest
slice. Slices near the top and bottom of the head hold much less brain, and outside the brain
every probability is set to zero anyway, so each batch of neighbouring slices runs the network
on the brain's box over those slices only: a third less work on a typical case. The box keeps
a margin of background around the brain, so that the convolutions' zero padding stays away
from the tissue (BENCHMARKS.md measures the agreement with the whole window).

Example:
    >>> import numpy as np
    >>> brain = np.zeros((160, 192, 4), dtype=bool)
    >>> brain[60:100, 70:130] = True          # a small brain section: 40 x 60 voxels
    >>> brain_box(brain, multiple=32, margin=8)
    (slice(48, 112, None), slice(52, 148, None))
    >>> brain_box(np.zeros((160, 192, 4), dtype=bool), multiple=32, margin=8)  # no brain
"""

from __future__ import annotations

import numpy as np

# Every encoder stage halves the slice: 5 stages need sides divisible by 2**5.
UNET_MULTIPLE = 32
# Background kept on each side of the brain (voxels, 1 mm): the measured agreement with the
# whole window is in BENCHMARKS.md ("Brain box").
DEFAULT_MARGIN = 8


def brain_box(
    brain: np.ndarray, multiple: int = UNET_MULTIPLE, margin: int = DEFAULT_MARGIN
) -> tuple[slice, slice] | None:
    """The in-plane box ``(x, y)`` of a ``[X, Y, n]`` brain mask (its union over the slices)
    with ``margin`` voxels around it, grown to a multiple of ``multiple`` on each side, centred
    on the brain and kept inside the window (the whole window where it does not fit); None
    when no slice holds brain."""
    if brain.ndim != 3:
        raise ValueError(f"brain mask must be [X, Y, n], not shape {brain.shape}")
    section = brain.any(axis=2)
    if not section.any():
        return None
    return tuple(
        _side(np.flatnonzero(section.any(axis=other)), size, multiple, margin)
        for size, other in ((section.shape[0], 1), (section.shape[1], 0))
    )


def _side(index: np.ndarray, size: int, multiple: int, margin: int) -> slice:
    """One side of the box: ``index`` (sorted voxel positions) plus ``margin``, grown to a
    multiple of ``multiple`` around its centre, inside ``[0, size)``."""
    need = int(index[-1]) + 1 - int(index[0]) + 2 * margin
    length = min(size, -(-need // multiple) * multiple)
    centre = (int(index[0]) + int(index[-1]) + 1) // 2
    start = min(max(centre - length // 2, 0), size - length)
    return slice(start, start + length)
