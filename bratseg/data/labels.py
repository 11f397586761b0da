"""Label schemes, the BraTS evaluation regions, and the tumour regions of a label map.

Inside bratseg labels are contiguous: 0 background, 1 necrotic / non-enhancing core (NCR),
2 peritumoral edema (ED), 3 enhancing tumour (ET). On disk we read BraTS 2017-2020
(0/1/2/4) and BraTS 2023+ (0/1/2/3) label maps and always write BraTS 2020's 0/1/2/4.

The named regions (:data:`REGION_LABELS`: whole tumour, tumour core, enhancing tumour and the
single labels) and their volumes are counted on BraTS 2020 (0/1/2/4) maps, what predictions
and measurements carry; the CLI's report, the web front ends and the RANO measurement share
them.

Example:
    >>> labels = np.zeros((10, 10, 10), dtype=np.uint8); labels[:2] = 2; labels[2:3] = 4
    >>> region_volumes(labels, spacing=(1.0, 1.0, 1.0))["whole tumour"]
    0.3
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


# Decathlon value -> the BraTS 2023 value of the same class (1 NCR, 2 ED, 3 ET): 1 and 2 swap.
_TO_BRATS2023 = np.array([0, 2, 1, 3], dtype=np.int64)


def decathlon_to_internal(seg: np.ndarray) -> np.ndarray:
    """Decathlon labels (0 background, 1 edema, 2 non-enhancing, 3 enhancing; the Medical
    Segmentation Decathlon's Task01_BrainTumour) to the internal 0..3 labels. Raises
    ``ValueError`` for values outside 0..3 or fractional values.

    >>> decathlon_to_internal(np.array([0, 1, 2, 3])).tolist()  # edema, non-enhancing, enhancing
    [0, 2, 1, 3]
    """
    values = np.rint(seg).astype(np.int64)
    if np.issubdtype(seg.dtype, np.floating) and np.abs(seg - values).max(initial=0) > 1e-3:
        raise ValueError("label values are not integers; the decathlon scheme is [0, 1, 2, 3]")
    bad = (values < 0) | (values > 3)
    if bad.any():
        raise ValueError(f"label values {sorted(set(np.unique(values[bad]).tolist()))[:10]} are not in [0, 1, 2, 3]")
    return to_internal(_TO_BRATS2023[values], "brats2023")


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


# Display name -> BraTS 2020 label values.
REGION_LABELS: dict[str, tuple[int, ...]] = {
    "whole tumour": (1, 2, 4),
    "tumour core": (1, 4),
    "enhancing tumour": (4,),
    "necrotic core": (1,),
    "edema": (2,),
}
# The original project's choices of ``part_of_tumor`` and the region each one shows.
ORIGINAL_PARTS: dict[str, str] = {
    "all_the_tumor": "whole tumour",
    "NECROTIC/CORE": "necrotic core",
    "EDEMA": "edema",
    "ENHANCING": "enhancing tumour",
}


def resolve_region(name: str) -> str:
    """A region's display name from a display name, a BraTS key (WT, TC, ET) or one of the
    original project's ``part_of_tumor`` values. Raises ``KeyError`` for anything else."""
    keys = {"WT": "whole tumour", "TC": "tumour core", "ET": "enhancing tumour"}
    for table in (REGION_LABELS, ORIGINAL_PARTS, keys):
        if name in table:
            return name if table is REGION_LABELS else table[name]
    lowered = name.strip().lower().replace("_", " ")
    if lowered in REGION_LABELS:
        return lowered
    choices = list(REGION_LABELS) + list(ORIGINAL_PARTS) + list(keys)
    raise KeyError(f"unknown region {name!r}; choose one of {choices}")


def region_masks(labels: np.ndarray) -> dict[str, np.ndarray]:
    """Boolean mask of each region in :data:`REGION_LABELS`."""
    return {name: np.isin(labels, values) for name, values in REGION_LABELS.items()}


def region_volumes(labels: np.ndarray, spacing: tuple[float, float, float]) -> dict[str, float]:
    """Volume of each region in cm3 (voxel count x voxel volume in mm3 / 1000)."""
    return volumes_from_counts(np.bincount(labels.ravel(), minlength=5), spacing)


def volumes_from_counts(counts: np.ndarray, spacing: tuple[float, float, float]) -> dict[str, float]:
    """:func:`region_volumes` from the label values' voxel counts (``np.bincount`` of a
    0/1/2/4 map), for callers that count them anyway."""
    voxel_mm3 = float(np.prod(spacing))
    return {
        name: round(float(sum(counts[v] for v in values)) * voxel_mm3 / 1000.0, 3)
        for name, values in REGION_LABELS.items()
    }
