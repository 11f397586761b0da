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
