"""The Medical Segmentation Decathlon's Task01_BrainTumour layout (what MONAI's BraTS tutorial
reads): one 4-D image per case holding FLAIR, T1, T1gd and T2, and labels 1 edema,
2 non-enhancing tumour, 3 enhancing tumour. Split into modalities and relabelled into bratseg's
internal labels on reading; :func:`split_case` writes a case in BraTS naming for tools that
take files.

Example:
    >>> import numpy as np
    >>> decathlon_to_internal(np.array([0, 1, 2, 3])).tolist()  # edema, non-enhancing, enhancing
    [0, 2, 1, 3]
"""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np

from bratseg.data.io import CaseVolumes, label_image, save_nifti
from bratseg.data.labels import to_brats2020, to_internal
from bratseg.data.layout import MODALITIES, Case
from bratseg.errors import InvalidCaseError

# Decathlon value -> the BraTS 2023 value of the same class (1 NCR, 2 ED, 3 ET): 1 and 2 swap.
_TO_BRATS2023 = np.array([0, 2, 1, 3], dtype=np.int64)


def decathlon_to_internal(seg: np.ndarray) -> np.ndarray:
    """Decathlon labels (0 background, 1 edema, 2 non-enhancing, 3 enhancing) to the internal
    0..3 labels. Raises ``ValueError`` for values outside 0..3 or fractional values."""
    values = np.rint(seg).astype(np.int64)
    if np.issubdtype(seg.dtype, np.floating) and np.abs(seg - values).max(initial=0) > 1e-3:
        raise ValueError("label values are not integers; the decathlon scheme is [0, 1, 2, 3]")
    bad = (values < 0) | (values > 3)
    if bad.any():
        raise ValueError(f"label values {sorted(set(np.unique(values[bad]).tolist()))[:10]} are not in [0, 1, 2, 3]")
    return to_internal(_TO_BRATS2023[values], "brats2023")


def load_decathlon_case(case: Case, with_label: bool = True) -> CaseVolumes:
    """The modalities of a Decathlon case (:func:`bratseg.data.layout.decathlon_cases`) split
    from its 4-D image, and its label in internal labels."""
    case.check_required()
    paths = set(case.images.values())
    if len(paths) != 1 or not case.channels:
        raise InvalidCaseError(case.folder or case.case_id, "not a Decathlon case (one 4-D image with channels)")
    path = next(iter(paths))
    try:
        img = nib.load(str(path))
        data = np.asanyarray(img.dataobj)
    except (OSError, ValueError, EOFError, nib.filebasedimages.ImageFileError) as exc:
        raise InvalidCaseError(path, f"unreadable NIfTI file ({' '.join(str(exc).split())})") from None
    needed = max(case.channels.values()) + 1
    if data.ndim != 4 or data.shape[3] < needed:
        raise InvalidCaseError(path, f"expected a 4-D image with {needed} modalities, got shape {tuple(data.shape)}")
    images = {}
    for modality in MODALITIES:
        if modality not in case.channels:
            continue
        channel = np.asarray(data[..., case.channels[modality]], dtype=np.float32)
        if not np.isfinite(channel).all():
            raise InvalidCaseError(path, f"{modality} (channel {case.channels[modality]}) has NaN or infinite voxels")
        if not channel.any():
            raise InvalidCaseError(path, f"{modality} (channel {case.channels[modality]}) is empty: no brain")
        images[modality] = channel
    header = img.header.copy()
    header.set_data_shape(data.shape[:3])
    label = None
    if with_label and case.label is not None:
        seg_img = nib.load(str(case.label))
        seg = np.asanyarray(seg_img.dataobj)
        seg = seg.reshape(seg.shape[:3]) if seg.ndim == 4 and seg.shape[3] == 1 else seg
        if seg.shape != data.shape[:3]:
            raise InvalidCaseError(case.label, f"shape {seg.shape} differs from the image's {data.shape[:3]}")
        try:
            label = decathlon_to_internal(seg)
        except ValueError as exc:
            raise InvalidCaseError(case.label, str(exc)) from None
    return CaseVolumes(case.case_id, images, img.affine.copy(), header, label)


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
