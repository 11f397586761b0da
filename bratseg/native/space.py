"""World coordinates: NIfTI (nibabel, RAS) and SimpleITK (LPS) images, the BraTS grid, the
shipped SRI24 atlas and resampling between grids.

nibabel's affines map voxels to RAS world coordinates and ITK's geometry maps them to LPS; the
two differ by a sign on x and y. Every conversion goes through :func:`to_sitk` and
:func:`to_nifti_affine`, so an array read with nibabel and the same voxels in SimpleITK stay
the same voxels.

Example:
    >>> grid = brats_grid()
    >>> grid.GetSize(), grid.GetOrigin()
    ((240, 240, 155), (0.0, -239.0, 0.0))
    >>> import numpy as np
    >>> bool(np.allclose(to_nifti_affine(grid), BRATS_AFFINE))
    True
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import nibabel as nib
import numpy as np
import SimpleITK as sitk

ATLAS_DIR = Path(__file__).resolve().parent / "atlas"
ATLAS_T1 = ATLAS_DIR / "sri24_t1_1mm_skull_stripped.nii.gz"
BRATS_SHAPE = (240, 240, 155)
BRATS_AFFINE = np.array([[-1.0, 0.0, 0.0, 0.0], [0.0, -1.0, 0.0, 239.0], [0.0, 0.0, 1.0, 0.0], [0.0, 0.0, 0.0, 1.0]])
"""The affine of BraTS files: LPS voxel axes, 1 mm, origin (0, 239, 0) in RAS."""
_RAS_TO_LPS = np.diag([-1.0, -1.0, 1.0, 1.0])
# Direction cosines that deviate from orthonormal by less than this are a rounding matter
# (NIfTI stores float32); more is a shear no scanner produces.
_ORTHONORMAL_TOLERANCE = 1e-3
WORKING_SPACING_MM = 1.25
"""Skull stripping and registration run on a working grid no finer than about 1 mm (deepbet and
the atlas are 1 mm): each voxel axis finer than this is shrunk by an integer factor, averaging
blocks of voxels, so that 0.5 mm becomes 1 mm while 0.9 mm stays as it is."""
# Two grids whose fields of view agree within this (mm, every corner) share their world geometry.
_SAME_GEOMETRY_MM = 1.0


def to_sitk(data: np.ndarray, affine: np.ndarray) -> sitk.Image:
    """A SimpleITK image of an ``[x, y, z]`` array with a nibabel (RAS) affine.

    Raises ``ValueError`` for an affine with shear (ITK grids are orthonormal).
    """
    lps = _RAS_TO_LPS @ np.asarray(affine, dtype=np.float64)
    spacing = np.linalg.norm(lps[:3, :3], axis=0)
    direction = lps[:3, :3] / spacing
    u, _, vt = np.linalg.svd(direction)
    orthonormal = u @ vt  # the nearest rotation (or reflection): removes float32 rounding
    if np.abs(orthonormal - direction).max() > _ORTHONORMAL_TOLERANCE:
        raise ValueError("the affine has shear (its voxel axes are not perpendicular)")
    image = sitk.GetImageFromArray(np.ascontiguousarray(np.asarray(data).transpose(2, 1, 0)))
    image.SetSpacing([float(s) for s in spacing])
    image.SetDirection([float(v) for v in orthonormal.ravel()])
    image.SetOrigin([float(v) for v in lps[:3, 3]])
    return image


def to_nifti_affine(image: sitk.Image) -> np.ndarray:
    """The nibabel (RAS) affine of a SimpleITK image's grid."""
    direction = np.array(image.GetDirection(), dtype=np.float64).reshape(3, 3)
    lps = np.eye(4)
    lps[:3, :3] = direction * np.array(image.GetSpacing())
    lps[:3, 3] = image.GetOrigin()
    return _RAS_TO_LPS @ lps


def to_array(image: sitk.Image) -> np.ndarray:
    """The ``[x, y, z]`` array of a SimpleITK image (the voxel order nibabel uses)."""
    return sitk.GetArrayFromImage(image).transpose(2, 1, 0)


def array_view(image: sitk.Image) -> np.ndarray:
    """The ``[x, y, z]`` array of a SimpleITK image without a copy: a view of its buffer that
    keeps the image alive (what :func:`to_array` gives, without doubling a large image's memory).

    >>> image = sitk.Image(4, 3, 2, sitk.sitkFloat32)
    >>> view = array_view(image)
    >>> view.shape, type(view).__name__
    ((4, 3, 2), 'ndarray')
    """
    return np.asarray(_ImageBuffer(image)).transpose(2, 1, 0)


class _ImageBuffer:
    """A SimpleITK image's buffer in NumPy's array interface: an array made from it keeps this
    object, and so the image, as its base (a plain view of the buffer would not)."""

    def __init__(self, image: sitk.Image):
        self.image = image
        interface = dict(sitk.GetArrayViewFromImage(image).__array_interface__)
        interface["data"] = (interface["data"][0], False)  # writable, as a copy would be
        self.__array_interface__ = interface


def working_shrink_factors(image: sitk.Image) -> list[int]:
    """Per voxel axis, the integer factor that brings ``image`` near 1 mm (1 where it is coarser).

    >>> grid = sitk.Image(480, 480, 155, sitk.sitkUInt8)
    >>> grid.SetSpacing((0.5, 0.5, 1.0))
    >>> working_shrink_factors(grid)
    [2, 2, 1]
    """
    return [max(1, int(WORKING_SPACING_MM / s + 1e-6)) for s in image.GetSpacing()]


