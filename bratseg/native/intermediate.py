"""The intermediate volumes and transforms of a native run, for inspection
(``--keep-intermediate DIR``)::

    DIR/native/<modality>_on_t1ce.nii.gz   each sequence co-registered onto the T1ce grid
    DIR/native/brain_mask_t1ce.nii.gz      the skull strip on the T1ce grid
    DIR/native/labels.nii.gz               the label map on the reference grid
    DIR/brats/<case>_<modality>.nii.gz     BraTS-space images, brain mask and labels (_seg)
    DIR/transforms/<modality>_to_t1ce.tfm  ITK transforms (fixed point -> moving point)
    DIR/transforms/atlas_to_t1ce.tfm
    DIR/transforms/atlas_to_reference_ras.txt   4 x 4, RAS, NiftyReg's convention
    DIR/steps.json                         steps, seconds per step, warnings
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import nibabel as nib
import numpy as np
import SimpleITK as sitk

from bratseg.data.io import atomic_write_bytes, save_nifti
from bratseg.native.space import resample, to_array
from bratseg.native.to_brats import save_brats_space

if TYPE_CHECKING:
    from bratseg.native.steps import StepLog
    from bratseg.native.to_brats import BratsSpaceCase
    from bratseg.native.to_patient import PatientGrid


def write_intermediate(
    folder: Path, case: BratsSpaceCase, patient: PatientGrid, brats_labels: np.ndarray, steps: StepLog
) -> list[Path]:
    """Write everything listed in the module docstring for ``case``, whose BraTS-space labels
    are ``brats_labels`` (BraTS 2020 values) and whose result on the patient's grid is
    ``patient`` (``case.scans`` must still hold every sequence); returns the files written."""
    written: list[Path] = []
    t1ce = case.scans["t1ce"]
    for modality, scan in case.scans.items():
        data = to_array(resample(scan.image, t1ce.image, case.to_t1ce[modality]))
        header = t1ce.header.copy()
        header.set_data_dtype(np.float32)
        header.set_slope_inter(1, 0)
        image = nib.Nifti1Image(data.astype(np.float32), t1ce.affine, header)
        written.append(save_nifti(image, folder / "native" / f"{modality}_on_t1ce.nii.gz"))
    mask_header = t1ce.header.copy()
    mask_header.set_data_dtype(np.uint8)
    mask_header.set_slope_inter(1, 0)
    mask = nib.Nifti1Image(to_array(patient.mask_on_t1ce).astype(np.uint8), t1ce.affine, mask_header)
    written.append(save_nifti(mask, folder / "native" / "brain_mask_t1ce.nii.gz"))
    written.append(save_nifti(patient.labels, folder / "native" / "labels.nii.gz"))
    written += save_brats_space(folder / "brats", case.volumes, brats_labels)
    transforms = folder / "transforms"
    to_t1ce = case.to_t1ce
    for name, transform in [*((f"{m}_to_t1ce", t) for m, t in to_t1ce.items()), ("atlas_to_t1ce", case.atlas_to_t1ce)]:
        written.append(_write_transform(transform, transforms / f"{name}.tfm"))
    matrix_path = transforms / "atlas_to_reference_ras.txt"
    atomic_write_bytes(matrix_path, lambda tmp: np.savetxt(tmp, patient.atlas_to_reference, fmt="%.7g"))
    written.append(matrix_path)
    report = {"steps": steps.steps, "seconds": steps.timings, "warnings": steps.warnings}
    steps_path = folder / "steps.json"
    atomic_write_bytes(steps_path, lambda tmp: tmp.write_text(json.dumps(report, indent=2) + "\n"))
    written.append(steps_path)
    return written


def _write_transform(transform: sitk.Transform, path: Path) -> Path:
    def write(tmp: Path) -> None:
        real = tmp.with_suffix(".tfm")  # ITK picks the format from the suffix
        sitk.WriteTransform(transform, str(real))
        real.replace(tmp)

    atomic_write_bytes(path, write)
    return path
