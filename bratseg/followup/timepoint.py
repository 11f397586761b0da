"""One time point of a follow-up comparison: its label map on its own grid, its T1ce and brain
mask (what the two time points are registered with) and, when bratseg segmented it, its
confidence.

A time point is segmented the way ``bratseg predict`` would (:func:`bratseg.segment`:
BraTS-space input on the fast path, raw NIfTI or DICOM through the native pipeline), or its
label map is given (``--baseline-seg`` / ``--followup-seg``): then the scans are only read for
the T1ce, and the label map must lie in the same world coordinates as that T1ce (a map
``bratseg predict`` wrote for those scans does).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np
import SimpleITK as sitk

from bratseg.data.layout import Case, case_from_folder
from bratseg.errors import InvalidCaseError, MissingModalityError

TimePointSource = Case | str | Path | Mapping[str, str | Path]
"""What a time point may be given as: anything ``bratseg predict`` takes (a case folder, a raw
NIfTI folder, a DICOM study folder or zip), a :class:`~bratseg.data.layout.Case`, or a mapping
of modality -> file."""


@dataclass
class TimePoint:
    """A time point ready to measure and register.

    ``labels`` are BraTS 2020 labels (0/1/2/4) on the grid of ``affine`` (the patient's grid
    for native input, the BraTS grid for BraTS-space input); ``t1ce`` and ``brain`` are
    SimpleITK images in the same world coordinates (not necessarily on that grid).
    ``confidence`` is None when the label map was given, not predicted; ``path`` says which
    way it came (``fast``, ``native`` or ``given``).
    """

    name: str
    labels: np.ndarray
    affine: np.ndarray
    header: nib.Nifti1Header
    t1ce: sitk.Image
    brain: sitk.Image
    path: str
    confidence: object | None = None
    seconds: float = 0.0
    warnings: list[str] = field(default_factory=list)

    def label_image(self) -> nib.Nifti1Image:
        header = self.header.copy()
        header.set_data_dtype(np.uint8)
        return nib.Nifti1Image(self.labels.astype(np.uint8), self.affine, header)


def as_case_or_study(source: TimePointSource) -> Case | Path:
    """A :class:`Case` for NIfTI input, the path itself for a DICOM study."""
    from bratseg.native.inputs import holds_dicom

    if isinstance(source, Case):
        return source
    if isinstance(source, Mapping):
        images = {str(m): Path(p) for m, p in source.items()}
        for required in ("flair", "t1ce"):
            if required not in images:
                raise MissingModalityError(None, f"no {required.upper()} image given (required: FLAIR and T1ce)")
        first = next(iter(images.values()))
        return Case(first.parent.name or "case", images, folder=first.parent)
    path = Path(source)
    if not path.exists():
        raise InvalidCaseError(path, "not found")
    if holds_dicom(path):
        return path
    return case_from_folder(path)


def segment_timepoint(segmenter, source: TimePointSource, preprocess: str = "auto", log=None) -> TimePoint:
    """Segment one time point as ``bratseg predict`` would and keep what registration needs."""
    from bratseg.inference.confidence import assess
    from bratseg.inference.segment import segment
    from bratseg.native.space import to_sitk

    target = as_case_or_study(source)
    prediction = segment(target, preprocess, model=segmenter, log=log)  # type: ignore[arg-type]
    confidence = assess(prediction.model_space)
    name = target.case_id if isinstance(target, Case) else target.name
    if prediction.native is not None:
        affine = prediction.native.labels.affine
        labels = np.asarray(prediction.native.labels.dataobj).astype(np.uint8)
        t1ce = to_sitk(prediction.volumes.images["t1ce"], affine)
        brain = to_sitk(np.asarray(prediction.native.brain_mask.dataobj).astype(np.uint8), affine)
        header, path = prediction.native.labels.header, "native"
    else:
        volumes = prediction.volumes
        affine, labels, header, path = volumes.affine, prediction.labels.astype(np.uint8), volumes.header, "fast"
        t1ce = to_sitk(volumes.images["t1ce"], affine)
        brain = to_sitk(_nonzero_brain(volumes.images), affine)
    return TimePoint(
        name, labels, np.asarray(affine), header, t1ce, brain, path, confidence, prediction.seconds, prediction.warnings
    )


def _nonzero_brain(images: Mapping[str, np.ndarray]) -> np.ndarray:
    """The brain of a skull-stripped (BraTS-space) case: where any sequence is non-zero."""
    brain = np.zeros(next(iter(images.values())).shape, dtype=bool)
    for data in images.values():
        brain |= data != 0
    return brain.astype(np.uint8)


def given_timepoint(source: TimePointSource, seg: str | Path, preprocess: str = "auto", log=None) -> TimePoint:
    """A time point whose label map is given: the scans are read for the T1ce only, and skull
    stripped (deepbet) unless they are in BraTS space (skull-stripped already)."""
    from bratseg.data.io import load_volume
    from bratseg.data.label_schemes import to_internal_labels
    from bratseg.data.labels import to_brats2020
    from bratseg.inference.segment import route
    from bratseg.native.inputs import dicom_inputs
    from bratseg.native.reader import read_scan
    from bratseg.native.space import to_sitk, to_working_grid

    target = as_case_or_study(source)
    if isinstance(target, Case):
        t1ce = read_scan(target.images["t1ce"], "t1ce")
        stripped = preprocess == "none" or (preprocess == "auto" and route(target, "auto")[0] == "none")
        name = target.case_id
    else:
        inputs = dicom_inputs(target)
        t1ce = read_scan(inputs.images["t1ce"], "t1ce")
        stripped, name = False, inputs.case_id
    volume = load_volume(seg, dtype=np.float32)
    internal, _ = to_internal_labels(volume.data, "auto", volume.path)
    labels = to_brats2020(internal)
    warnings = []
    if _origin_only_differs(volume.affine, labels.shape, t1ce):
        # Some BraTS 2017 label files carry a zero origin while their images carry the real one,
        # yet are voxel-aligned with them (as bratseg.data.io.load_case accepts them).
        volume.affine = t1ce.affine.copy()
        warnings.append(f"{Path(seg).name}: origin differs from {t1ce.name}'s on the same grid; taken as aligned")
    try:
        to_sitk(labels[:1, :1, :1], volume.affine)
    except ValueError as exc:
        raise InvalidCaseError(seg, str(exc)) from None
    if stripped:
        brain = sitk.Cast(t1ce.image != 0, sitk.sitkUInt8)
    else:
        from bratseg.native.skullstrip import SkullStripError, strip_skull

        if log is not None:
            log(f"{name}: skull-stripping the T1ce for registration")
        try:
            brain = strip_skull(to_working_grid(t1ce.image))
        except SkullStripError as exc:
            raise InvalidCaseError(t1ce.path or name, f"skull stripping failed: {exc}") from None
    _check_overlap(labels, volume.affine, t1ce.image, seg)
    return TimePoint(name, labels, volume.affine, volume.header, t1ce.image, brain, "given", warnings=warnings)


def _origin_only_differs(affine: np.ndarray, shape: tuple[int, ...], t1ce) -> bool:
    """A label map on the T1ce's grid (shape, voxel axes) whose origin alone differs."""
    same_shape = tuple(shape) == tuple(int(n) for n in t1ce.image.GetSize())
    same_axes = np.allclose(affine[:3, :3], t1ce.affine[:3, :3], atol=1e-3)
    return same_shape and same_axes and not np.allclose(affine[:3, 3], t1ce.affine[:3, 3], atol=1e-3)


def _check_overlap(labels: np.ndarray, affine: np.ndarray, t1ce: sitk.Image, seg: str | Path) -> None:
    """Refuse a label map whose tumour lies outside its scans' field of view (another
    patient's or another space's map)."""
    points = np.argwhere(labels > 0)
    if points.size == 0:
        return
    centre = np.append(points.mean(axis=0), 1.0) @ np.asarray(affine).T
    lps = (-centre[0], -centre[1], centre[2])
    index = t1ce.TransformPhysicalPointToContinuousIndex(lps)
    if any(i < -0.5 or i > n - 0.5 for i, n in zip(index, t1ce.GetSize())):
        raise InvalidCaseError(
            seg, "its tumour lies outside the T1ce's field of view: the label map is not in that scan's space"
        )
