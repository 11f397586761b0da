"""Label schemes and the BraTS evaluation regions.

Inside bratseg labels are contiguous: 0 background, 1 necrotic / non-enhancing core (NCR),
2 peritumoral edema (ED), 3 enhancing tumour (ET). On disk we read BraTS 2017-2020
(0/1/2/4) and BraTS 2023+ (0/1/2/3) label maps and always write BraTS 2020's 0/1/2/4.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

LabelScheme = Literal["brats2020", "brats2023"]

BACKGROUND, NCR, ED, ET = 0, 1, 2, 3
CLASS_NAMES = ("background", "necrotic_core", "edema", "enhancing")

# Values of each on-disk scheme, in the order of the internal labels 0..3.
SCHEME_VALUES: dict[str, tuple[int, int, int, int]] = {
    "brats2020": (0, 1, 2, 4),
    "brats2023": (0, 1, 2, 3),
}

# The three overlapping regions BraTS evaluates, as sets of internal labels.
REGIONS: dict[str, tuple[int, ...]] = {
    "WT": (NCR, ED, ET),  # whole tumour
    "TC": (NCR, ET),  # tumour core
    "ET": (ET,),  # enhancing tumour
}
REGION_NAMES = {"WT": "whole tumour", "TC": "tumour core", "ET": "enhancing tumour"}


def to_internal(seg: np.ndarray, scheme: LabelScheme = "brats2020") -> np.ndarray:
    """Map an on-disk label map to the internal 0..3 labels (uint8).

    Raises ``ValueError`` listing the values outside the scheme (fractional values included).
    """
    values = SCHEME_VALUES[scheme]
    lut = np.full(256, 255, dtype=np.uint8)
    for internal, on_disk in enumerate(values):
        lut[on_disk] = internal
    seg_int = np.rint(seg).astype(np.int64, copy=False)
    if np.issubdtype(seg.dtype, np.floating):
        # Fractional labels mean a label map resampled with interpolation: rounding them
        # would silently invent classes at tumour borders.
        fractional = np.abs(seg - seg_int) > 1e-3
        if fractional.any():
            found = sorted({float(v) for v in np.unique(seg[fractional])[:10]})
            raise ValueError(f"label values {found} are not integers; the {scheme} scheme is {list(values)}")
    # Look values up clipped to the table, then flag both clipped and unmapped ones, so the
    # message lists every bad value, not only those outside 0..255.
    clipped = np.clip(seg_int, 0, 255)
    out = lut[clipped]
    bad = (out == 255) | (clipped != seg_int)
    if bad.any():
        found = sorted({int(v) for v in np.unique(seg_int[bad])[:10]})
        raise ValueError(f"label values {found} are not in the {scheme} scheme {list(values)}")
    return out


def to_brats2020(labels: np.ndarray) -> np.ndarray:
    """Internal 0..3 labels to BraTS 2020's 0/1/2/4 (uint8)."""
    lut = np.array(SCHEME_VALUES["brats2020"], dtype=np.uint8)
    return lut[labels]


def labels_to_regions(labels: np.ndarray) -> np.ndarray:
    """Internal labels ``[...]`` to stacked binary region masks ``[3, ...]`` (WT, TC, ET)."""
    return np.stack([np.isin(labels, members) for members in REGIONS.values()])


def regions_to_labels(regions: np.ndarray) -> np.ndarray:
    """Binary region masks ``[3, ...]`` (WT, TC, ET) to internal labels.

    Nested as nnU-Net does for BraTS: ET wins, then the rest of TC is NCR, then the rest
    of WT is edema, so the output is consistent even when the masks are not nested.
    """
    wt, tc, et = (regions[i].astype(bool) for i in range(3))
    labels = np.zeros(wt.shape, dtype=np.uint8)
    labels[wt] = ED
    labels[tc] = NCR
    labels[et] = ET
    return labels
