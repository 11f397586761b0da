"""Real BraTS cases made smaller by the tests themselves, for the serving tests that need
many predictions or a browser that renders in software.

A crop keeps the whole brain in-plane and the axial slab around the slice with the most
tumour (plus a few background slices, so that it still looks skull-stripped to the input
checks), so predictions take seconds instead of tens and NiiVue's software rendering
(SwiftShader) has fewer slices to draw, while everything stays real data on its real grid.
"""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np

MODALITIES = ("flair", "t1ce", "t1", "t2")


def tumour_slab(case_dir: Path, slices: int) -> slice:
    """The ``slices`` axial slices centred on the one with the most (expert-labelled) tumour."""
    seg = np.asarray(nib.load(next(case_dir.glob("*_seg.nii.gz"))).dataobj)
    depth = seg.shape[2]
    centre = int(np.argmax((seg > 0).sum(axis=(0, 1))))
    start = min(max(0, centre - slices // 2), depth - slices)
    return slice(start, start + slices)


def crop_case(case_dir: Path, out_root: Path, slices: int = 32, modalities=MODALITIES, pad: int = 4) -> dict[str, Path]:
    """``case_dir``'s scans cut to :func:`tumour_slab` with ``pad`` empty (background)
    slices above and below, as a skull-stripped scan has, the affine moved so that world
    positions are unchanged; written as ``<out_root>/<case>/<case>_<modality>.nii.gz``.
    Returns the files by modality."""
    slab = tumour_slab(case_dir, slices)
    folder = out_root / case_dir.name
    folder.mkdir(parents=True, exist_ok=True)
    files = {}
    for modality in modalities:
        img = nib.load(next(case_dir.glob(f"*_{modality}.nii.gz")))
        data = np.asarray(img.dataobj)[:, :, slab]
        padded = np.zeros((*data.shape[:2], data.shape[2] + 2 * pad), dtype=data.dtype)
        padded[:, :, pad : pad + data.shape[2]] = data
        shift = np.eye(4)
        shift[2, 3] = slab.start - pad  # voxel 0 of the new grid is slice start - pad of the old
        header = img.header.copy()
        header.set_data_shape(padded.shape)
        path = folder / f"{case_dir.name}_{modality}.nii.gz"
        nib.save(nib.Nifti1Image(padded, img.affine @ shift, header), str(path))
        files[modality] = path
    return files
