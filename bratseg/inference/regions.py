"""Tumour region masks and their volumes, from a BraTS 2020 (0/1/2/4) label map.

The one helper behind the CLI's report, the Flask API and the Gradio demo.

Example:
    >>> import numpy as np
    >>> labels = np.zeros((10, 10, 10), dtype=np.uint8); labels[:2] = 2; labels[2:3] = 4
    >>> region_volumes(labels, spacing=(1.0, 1.0, 1.0))["whole tumour"]
    0.3
"""

from __future__ import annotations

import numpy as np

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
    voxel_mm3 = float(np.prod(spacing))
    counts = np.bincount(labels.ravel(), minlength=5)
    return {
        name: round(float(sum(counts[v] for v in values)) * voxel_mm3 / 1000.0, 3)
        for name, values in REGION_LABELS.items()
    }
