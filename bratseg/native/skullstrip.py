"""Skull stripping with deepbet (Fisch et al., Computers in Biology and Medicine 2024; MIT),
whose TorchScript weights ship inside its wheel, so nothing is downloaded at run time.

deepbet finds the brain's bounding box with a small network on a 128^3 copy of the scan, then
segments the box resized to a cube. It was trained on 1 mm T1 scans; on the 5.5 mm native
TCGA-FG-6692 case its mask overlaps the HD-BET mask of the reference pipeline with Dice 0.967 on
the T1ce and 0.939 on the T1 (BENCHMARKS.md), so bratseg strips the T1ce, as BrainLesion
preprocessing strips its centre modality, and every sequence takes that mask.

Example:
    >>> import SimpleITK as sitk
    >>> blank = sitk.Image(32, 32, 16, sitk.sitkFloat32)
    >>> strip_skull(blank)
    Traceback (most recent call last):
    ...
    bratseg.native.skullstrip.SkullStripError: the image is blank: no head to find a brain in
"""

from __future__ import annotations

import warnings
from functools import lru_cache

import numpy as np
import SimpleITK as sitk
import torch

from bratseg.native.space import to_array

CUBE = 192
"""Edge of the cube deepbet segments the brain box in: 0.967 Dice against HD-BET where its
default 256 gives 0.971, in about half the time on a CPU (BENCHMARKS.md)."""
THRESHOLD = 0.5


class SkullStripError(ValueError):
    """deepbet found no brain; the pipeline turns it into a typed error naming the file."""


@lru_cache(maxsize=2)
def _extractor(device: str):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit.load's deprecation notice, once per process
        from deepbet import BrainExtraction

        return BrainExtraction(no_gpu=device == "cpu")


def strip_skull(image: sitk.Image, *, cube: int = CUBE, device: str = "cpu") -> sitk.Image:
    """The brain mask (uint8 0/1) of a head scan, on the scan's own grid.

    The scan is presented to deepbet in RAS voxel order (a permutation of axes, no
    interpolation), as deepbet's own reader does; its largest connected component is kept
    and holes are filled (deepbet's post-processing).
    """
    oriented = sitk.DICOMOrient(image, "RAS")
    x = to_array(oriented).astype(np.float32)
    if not np.any(x > 0) or float(x.max()) == float(x.min()):
        raise SkullStripError("the image is blank: no head to find a brain in")
    extractor = _extractor(device)
    with torch.inference_mode():
        try:
            probability = extractor.run_model(x.copy(), shape=(cube, cube, cube))
        except (AssertionError, ValueError) as exc:  # deepbet asserts when its box network finds nothing
            raise SkullStripError(f"deepbet found no brain ({exc})") from None
    mask = probability > THRESHOLD
    if not mask.any():
        raise SkullStripError("deepbet found no brain in the image")
    mask = extractor.postprocess(mask)
    out = sitk.GetImageFromArray(np.ascontiguousarray(mask.astype(np.uint8).transpose(2, 1, 0)))
    out.CopyInformation(oriented)
    # Back to the scan's own voxel order: again a permutation, so resampling is exact.
    return sitk.Resample(out, image, sitk.Transform(), sitk.sitkNearestNeighbor, 0, sitk.sitkUInt8)
