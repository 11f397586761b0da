"""Scans as they came off the scanner into BraTS space: the native path's preprocessing.

read -> skull-strip the T1ce (deepbet) -> co-register every sequence to the T1ce (rigid, mutual
information; a sequence on the T1ce's field of view that is found aligned keeps the scanner's
geometry; the brain mask bounds where similarity is checked) -> register the T1ce's brain to
the SRI24 atlas onto the BraTS grid -> resample every sequence into BraTS space.

Skull stripping and registration work on each sequence's working grid
(:func:`~bratseg.native.space.to_working_grid`: about 1 mm, blocks of finer voxels averaged), and
every sequence is resampled once, from that grid straight into BraTS space (co-registration and
atlas transforms composed), so no image is interpolated twice. The result keeps the scans and
transforms for the way back (:mod:`bratseg.native.to_patient`). The inference stage runs this,
segments the BraTS-space volumes and maps the labels back
(the inference stage's ``native_path.segment_native``); this stage knows nothing of the model.

Example (about 10 s on a laptop CPU)::

    from bratseg.native.steps import StepLog
    from bratseg.native.to_brats import to_brats_space

    case = to_brats_space({"flair": "flair.nii.gz", "t1ce": "t1c.nii.gz"}, StepLog(print))
    case.volumes.shape  # (240, 240, 155)
"""

from __future__ import annotations

from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import SimpleITK as sitk

from bratseg.data.io import CaseVolumes, save_nifti
from bratseg.data.layout import MODALITIES, REQUIRED_MODALITIES
from bratseg.errors import InvalidCaseError, MissingModalityError, NativeScanError
from bratseg.native import checks
from bratseg.native.reader import Scan, ScanSource, read_scan
from bratseg.native.registration import coregister, register_to_atlas, similarity_region
from bratseg.native.skullstrip import SkullStripError, strip_skull
from bratseg.native.space import (
    BRATS_AFFINE,
    BRATS_SHAPE,
    atlas_t1,
    brats_grid,
    chain,
    resample,
    to_array,
    to_working_grid,
)
from bratseg.native.steps import StepLog

STRIP_ON = "t1ce"  # deepbet on the T1ce beat it on the T1 against HD-BET (skullstrip.py)


@dataclass
class BratsSpaceCase:
    """A native case brought into BraTS space, and what the way back needs.

    ``volumes`` are the BraTS-space images (240 x 240 x 155, 1 mm, skull-stripped), carrying
    the files they came from; ``scans`` the sequences as read (full resolution); ``reference``
    the sequence whose grid the labels go back onto; ``to_t1ce`` each sequence's rigid
    co-registration (T1ce point -> sequence point, ITK's convention) and ``atlas_to_t1ce`` the
    atlas registration (BraTS point -> T1ce point); ``brain_mask`` the skull strip on the
    T1ce's working grid.
    """

    volumes: CaseVolumes
    scans: dict[str, Scan]
    reference: str
    to_t1ce: dict[str, sitk.Transform]
    atlas_to_t1ce: sitk.Transform
    brain_mask: sitk.Image


def to_brats_space(
    images: Mapping[str, ScanSource],
    steps: StepLog,
    *,
    reference: str = "t1ce",
    case_id: str | None = None,
    atlas_affine: bool = False,
    names: Mapping[str, str] | None = None,
) -> BratsSpaceCase:
    """Read native scans (any grid, orientation and spacing, with skull), skull-strip and
    register them, and resample them into BraTS space; each step is timed in ``steps``.

    ``images`` maps modalities (``flair``, ``t1ce``, ``t1``, ``t2``; FLAIR and T1ce required)
    to NIfTI paths, DICOM series folders or zips, or images. ``names`` say how messages name
    images given in memory (a DICOM series, say), by modality. ``atlas_affine`` registers to
    the atlas with 12 degrees of freedom instead of 6: off by default, since BraTS (and the
    reference BrainLesion pipeline) register rigidly, keeping each brain's size, and the model
    was trained on such data.

    Raises :class:`~bratseg.errors.InvalidCaseError` (a subclass names the step) with one line
    naming the file when the scans cannot be used.
    """
    _check_given(images, reference)
    scans = _read(images, names or {}, steps)
    case_id = case_id or _case_id(scans["t1ce"])
    # Skull stripping and registration on each sequence's working grid (about 1 mm).
    working = {m: to_working_grid(scan.image) for m, scan in scans.items()}
    brain_mask = _strip(scans[STRIP_ON], working[STRIP_ON], steps)
    to_t1ce = _coregister(scans, working, brain_mask, steps)
    atlas_to_t1ce = _register_to_atlas(working["t1ce"], brain_mask, atlas_affine, steps)
    volumes = _into_brats_space(scans, working, brain_mask, to_t1ce, atlas_to_t1ce, case_id, steps)
    return BratsSpaceCase(volumes, scans, reference, to_t1ce, atlas_to_t1ce, brain_mask)


