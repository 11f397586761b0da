"""Rigid co-registration of the sequences of one study and affine registration to the SRI24
atlas, with SimpleITK's mutual-information registration.

Both register a *fixed* image (the T1ce, or the atlas) with a *moving* one and return ITK
transforms in ITK's convention: they map a point of the fixed space to the moving space, which
is what resampling the moving image onto the fixed grid needs.

SimpleITK was chosen over ANTs (antspyx) on the native TCGA-FG-6692 case: SimpleITK's rigid
co-registration landed within about 1 mm RMS of ANTs' full ``Rigid`` registration in a fraction
of its time, and antspyx pins older NumPy and SciPy than bratseg uses.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk

from bratseg.native.space import WORKING_SPACING_MM, same_geometry, to_working_grid

HISTOGRAM_BINS = 32
# Iteration cap per level: converged runs stop after 10-30; a cap of 60 stopped the coarse
# levels of a sequence posed 11 degrees off before they converged (4.6 mm error instead of 1).
_SEED = 20240611  # fixed sampling seed: the same input registers the same way every run
# Share of the fixed image's voxels the metric draws at random per level (coarse to fine); those
# outside the sampling mask (the head) are dropped: a few percent at the working grid's full
# resolution, as SimpleITK's and ANTs' examples do.
COREGISTRATION_SAMPLING = (0.25, 0.08, 0.02)


@dataclass
class Registration:
    """A transform (fixed point -> moving point) and the normalised mutual information between
    the fixed image and the moving image resampled through it, over the fixed mask.
    ``registered`` is False where the scanner's geometry was kept (already aligned)."""

    transform: sitk.Transform
    similarity: float
    similarity_before: float
    registered: bool = True


def _method(
    shrink: tuple[int, ...],
    smoothing_mm: tuple[float, ...],
    sampling: tuple[float, ...],
    iterations: int,
    mask: sitk.Image | None = None,
) -> sitk.ImageRegistrationMethod:
    method = sitk.ImageRegistrationMethod()
    method.SetMetricAsMattesMutualInformation(HISTOGRAM_BINS)
    method.SetMetricSamplingStrategy(method.RANDOM)
    method.SetMetricSamplingPercentagePerLevel(list(sampling), _SEED)
    if mask is not None:  # samples drawn inside the head (or brain) only
        method.SetMetricFixedMask(mask)
    method.SetInterpolator(sitk.sitkLinear)
    # Stopping rule: the step halves at every reversal of the gradient and the level ends when
    # it falls under minStep (a thousandth of a mm), or after ``iterations``.
    method.SetOptimizerAsRegularStepGradientDescent(
        learningRate=2.0, minStep=1e-3, numberOfIterations=iterations, relaxationFactor=0.5
    )
    method.SetOptimizerScalesFromPhysicalShift()
    method.SetShrinkFactorsPerLevel(list(shrink))
    method.SetSmoothingSigmasPerLevel(list(smoothing_mm))
    method.SmoothingSigmasAreSpecifiedInPhysicalUnitsOn()
    return method


def _centre(image: sitk.Image) -> tuple[float, ...]:
    return image.TransformContinuousIndexToPhysicalPoint([(s - 1) / 2 for s in image.GetSize()])


def similarity_region(brain_mask: sitk.Image) -> sitk.Image:
    """The brain and the skull around it: the brain mask dilated by 6 voxels in-plane, 1 across
    slices (where registration errors show as brain over skull or CSF)."""
    return sitk.BinaryDilate(brain_mask, [6, 6, 1])


def head_mask(image: sitk.Image) -> sitk.Image:
    """Where the head is (uint8): voxels above Otsu's threshold, dilated by two voxels so that
    the head's outline, which carries much of the registration's signal, stays inside."""
    foreground = sitk.OtsuThreshold(sitk.Cast(image, sitk.sitkFloat32), 0, 1, 128)
    return sitk.BinaryDilate(foreground, [2, 2, 2])


def _on_grid(mask: sitk.Image, grid: sitk.Image) -> sitk.Image:
    """``mask`` on ``grid`` (nearest neighbour), unless it is on it already."""
    if mask.GetSize() == grid.GetSize() and np.allclose(mask.GetSpacing(), grid.GetSpacing()):
        return mask
    return sitk.Resample(mask, grid, sitk.Transform(), sitk.sitkNearestNeighbor, 0, sitk.sitkUInt8)


