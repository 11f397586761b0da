"""Brain mask and per-modality z-score normalisation inside the brain.

The background of a skull-stripped scan is one constant value: 0 in BraTS files, but another
constant after a whole-volume normalisation or a header intercept (``scl_inter``). The value
that fills the volume's border is taken as the background, so such input gives the same mask
as its BraTS original; on BraTS data (border all 0) the mask is exactly "non-zero in any
modality", as it always was.
"""

from __future__ import annotations

import numpy as np

# The border value counts as background only when it fills more than half of the border: a
# skull-stripped scan's border is all background (at least 98.6 % of it in the 27 labelled
# BraTS cases, where the brain touches the bottom slice); noisy air has no dominant value.
BACKGROUND_MIN_BORDER_SHARE = 0.5


def border_voxels(data: np.ndarray) -> np.ndarray:
    """The voxels on the faces of a volume, six for a 3-D one (edge voxels counted more than once)."""
    # Basic indexing (views), not np.take, which gathers through the whole array.
    faces = [data[(slice(None),) * axis + (end,)] for axis in range(data.ndim) for end in (0, -1)]
    return np.concatenate([np.ravel(face) for face in faces])


def background_value(data: np.ndarray) -> tuple[float, float]:
    """The background of a volume and the share of its border that value fills.

    The background is the value that fills more than half of the border (0 is tried first: it
    is BraTS's, and counting it needs no sort); when no value does, it is 0 and the share
    returned is that of the commonest border value.

    Example:
        >>> import numpy as np
        >>> x = np.full((6, 6, 6), -0.75, dtype=np.float32)
        >>> x[2:4, 2:4, 2:4] = 2.0
        >>> background_value(x)
        (-0.75, 1.0)
    """
    border = border_voxels(data)
    zeros = np.count_nonzero(border == 0) / border.size
    if zeros > BACKGROUND_MIN_BORDER_SHARE:
        return 0.0, zeros
    values, counts = np.unique(border, return_counts=True)
    best = int(np.argmax(counts))
    share = float(counts[best]) / border.size
    return (float(values[best]), share) if share > BACKGROUND_MIN_BORDER_SHARE else (0.0, share)


def foreground(data: np.ndarray) -> np.ndarray:
    """Voxels of one modality that differ from its background (:func:`background_value`)."""
    return data != background_value(data)[0]


def brain_mask(images: dict[str, np.ndarray]) -> np.ndarray:
    """Voxels that differ from the background in any modality. Each modality's background is
    the value that fills most of its border (0 for BraTS files, which are skull-stripped onto
    a zero background), else 0.

    Example:
        >>> import numpy as np
        >>> flair = np.zeros((5, 5, 5), dtype=np.float32); flair[2, 2, 2] = 3.0
        >>> t1ce = np.full((5, 5, 5), 100.0, dtype=np.float32); t1ce[2, 2, 1:3] = 180.0  # offset 100
        >>> int(brain_mask({"flair": flair, "t1ce": t1ce}).sum())
        2
    """
    mask = np.zeros(next(iter(images.values())).shape, dtype=bool)
    for data in images.values():
        mask |= foreground(data)
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
    mean, std = zscore_stats(data, mask)
    out = np.zeros(data.shape, dtype=np.float32)
    out[mask] = (data[mask].astype(np.float64) - mean) / std
    return out


def zscore_stats(data: np.ndarray, mask: np.ndarray) -> tuple[float, float]:
    """The mean and standard deviation (floored at 1e-8) that :func:`zscore` applies: those of
    ``data``'s voxels inside ``mask`` (0 and 1 for an empty mask)."""
    values = data[mask].astype(np.float64)
    if not values.size:
        return 0.0, 1.0
    return float(values.mean()), max(float(values.std()), 1e-8)