def _check_given(images: Mapping[str, ScanSource], reference: str) -> None:
    unknown = sorted(set(images) - set(MODALITIES))
    if unknown:
        raise InvalidCaseError(None, f"unknown modality {', '.join(unknown)} (known: {', '.join(MODALITIES)})")
    for modality in REQUIRED_MODALITIES:
        if modality not in images:
            raise MissingModalityError(None, f"no {modality.upper()} image given (required: FLAIR and T1ce)")
    if reference not in images:
        raise InvalidCaseError(None, f"the reference sequence {reference} is not among the images given")


def _read(images: Mapping[str, ScanSource], names: Mapping[str, str], steps: StepLog) -> dict[str, Scan]:
    with steps.step("read") as say:
        given = [m for m in MODALITIES if m in images]
        # Two at a time: gzip and the casts release the GIL, and two keep the memory of reading
        # (the file's array, its float32 copy and the image) to two sequences at once.
        with ThreadPoolExecutor(max_workers=2) as pool:
            scans = dict(zip(given, pool.map(lambda m: read_scan(images[m], m), given), strict=True))
        for modality, name in names.items():
            if modality in scans and scans[modality].path is None:
                scans[modality].path = Path(name)
        for scan in scans.values():
            _refuse_if(scan, checks.slice_problem(scan.spacing))
            steps.warn(scan.name, checks.slice_warnings(scan.spacing))
        say(", ".join(f"{m} {grid_text(s)}" for m, s in scans.items()))
    return scans


def _strip(strip: Scan, working: sitk.Image, steps: StepLog) -> sitk.Image:
    """The brain mask of ``strip`` on its working grid."""
    with steps.step("skull-strip") as say:
        try:
            brain_mask = strip_skull(working)
        except SkullStripError as exc:
            raise NativeScanError(_where(strip), f"skull stripping failed: {exc}") from None
        _refuse_if(strip, checks.brain_mask_problem(brain_mask))
        steps.warn(strip.name, checks.brain_mask_warnings(brain_mask))
        voxels = int(np.count_nonzero(sitk.GetArrayViewFromImage(brain_mask)))
        shrunk = working.GetSize() != strip.image.GetSize()
        on = f" (on its {_spacing_text(working)} mm working grid)" if shrunk else ""
        say(f"deepbet on {STRIP_ON}{on}: brain {voxels * np.prod(brain_mask.GetSpacing()) / 1000:.0f} cm3")
    return brain_mask


def _coregister(
    scans: dict[str, Scan], working: dict[str, sitk.Image], brain_mask: sitk.Image, steps: StepLog
) -> dict[str, sitk.Transform]:
    """Each sequence's rigid transform from the T1ce (identity for the T1ce itself)."""
    to_t1ce: dict[str, sitk.Transform] = {"t1ce": sitk.Euler3DTransform()}
    with steps.step("co-register") as say:
        region = similarity_region(brain_mask)
        for modality, scan in scans.items():
            if modality == "t1ce":
                continue
            result = coregister(working["t1ce"], working[modality], region, checks.MIN_COREGISTERED_NMI)
            _refuse_if(scan, checks.coregistration_problem(scans["t1ce"].name, result.similarity))
            to_t1ce[modality] = result.transform
            if result.registered:
                say(f"{modality} -> t1ce rigid, NMI {result.similarity_before:.3f} -> {result.similarity:.3f}")
            else:
                say(f"{modality} already aligned with t1ce (same field of view, NMI {result.similarity:.3f})")
    return to_t1ce


def _register_to_atlas(t1ce: sitk.Image, brain_mask: sitk.Image, affine: bool, steps: StepLog) -> sitk.Transform:
    """The transform taking BraTS (atlas) points to T1ce points."""
    with steps.step("atlas") as say:
        brain = sitk.Mask(t1ce, brain_mask)
        atlas_reg = register_to_atlas(atlas_t1(), brain, brain_mask, affine=affine)
        del brain
        say(f"t1ce -> SRI24 {'affine' if affine else 'rigid'}, NMI {atlas_reg.similarity:.3f}")
    return atlas_reg.transform


