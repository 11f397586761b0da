"""Fixed-size in-plane window centred on the brain, and optional resizing."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def brain_window(mask: np.ndarray, size: tuple[int, int]) -> tuple[int, int]:
    """Start (x, y) of a ``size`` window centred on the brain's in-plane bounding box.

    The start may be negative or the window may run past the volume: :func:`crop_xy` pads.
    """
    xs = np.flatnonzero(mask.any(axis=(1, 2)))
    ys = np.flatnonzero(mask.any(axis=(0, 2)))
    starts = []
    for idx, extent, length in ((xs, size[0], mask.shape[0]), (ys, size[1], mask.shape[1])):
        centre = (idx[0] + idx[-1] + 1) // 2 if idx.size else length // 2
        starts.append(int(centre - extent // 2))
    return starts[0], starts[1]


def crop_xy(data: np.ndarray, start: tuple[int, int], size: tuple[int, int]) -> np.ndarray:
    """Crop the first two axes of ``data`` to ``[start, start + size)``, zero-padding where
    the window leaves the volume."""
    out = np.zeros(size + data.shape[2:], dtype=data.dtype)
    src, dst = [], []
    for s, n, length in zip(start, size, data.shape[:2]):
        lo, hi = max(s, 0), min(s + n, length)
        src.append(slice(lo, hi))
        dst.append(slice(lo - s, hi - s))
    out[dst[0], dst[1]] = data[src[0], src[1]]
    return out


def uncrop_xy(data: np.ndarray, start: tuple[int, int], full_shape: tuple[int, ...]) -> np.ndarray:
    """Inverse of :func:`crop_xy`: place a cropped array back into a zero volume."""
    out = np.zeros(full_shape, dtype=data.dtype)
    src, dst = [], []
    for s, n, length in zip(start, data.shape[:2], full_shape[:2]):
        lo, hi = max(s, 0), min(s + n, length)
        dst.append(slice(lo, hi))
        src.append(slice(lo - s, hi - s))
    out[dst[0], dst[1]] = data[src[0], src[1]]
    return out


def resize_slices(x: torch.Tensor, size: tuple[int, int], nearest: bool = False) -> torch.Tensor:
    """Resize a ``[N, C, H, W]`` batch in-plane (bilinear, or nearest for labels)."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    if nearest:
        return F.interpolate(x, size=size, mode="nearest")
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


def window_fraction(mask: np.ndarray, size: tuple[int, int]) -> float:
    """Share of the ``mask`` voxels inside the ``size`` window that :func:`brain_window`
    centres on it: what the model sees of the brain (1.0 for an empty mask).

    Example:
        >>> mask = np.zeros((300, 200, 2), dtype=bool)
        >>> mask[:, 50:150] = True  # a "brain" 300 voxels long, for a 160-voxel window
        >>> round(window_fraction(mask, (160, 192)), 3)
        0.533
    """
    total = int(mask.sum())
    if total == 0:
        return 1.0
    start = brain_window(mask, size)
    return int(crop_xy(mask, start, size).sum()) / total
