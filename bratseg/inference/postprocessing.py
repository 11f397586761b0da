"""Post-processing of predicted label maps.

Small islands of whole tumour far from the lesion are the commonest error of a slice-wise
model; they cost little Dice but dominate HD95. nnU-Net removes such components when that
helps on validation; we do the same with a size rule.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage


def remove_small_components(labels: np.ndarray, min_fraction: float) -> np.ndarray:
    """Set to background every 3-D connected component of the whole tumour (labels > 0)
    smaller than ``min_fraction`` times the largest one; 0 disables.

    Example:
        >>> labels = np.zeros((20, 20, 20), dtype=np.uint8)
        >>> labels[2:10, 2:10, 2:10] = 2; labels[15, 15, 15] = 4
        >>> int((remove_small_components(labels, 0.1) > 0).sum())
        512
    """
    if min_fraction <= 0:
        return labels
    components, n = ndimage.label(labels > 0)
    if n <= 1:
        return labels
    sizes = np.bincount(components.ravel())
    sizes[0] = 0
    drop = sizes < min_fraction * sizes.max()
    drop[0] = False
    out = labels.copy()
    out[drop[components]] = 0
    return out


def relabel_small_enhancing(labels: np.ndarray, min_voxels: int, enhancing: int = 4, core: int = 1) -> np.ndarray:
    """Relabel all enhancing tumour as necrotic / non-enhancing core when the case holds
    fewer than ``min_voxels`` enhancing voxels (0 disables), as nnU-Net does for BraTS.

    BraTS scores a case whose reference has no enhancing tumour with ET Dice 1 only if the
    prediction has none either, and low-grade gliomas often have none: a few enhancing voxels
    predicted there cost a whole case's ET Dice, while real enhancing tumour is rarely that
    small. The tumour core is unchanged (enhancing tumour belongs to it). ``enhancing`` and
    ``core`` are the label values (BraTS 2020's 4 and 1 by default).

    Example:
        >>> labels = np.zeros((10, 10, 10), dtype=np.uint8); labels[:3, :3, :3] = 4
        >>> int((relabel_small_enhancing(labels, 50) == 1).sum()), int((relabel_small_enhancing(labels, 20) == 4).sum())
        (27, 27)
    """
    if min_voxels <= 0:
        return labels
    is_enhancing = labels == enhancing
    if 0 < int(is_enhancing.sum()) < min_voxels:
        labels = labels.copy()
        labels[is_enhancing] = core
    return labels
