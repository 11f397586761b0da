"""Which axial slices of a case go into the training cache."""

from __future__ import annotations

import zlib

import numpy as np


def select_slices(
    brain: np.ndarray,
    label: np.ndarray | None,
    min_brain_fraction: float,
    tumour_free_fraction: float,
    seed: str,
) -> np.ndarray:
    """Indices (axis 2) to cache: every slice with tumour, plus a deterministic sample of
    the tumour-free slices that hold at least ``min_brain_fraction`` of brain.

    ``seed`` (the case id) makes the sample reproducible across runs and workers.
    """
    plane = brain.shape[0] * brain.shape[1]
    informative = brain.sum(axis=(0, 1)) >= min_brain_fraction * plane
    if label is None:
        return np.flatnonzero(informative)
    tumour = label.any(axis=(0, 1))
    free = np.flatnonzero(informative & ~tumour)
    rng = np.random.default_rng(zlib.crc32(seed.encode()))
    keep = rng.choice(free, size=int(round(len(free) * tumour_free_fraction)), replace=False)
    return np.sort(np.concatenate([np.flatnonzero(tumour), keep])).astype(np.int64)
