"""bratseg: brain-tumour segmentation in multimodal MRI with a 2-D U-Net.

Example:
    >>> import bratseg
    >>> prediction = bratseg.segment("path/to/scans")   # doctest: +SKIP
    >>> prediction.save("seg.nii.gz")   # doctest: +SKIP
    >>> segmenter = bratseg.from_pretrained()   # doctest: +SKIP
    >>> labels = segmenter.predict("path/to/BraTS20_Training_001")   # doctest: +SKIP

:func:`segment` takes any case (BraTS space, raw NIfTI, a DICOM study) by the path
``bratseg predict`` would; ``Segmenter.segment`` is the fast path alone.

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
    "NativeView": "bratseg.inference.prediction",
    "Prediction": "bratseg.inference.prediction",
    "Segmenter": "bratseg.inference.predictor",
    "from_pretrained": "bratseg.inference.predictor",
    "segment": "bratseg.inference.segment",
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
