"""The Medical Segmentation Decathlon's Task01_BrainTumour layout (what MONAI's BraTS tutorial
reads): one 4-D image per case holding FLAIR, T1, T1gd and T2, and labels 1 edema,
2 non-enhancing tumour, 3 enhancing tumour. :func:`bratseg.data.layout.decathlon_cases` finds
such cases, :func:`bratseg.data.io.load_case` reads them (split into modalities, relabelled by
:func:`bratseg.data.labels.decathlon_to_internal` into bratseg's internal labels), and
:func:`split_case` writes a case in BraTS naming for tools that take files.
"""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np

from bratseg.data.io import label_image, load_decathlon_case, save_nifti
from bratseg.data.labels import to_brats2020
from bratseg.data.layout import Case


def split_case(case: Case, folder: str | Path) -> Case:
    """Write a Decathlon case as one 3-D file per modality in BraTS naming
    (``<case>_flair.nii.gz`` ...), its label as ``<case>_seg.nii.gz`` in BraTS 2020's 0/1/2/4,
    and return that case."""
    volumes = load_decathlon_case(case)
    folder = Path(folder)
    images = {}
    for modality, data in volumes.images.items():
        header = volumes.header.copy()
        header.set_data_dtype(np.float32)
        images[modality] = save_nifti(
            nib.Nifti1Image(data, volumes.affine, header), folder / f"{case.case_id}_{modality}.nii.gz"
        )
    label = None
    if volumes.label is not None:
        label = save_nifti(label_image(to_brats2020(volumes.label), volumes), folder / f"{case.case_id}_seg.nii.gz")
    return Case(case.case_id, images, label, "brats2020", folder)
