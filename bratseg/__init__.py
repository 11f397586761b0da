"""bratseg: brain-tumour segmentation in multimodal MRI with a 2-D U-Net.

Example:
    >>> import bratseg
    >>> segmenter = bratseg.from_pretrained()   # doctest: +SKIP
    >>> labels = segmenter.predict("path/to/BraTS20_Training_001")   # doctest: +SKIP

The names below are imported on first use, so that ``import bratseg`` (and every ``bratseg``
command, which imports it) does not pay for torch before it needs it: ``bratseg predict``
reads its first case while torch loads.
"""

from __future__ import annotations

from importlib import import_module

__version__ = "0.1.0"

_EXPORTS = {
    "Case": "bratseg.data.layout",
    "case_from_folder": "bratseg.data.layout",
    "find_cases": "bratseg.data.layout",
    "BratsegError": "bratseg.errors",
    "InvalidCaseError": "bratseg.errors",
    "ModelLoadError": "bratseg.errors",
    "Prediction": "bratseg.inference.predictor",
    "Segmenter": "bratseg.inference.predictor",
    "from_pretrained": "bratseg.inference.predictor",
    "region_masks": "bratseg.data.labels",
    "region_volumes": "bratseg.data.labels",
}
__all__ = list(_EXPORTS)


def __getattr__(name: str) -> object:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'bratseg' has no attribute {name!r}")
    value = getattr(import_module(_EXPORTS[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
