"""One case in memory to model-ready arrays: the single preprocessing path used by the
cache (training) and by inference."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from bratseg.data.io import CaseVolumes
from bratseg.preprocessing.config import PreprocessingConfig
from bratseg.preprocessing.crop import brain_window, crop_xy
from bratseg.preprocessing.normalize import brain_mask, zscore


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


def prepare_case(volumes: CaseVolumes, config: PreprocessingConfig) -> PreparedCase:
    mask = brain_mask(volumes.images)
    start = brain_window(mask, config.crop_size)
    brain = crop_xy(mask, start, config.crop_size)
    channels = []
    for modality in config.modalities:
        data = volumes.images.get(modality)
        if data is None:
            channels.append(np.zeros(brain.shape, dtype=np.float32))
        else:
            channels.append(crop_xy(zscore(data, mask), start, config.crop_size))
    label = None if volumes.label is None else crop_xy(volumes.label, start, config.crop_size)
    present = [m for m in config.modalities if m in volumes.images]
    return PreparedCase(np.stack(channels), brain, label, start, volumes.shape, present)