def to_working_grid(image: sitk.Image) -> sitk.Image:
    """``image`` on its working grid as float32: blocks of voxels averaged (no interpolation), the
    same field of view; ``image`` itself where it is already float32 and about 1 mm or coarser."""
    factors = working_shrink_factors(image)
    if factors != [1, 1, 1]:
        image = sitk.BinShrink(image, factors)  # an integer image's averages lose their fraction
    return image if image.GetPixelID() == sitk.sitkFloat32 else sitk.Cast(image, sitk.sitkFloat32)


def grid_image(shape: tuple[int, ...], affine: np.ndarray) -> sitk.Image:
    """An image (uint8, zero) on the grid of an ``[x, y, z]`` shape and a nibabel affine: a target
    to resample onto, without building a full-size array first."""
    probe = to_sitk(np.zeros((1, 1, 1), dtype=np.uint8), affine)
    grid = sitk.Image([int(n) for n in shape[:3]], sitk.sitkUInt8)
    grid.SetSpacing(probe.GetSpacing())
    grid.SetDirection(probe.GetDirection())
    grid.SetOrigin(probe.GetOrigin())
    return grid


def same_geometry(a: sitk.Image, b: sitk.Image, tolerance_mm: float = _SAME_GEOMETRY_MM) -> bool:
    """Whether two scans cover the same field of view in the same orientation (the same grid, or
    the same box at another resolution): then the scanner's coordinates already align them,
    unless the head moved between the two.

    >>> fine = sitk.Image(480, 480, 155, sitk.sitkUInt8)
    >>> fine.SetSpacing((0.5, 0.5, 1.0))
    >>> same_geometry(fine, to_working_grid(fine)), same_geometry(fine, brats_grid())
    (True, False)
    """
    if not np.allclose(a.GetDirection(), b.GetDirection(), atol=1e-3):
        return False
    return bool(np.abs(_corners(a) - _corners(b)).max() <= tolerance_mm)


def _corners(image: sitk.Image) -> np.ndarray:
    """World coordinates of the outer corners of the first and last voxels."""
    size = np.array(image.GetSize(), dtype=np.float64)
    return np.array([image.TransformContinuousIndexToPhysicalPoint(list(c)) for c in (np.full(3, -0.5), size - 0.5)])


def brats_grid() -> sitk.Image:
    """An empty image on the BraTS grid (240 x 240 x 155, 1 mm), the model's input space."""
    return to_sitk(np.zeros(BRATS_SHAPE, dtype=np.uint8), BRATS_AFFINE)


@lru_cache(maxsize=1)
def _atlas_cached() -> sitk.Image:
    img = nib.load(str(ATLAS_T1))
    data = np.asanyarray(img.dataobj).astype(np.float32)
    data = data.reshape(data.shape[:3])  # the file carries a singleton 4th axis
    return to_sitk(data, img.affine)


def atlas_t1() -> sitk.Image:
    """The SRI24 T1 atlas, skull-stripped, read through its own affine (its array is the BraTS
    array flipped in y; world coordinates agree with BraTS files). A copy: callers may modify it."""
    return sitk.Image(_atlas_cached())


def rigid_ras_matrix(transform: sitk.Transform) -> np.ndarray:
    """The 4 x 4 matrix, in RAS world coordinates, of an affine ITK transform (which maps LPS
    points of the fixed space to the moving space): what NiftyReg and BrainLesion write."""
    dim = 3
    probe = np.vstack([np.zeros(dim), np.eye(dim)])
    mapped = np.array([transform.TransformPoint(tuple(p)) for p in probe])
    matrix = np.eye(4)
    matrix[:3, :3] = (mapped[1:] - mapped[0]).T
    matrix[:3, 3] = mapped[0]
    return _RAS_TO_LPS @ matrix @ _RAS_TO_LPS


def affine_transform_from_ras(matrix: np.ndarray) -> sitk.AffineTransform:
    """The ITK transform (LPS points) of a 4 x 4 RAS matrix: the inverse of :func:`rigid_ras_matrix`.

    >>> shift = np.eye(4)
    >>> shift[:3, 3] = (1.0, 2.0, 3.0)
    >>> bool(np.allclose(rigid_ras_matrix(affine_transform_from_ras(shift)), shift))
    True
    """
    lps = _RAS_TO_LPS @ np.asarray(matrix, dtype=np.float64) @ _RAS_TO_LPS
    transform = sitk.AffineTransform(3)
    transform.SetMatrix([float(v) for v in lps[:3, :3].ravel()])
    transform.SetTranslation([float(v) for v in lps[:3, 3]])
    return transform


def resample(
    image: sitk.Image,
    grid: sitk.Image,
    transform: sitk.Transform | None = None,
    *,
    linear: bool = True,
    pixel_type: int = sitk.sitkFloat32,
) -> sitk.Image:
    """``image`` sampled on ``grid``'s voxels through ``transform`` (grid point -> image point,
    ITK's convention); 0 outside ``image``."""
    interpolator = sitk.sitkLinear if linear else sitk.sitkNearestNeighbor
    return sitk.Resample(image, grid, transform or sitk.Transform(), interpolator, 0.0, pixel_type)


def chain(*transforms: sitk.Transform) -> sitk.Transform:
    """The transform that applies ``transforms`` left to right: ``chain(a, b)(p) == b(a(p))``."""
    composite = sitk.CompositeTransform(3)
    for transform in reversed(transforms):  # ITK applies the transform added last first
        composite.AddTransform(transform)
    return composite
