"""One case in memory to model-ready arrays: the single preprocessing path used by the
cache (training) and by inference."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from bratseg.data.io import CaseVolumes
from bratseg.preprocessing.config import PreprocessingConfig
from bratseg.preprocessing.crop import brain_window, crop_xy
from bratseg.preprocessing.normalize import brain_mask, zscore_stats


@dataclass
class PreparedCase:
    """``image`` is ``[C, X, Y, Z]`` float32 in the config's modality order (absent
    modalities are zeros), cropped to the window at ``start``; ``brain`` and ``label`` share
    that grid."""

    image: np.ndarray
    brain: np.ndarray
    label: np.ndarray | None
    start: tuple[int, int]
    full_shape: tuple[int, int, int]
    present: list[str]


def prepare_case(volumes: CaseVolumes, config: PreprocessingConfig, mask: np.ndarray | None = None) -> PreparedCase:
    """``volumes`` as the model's input. ``mask`` may pass the brain mask of ``volumes.images``
    (:func:`~bratseg.preprocessing.normalize.brain_mask`) when it is made already."""
    mask = brain_mask(volumes.images) if mask is None else mask
    start = brain_window(mask, config.crop_size)
    brain = crop_xy(mask, start, config.crop_size)
    # Z-scored with the whole brain's statistics, as zscore() does, but written in the window
    # only, into one [C, X, Y, Z] array: no full-size copy per sequence, no stacking.
    image = np.zeros((len(config.modalities), *brain.shape), dtype=np.float32)
    for channel, modality in enumerate(config.modalities):
        data = volumes.images.get(modality)
        if data is not None:
            mean, std = zscore_stats(data, mask)
            window = crop_xy(data, start, config.crop_size)
            image[channel][brain] = (window[brain].astype(np.float64) - mean) / std
    label = None if volumes.label is None else crop_xy(volumes.label, start, config.crop_size)
    present = [m for m in config.modalities if m in volumes.images]
    return PreparedCase(image, brain, label, start, volumes.shape, present)