def _into_brats_space(
    scans: dict[str, Scan],
    working: dict[str, sitk.Image],
    brain_mask: sitk.Image,
    to_t1ce: dict[str, sitk.Transform],
    atlas_to_t1ce: sitk.Transform,
    case_id: str,
    steps: StepLog,
) -> CaseVolumes:
    """Every sequence resampled once, from its working grid into BraTS space, 0 outside the brain."""
    with steps.step("to BraTS space") as say:
        grid = brats_grid()
        brats_brain = to_array(resample(sitk.Cast(brain_mask, sitk.sitkFloat32), grid, atlas_to_t1ce)) > 0.5
        arrays = {}
        for modality, scan in scans.items():
            # From the working grid: its averaged voxels are what a 1 mm grid should sample.
            data = to_array(resample(working[modality], grid, chain(atlas_to_t1ce, to_t1ce[modality])))
            data[~brats_brain] = 0
            arrays[modality] = np.maximum(data, 0, out=data)
            steps.warn(scan.name, _coverage_warnings(data, brats_brain))
        # The files each sequence came from: the checks on BraTS-space volumes name them.
        paths = {m: scan.path for m, scan in scans.items() if scan.path is not None}
        volumes = CaseVolumes(case_id, arrays, BRATS_AFFINE.copy(), _brats_header(), paths=paths)
        say(f"{len(arrays)} sequences, brain {int(brats_brain.sum()) / 1000:.0f} cm3")
    return volumes


def save_brats_space(
    folder: str | Path, volumes: CaseVolumes, labels: np.ndarray, case_id: str | None = None
) -> list[Path]:
    """Write BraTS-space images, their brain mask and ``labels`` (BraTS 2020 values) in BraTS
    naming (``<case>_flair.nii.gz`` ... ``<case>_seg.nii.gz``), as BraTS Toolkit does, for other
    BraTS tools."""
    case_id = case_id or volumes.case_id
    folder = Path(folder)
    written = []
    for modality, data in volumes.images.items():
        written.append(save_nifti(_brats_image(data.astype(np.float32)), folder / f"{case_id}_{modality}.nii.gz"))
    brain = np.zeros(volumes.shape, dtype=np.uint8)
    for data in volumes.images.values():
        brain |= (data != 0).astype(np.uint8)
    written.append(save_nifti(_brats_image(brain), folder / f"{case_id}_brain_mask.nii.gz"))
    written.append(save_nifti(_brats_image(labels.astype(np.uint8)), folder / f"{case_id}_seg.nii.gz"))
    return written


def grid_text(scan: Scan) -> str:
    """``512x512x24 at 0.43x0.43x5.5 mm``: a scan's grid, for the step lines."""
    size = "x".join(str(s) for s in scan.image.GetSize())
    spacing = "x".join(f"{s:.3g}" for s in scan.spacing)
    return f"{size} at {spacing} mm"


def _where(scan: Scan) -> Path:
    """What an error names: the scan's file, or its modality for an image given in memory."""
    return scan.path if scan.path is not None else Path(scan.name)


def _refuse_if(scan: Scan, problem: str | None) -> None:
    if problem is not None:
        raise NativeScanError(_where(scan), problem)


def _coverage_warnings(data: np.ndarray, brain: np.ndarray) -> list[str]:
    """A sequence whose field of view misses part of the brain (0 there after resampling)."""
    missing = float(np.count_nonzero(brain & (data <= 0))) / max(int(brain.sum()), 1)
    if missing > 0.02:
        return [f"{100 * missing:.0f} % of the brain lies outside this sequence's field of view"]
    return []


def _brats_header() -> nib.Nifti1Header:
    header = nib.Nifti1Header()
    header.set_data_shape(BRATS_SHAPE)
    header.set_data_dtype(np.float32)
    header.set_zooms((1.0, 1.0, 1.0))
    header.set_qform(BRATS_AFFINE, code=1)
    header.set_sform(BRATS_AFFINE, code=1)
    header.set_xyzt_units("mm", "sec")
    return header


def _brats_image(data: np.ndarray) -> nib.Nifti1Image:
    header = _brats_header()
    header.set_data_dtype(data.dtype)
    return nib.Nifti1Image(data, BRATS_AFFINE, header)


def _spacing_text(image: sitk.Image) -> str:
    return "x".join(f"{s:.3g}" for s in image.GetSpacing())


def _case_id(scan: Scan) -> str:
    if scan.path is None:
        return "native"
    name = scan.path.name
    for ext in (".nii.gz", ".nii", ".zip"):
        if name.lower().endswith(ext):
            return name[: -len(ext)]
    return name
