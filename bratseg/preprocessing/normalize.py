"""Brain mask and per-modality z-score normalisation inside the brain."""

from __future__ import annotations

import numpy as np


def brain_mask(images: dict[str, np.ndarray]) -> np.ndarray:
    """Voxels that are non-zero in any modality (BraTS images are skull-stripped, so the
    background is exactly 0)."""
    mask = np.zeros(next(iter(images.values())).shape, dtype=bool)
    for data in images.values():
        mask |= data != 0
    return mask


def zscore(data: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Z-score ``data`` with the mean and standard deviation of its voxels inside ``mask``;
    0 outside. Works on raw integer scans and on already-normalised float input alike.

    Example:
        >>> import numpy as np
        >>> x = np.array([0, 10, 20, 30], dtype=np.int16)
        >>> [round(float(v), 3) for v in zscore(x, x != 0)]
        [0.0, -1.225, 0.0, 1.225]
    """
    values = data[mask].astype(np.float64)
    mean = values.mean() if values.size else 0.0
    std = values.std() if values.size else 1.0
    out = np.zeros(data.shape, dtype=np.float32)
    out[mask] = (values - mean) / max(std, 1e-8)
    return out