def coregister_rigid(fixed: sitk.Image, moving: sitk.Image, similarity_mask: sitk.Image) -> Registration:
    """Rigid (6 degrees of freedom) registration of ``moving`` to ``fixed``, Mattes mutual
    information on a random sample of the voxels of the head, three resolution levels (shrink
    4-2-1, smoothing 2-1-0 mm) on each image's working grid (about 1 mm: nothing finer helps a
    rigid fit), starting from the scanner's geometry (both images come from one session, so
    their world coordinates roughly agree).

    The similarity is measured over ``similarity_mask`` (the brain and skull). Registration
    itself samples over the whole head: restricted to the brain it lost sequences that started
    18 mm off.
    """
    fixed, moving = to_working_grid(fixed), to_working_grid(moving)
    mask = _on_grid(similarity_mask, fixed)
    initial = sitk.Euler3DTransform()
    initial.SetCenter(_centre(fixed))
    method = _method(
        shrink=(4, 2, 1),
        smoothing_mm=(2.0, 1.0, 0.0),
        sampling=COREGISTRATION_SAMPLING,
        iterations=200,
        mask=head_mask(fixed),
    )
    method.SetInitialTransform(initial, inPlace=False)
    transform = _unwrap(method.Execute(fixed, moving))
    before = normalised_mutual_information(fixed, moving, sitk.Transform(), mask)
    after = normalised_mutual_information(fixed, moving, transform, mask)
    return Registration(transform, after, before)


def coregister(
    fixed: sitk.Image, moving: sitk.Image, similarity_mask: sitk.Image, aligned_similarity: float
) -> Registration:
    """``moving`` aligned to ``fixed``. Where both cover the same field of view in the same
    orientation (:func:`~bratseg.native.space.same_geometry`: one grid, or one box at two
    resolutions) the scanner's geometry is checked first, and kept (identity, ``registered``
    False) when the similarity through it reaches ``aligned_similarity`` and :func:`is_aligned`
    finds no small move that improves it; otherwise :func:`coregister_rigid`, which starts from
    that geometry."""
    if same_geometry(fixed, moving):
        working = to_working_grid(fixed)
        mask = _on_grid(similarity_mask, working)
        similarity = normalised_mutual_information(working, to_working_grid(moving), sitk.Transform(), mask)
        if similarity >= aligned_similarity and is_aligned(working, to_working_grid(moving), mask):
            return Registration(sitk.Euler3DTransform(), similarity, similarity, registered=False)
    return coregister_rigid(fixed, moving, similarity_mask)


def is_aligned(fixed: sitk.Image, moving: sitk.Image, mask: sitk.Image) -> bool:
    """Whether the scanner's geometry is already the best fit, to about 1 mm: the normalised
    mutual information through it beats that through each of 12 probes (2 mm along, and 1.5
    degrees about, each axis), on 2 mm copies of the images.

    On a BraTS case, FLAIR against T1ce: aligned, or 0.5 mm off, passes; 1 mm or 1 degree off
    fails (a probe towards the truth scores higher). An absolute threshold cannot tell: the
    same FLAIR 5 mm and 4 degrees off still scored 1.061, above the refusal threshold.
    """

    def coarse(image: sitk.Image) -> sitk.Image:
        return sitk.BinShrink(image, [max(1, int(2 * WORKING_SPACING_MM / s + 1e-6)) for s in image.GetSpacing()])

    fixed, moving = coarse(fixed), coarse(moving)
    mask = _on_grid(mask, fixed)  # held: a view of a temporary image would outlive its buffer
    inside = sitk.GetArrayViewFromImage(mask) > 0
    if np.count_nonzero(inside) < 100:
        return False
    score = _ProbeScore(sitk.GetArrayViewFromImage(fixed)[inside], inside)
    # Through the scanner's geometry (exact where the two share a grid).
    moved = sitk.Resample(moving, fixed, sitk.Transform(), sitk.sitkLinear, 0.0, sitk.sitkFloat32)
    base = score(sitk.GetArrayViewFromImage(moved), fit_range=True)
    centre = _centre(fixed)
    for axis in range(3):
        for sign in (-1.0, 1.0):
            shift, turn = sitk.Euler3DTransform(), sitk.Euler3DTransform()
            shift.SetCenter(centre)
            turn.SetCenter(centre)
            offset, angles = [0.0, 0.0, 0.0], [0.0, 0.0, 0.0]
            offset[axis], angles[axis] = 2.0 * sign, np.radians(1.5) * sign
            shift.SetTranslation(offset)
            turn.SetRotation(*angles)
            for probe in (shift, turn):
                moved = sitk.Resample(moving, fixed, probe, sitk.sitkLinear, 0.0, sitk.sitkFloat32)
                if score(sitk.GetArrayViewFromImage(moved)) >= base:
                    return False
    return True


class _ProbeScore:
    """Normalised mutual information of fixed values (over a mask) against moving arrays, with
    bins fixed once, so that the scores of several probes compare exactly."""

    def __init__(self, fixed_values: np.ndarray, inside: np.ndarray, bins: int = HISTOGRAM_BINS):
        self.bins, self.inside = bins, inside
        self.fixed_bins = self._bin(fixed_values, *np.percentile(fixed_values, [0.5, 99.5]))
        self.moving_range = (0.0, 1.0)

    def _bin(self, values: np.ndarray, low: float, high: float) -> np.ndarray:
        scale = self.bins / (high - low) if high > low else 0.0
        return np.clip(((values - low) * scale).astype(np.int64), 0, self.bins - 1)

    def __call__(self, moving: np.ndarray, fit_range: bool = False) -> float:
        values = moving[self.inside]
        if fit_range:
            self.moving_range = tuple(np.percentile(values, [0.5, 99.5]))
        joint = np.bincount(self.fixed_bins * self.bins + self._bin(values, *self.moving_range), minlength=self.bins**2)
        p = joint.reshape(self.bins, self.bins) / max(joint.sum(), 1)
        h_joint = _entropy(p.ravel())
        return (_entropy(p.sum(axis=0)) + _entropy(p.sum(axis=1))) / h_joint if h_joint > 0 else 1.0


