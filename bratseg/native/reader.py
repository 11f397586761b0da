"""Read one sequence of a native study: a NIfTI file in any orientation and spacing, a DICOM
series folder or zip, or an image already in memory.

Example:
    >>> import numpy as np, nibabel as nib
    >>> scan = read_scan(nib.Nifti1Image(np.ones((8, 8, 6, 1), np.int16), np.diag([-0.9, 0.9, 5.5, 1])), "t1ce")
    >>> scan.image.GetSize(), [round(s, 2) for s in scan.image.GetSpacing()], scan.name
    ((8, 8, 6), [0.9, 0.9, 5.5], 't1ce (in memory)')
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import SimpleITK as sitk

from bratseg.data.io import load_volume
from bratseg.data.layout import nifti_stem
from bratseg.errors import InvalidCaseError
from bratseg.native.space import to_nifti_affine, to_sitk

ScanSource = str | Path | sitk.Image | nib.Nifti1Image
"""What a sequence may be given as: a NIfTI path, a DICOM series folder or zip, or an image."""


@dataclass
class Scan:
    """One sequence: its SimpleITK image (3-D; in the file's own integer type where it holds
    integers of 16 bits or fewer, else float32), the NIfTI affine and header a label map on its
    grid is written with, and where it came from (``path`` is None for in-memory images)."""

    modality: str
    image: sitk.Image
    affine: np.ndarray
    header: nib.Nifti1Header
    path: Path | None
    description: str = ""

    @property
    def name(self) -> str:
        """How messages name this scan: its file name, or the modality for an in-memory image."""
        return self.path.name if self.path is not None else f"{self.modality} (in memory)"

    @property
    def spacing(self) -> tuple[float, float, float]:
        return tuple(float(s) for s in self.image.GetSpacing())


def read_scan(source: ScanSource, modality: str) -> Scan:
    """Read ``source`` as the ``modality`` sequence. Raises
    :class:`~bratseg.errors.InvalidCaseError` (naming the file) for unreadable input."""
    if isinstance(source, sitk.Image):
        return _from_sitk(source, modality, None)
    if isinstance(source, nib.spatialimages.SpatialImage):
        data = np.asanyarray(source.dataobj)
        return _from_array(data, source.affine, source.header, modality, None)
    path = Path(source)
    if path.is_dir() or path.suffix.lower() == ".zip" or (path.is_file() and nifti_stem(path) is None):
        from bratseg.native.dicom import read_dicom_series

        series = read_dicom_series(path)
        return _from_sitk(series.image, modality, path, series.description)
    volume = load_volume(path)  # NIfTI: the data layer's checks and messages (as float32)
    return _from_array(volume.data, volume.affine, volume.header, modality, path, _file_integer_dtype(volume.header))


def _from_array(
    data: np.ndarray, affine: np.ndarray, header, modality: str, path: Path | None, stored: np.dtype | None = None
) -> Scan:
    where = path if path is not None else Path(f"{modality} (in memory)")
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    if data.ndim != 3:
        raise InvalidCaseError(where, f"expected a 3-D volume, got shape {tuple(data.shape)}")
    if stored is None and data.dtype.kind in "iu" and data.dtype.itemsize <= 2:
        stored = data.dtype
    if stored is not None:  # the file's own integers: half the memory of float32, the same values
        data = np.asarray(data).astype(stored, copy=False)
    else:
        data = np.asarray(data, dtype=np.float32)
        if not np.isfinite(data).all():
            raise InvalidCaseError(where, f"{int((~np.isfinite(data)).sum())} voxels are NaN or infinite")
    try:
        image = to_sitk(data, affine)
    except ValueError as exc:
        raise InvalidCaseError(where, str(exc)) from None
    nifti_header = header.copy() if isinstance(header, nib.Nifti1Header) else _header_for(affine)
    return Scan(modality, image, np.asarray(affine, dtype=np.float64), nifti_header, path)


def _from_sitk(image: sitk.Image, modality: str, path: Path | None, description: str = "") -> Scan:
    where = path if path is not None else Path(f"{modality} (in memory)")
    if image.GetDimension() == 4 and image.GetSize()[3] == 1:
        image = image[:, :, :, 0]
    if image.GetDimension() != 3 or image.GetNumberOfComponentsPerPixel() != 1:
        raise InvalidCaseError(where, f"expected a 3-D greyscale volume, got size {image.GetSize()}")
    if image.GetPixelID() not in _INTEGER_PIXELS:
        image = sitk.Cast(image, sitk.sitkFloat32)
    affine = to_nifti_affine(image)
    return Scan(modality, image, affine, _header_for(affine), path, description)


_INTEGER_PIXELS = (sitk.sitkInt8, sitk.sitkUInt8, sitk.sitkInt16, sitk.sitkUInt16)


def _file_integer_dtype(header: nib.Nifti1Header) -> np.dtype | None:
    """The file's integer type, where its voxels are stored as integers of 16 bits or fewer with
    no scaling (so they are those integers exactly); None otherwise (kept as float32)."""
    dtype = np.dtype(header.get_data_dtype())
    slope, inter = header.get_slope_inter()
    unscaled = slope in (None, 1.0) and inter in (None, 0.0)
    return dtype.newbyteorder("=") if dtype.kind in "iu" and dtype.itemsize <= 2 and unscaled else None


def _header_for(affine: np.ndarray) -> nib.Nifti1Header:
    """A NIfTI header for a grid that has none of its own (DICOM, in-memory images)."""
    header = nib.Nifti1Header()
    header.set_xyzt_units("mm", "sec")
    return header  # the image built on it sets its qform, sform and voxel sizes from the affine
