"""The preprocessing configuration, shared by the cache, training and inference.

It travels with the model (``preprocessing.json`` in a model folder), so a model always
sees its inputs prepared the way it was trained.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from bratseg.data.layout import MODALITIES
from bratseg.preprocessing.context import channels_of


@dataclass
class PreprocessingConfig:
    """How a case becomes model input.

    Args:
        modalities: channel order; missing optional modalities are fed as zeros.
        crop_size: in-plane window (x, y) centred on the brain; BraTS brains fit 160 x 192.
        resize: optional in-plane size after cropping (the original project used 128 x 128).
        min_brain_fraction: slices with less brain than this fraction of the window are
            dropped from the cache (tumour slices are always kept).
        tumour_free_fraction: share of the informative tumour-free slices kept in the cache.
        label_scheme: labels written on output.
        regions: the evaluation regions a region model predicts, in channel order.
        context_slices: neighbouring slices on each side fed with every modality (2.5-D
            input, :mod:`bratseg.preprocessing.context`); 0 is plain 2-D.
    """

    modalities: list[str] = field(default_factory=lambda: list(MODALITIES))
    normalization: str = "zscore_in_brain"
    crop_size: tuple[int, int] = (160, 192)
    resize: tuple[int, int] | None = None
    min_brain_fraction: float = 0.05
    tumour_free_fraction: float = 0.5
    label_scheme: str = "brats2020"
    regions: list[str] = field(default_factory=lambda: ["WT", "TC", "ET"])
    context_slices: int = 0

    def __post_init__(self) -> None:
        self.crop_size = tuple(self.crop_size)
        self.resize = None if self.resize is None else tuple(self.resize)
        unknown = set(self.modalities) - set(MODALITIES)
        if unknown:
            raise ValueError(f"unknown modalities {sorted(unknown)}; known: {list(MODALITIES)}")

    @property
    def channels(self) -> list[str]:
        """The modality of each network input channel, in order."""
        return channels_of(self.modalities, self.context_slices)

    def to_json(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(asdict(self), indent=2) + "\n")

    @classmethod
    def from_json(cls, path: str | Path) -> PreprocessingConfig:
        return cls(**json.loads(Path(path).read_text()))