def _entropy(q: np.ndarray) -> float:
    q = q[q > 0]
    return float(-(q * np.log(q)).sum())


def register_to_atlas(
    atlas: sitk.Image, brain: sitk.Image, brain_mask: sitk.Image, affine: bool = True
) -> Registration:
    """Registration of a skull-stripped ``brain`` to the skull-stripped ``atlas``: started by
    matching the centres of mass of the two brains, then rigid, then (``affine``) affine. The
    brain is taken on its working grid (about 1 mm, the atlas's resolution).

    Two levels, 4 and 2 mm: on a BraTS case moved into a known pose the transform lands 1.7 mm
    from the truth on average over the brain (2.1 mm registering to the atlas subsampled to 2 mm).
    """
    brain = to_working_grid(brain)
    brain_mask = _on_grid(brain_mask, brain)
    moments = sitk.CenteredTransformInitializer(
        sitk.Cast(atlas > 0, sitk.sitkFloat32),
        sitk.Cast(brain_mask, sitk.sitkFloat32),
        sitk.Euler3DTransform(),
        sitk.CenteredTransformInitializerFilter.MOMENTS,
    )
    # Both brains are skull-stripped: samples over the whole atlas grid see the brain's outline
    # (sampling only the atlas's brain and a margin moved TCGA-FG-6692 0.5 mm further from the
    # reference transform).
    rigid = _method(shrink=(4, 2), smoothing_mm=(3.0, 1.5), sampling=(0.2, 0.05), iterations=200)
    rigid.SetInitialTransform(moments, inPlace=False)
    transform = _unwrap(rigid.Execute(atlas, brain))
    if affine:
        start = sitk.AffineTransform(3)
        start.SetCenter(transform.GetCenter())
        start.SetMatrix(transform.GetMatrix())
        start.SetTranslation(transform.GetTranslation())
        refine = _method(shrink=(2, 1), smoothing_mm=(1.0, 0.0), sampling=(0.05, 0.01), iterations=60)
        refine.SetInitialTransform(start, inPlace=False)
        transform = _unwrap(refine.Execute(atlas, brain))
    fixed_mask = sitk.Cast(atlas > 0, sitk.sitkUInt8)
    before = normalised_mutual_information(atlas, brain, moments, fixed_mask)
    after = normalised_mutual_information(atlas, brain, transform, fixed_mask)
    return Registration(transform, after, before)


def _unwrap(transform: sitk.Transform) -> sitk.Transform:
    """The single transform inside the composite that ``Execute`` returns with ``inPlace=False``."""
    composite = sitk.CompositeTransform(transform)
    if composite.GetNumberOfTransforms() == 1:
        inner = composite.GetNthTransform(0)
        return sitk.Euler3DTransform(inner) if inner.GetName() == "Euler3DTransform" else sitk.AffineTransform(inner)
    return composite


def normalised_mutual_information(
    fixed: sitk.Image, moving: sitk.Image, transform: sitk.Transform, mask: sitk.Image, bins: int = HISTOGRAM_BINS
) -> float:
    """Studholme's normalised mutual information (H(A) + H(B)) / H(A, B) over ``mask``: 1 for
    unrelated images, about 1.1-1.3 for aligned MRI of one head (contrast-independent, so one
    threshold serves every pair of sequences)."""
    resampled = sitk.Resample(moving, fixed, transform, sitk.sitkLinear, 0.0, sitk.sitkFloat32)
    inside = sitk.GetArrayViewFromImage(mask) > 0
    a = sitk.GetArrayViewFromImage(fixed)[inside].astype(np.float32)
    b = sitk.GetArrayViewFromImage(resampled)[inside]
    if a.size < 100:
        return 1.0
    ranges = []
    for values in (a, b):
        low, high = np.percentile(values, [0.5, 99.5])
        ranges.append((low, high if high > low else low + 1.0))
    joint, _, _ = np.histogram2d(a, b, bins=bins, range=ranges)
    p = joint / max(joint.sum(), 1.0)

    def entropy(q: np.ndarray) -> float:
        q = q[q > 0]
        return float(-(q * np.log(q)).sum())

    h_joint = entropy(p.ravel())
    return (entropy(p.sum(axis=0)) + entropy(p.sum(axis=1))) / h_joint if h_joint > 0 else 1.0
