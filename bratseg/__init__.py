"""bratseg: brain-tumour segmentation in multimodal MRI with a 2-D U-Net.

Example:
    >>> import bratseg
    >>> segmenter = bratseg.from_pretrained()   # doctest: +SKIP
    >>> labels = segmenter.predict("path/to/BraTS20_Training_001")   # doctest: +SKIP
"""

from bratseg.data.layout import Case, case_from_folder, find_cases
from bratseg.errors import BratsegError, InvalidCaseError, ModelLoadError
from bratseg.inference.predictor import Prediction, Segmenter, from_pretrained
from bratseg.inference.regions import region_masks, region_volumes

__version__ = "0.1.0"
__all__ = [
    "Case",
    "case_from_folder",
    "find_cases",
    "BratsegError",
    "InvalidCaseError",
    "ModelLoadError",
    "Prediction",
    "Segmenter",
    "from_pretrained",
    "region_masks",
    "region_volumes",
]
