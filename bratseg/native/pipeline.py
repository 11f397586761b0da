"""Scans as they came off the scanner in, a label map on the patient's own grid out.

read -> skull-strip the T1ce (deepbet) -> co-register every sequence to the T1ce (rigid, mutual
information; a sequence on the T1ce's field of view that is found aligned keeps the scanner's
geometry; the brain mask bounds where similarity is checked) -> register the T1ce's brain to
the SRI24 atlas onto the BraTS grid -> segment (the one
:class:`~bratseg.inference.predictor.Segmenter` path, guards included) -> resample the region
probabilities back onto the reference sequence's grid (linear) and threshold them.

Skull stripping and registration work on each sequence's working grid
(:func:`~bratseg.native.space.to_working_grid`: about 1 mm, blocks of finer voxels averaged), and
every sequence is resampled once, from that grid straight into BraTS space (co-registration and
atlas transforms composed), so no image is interpolated twice. Only the way back works on the
patient's full grid, one full-size array at a time (:mod:`bratseg.native.to_patient`).

Example (about 20 s on a laptop CPU)::

    import bratseg
    from bratseg.native import segment_native

    result = segment_native(bratseg.from_pretrained(), {"flair": "flair.nii.gz", "t1ce": "t1c.nii.gz"}, log=print)
    result.save("seg.nii.gz")          # on the T1ce's grid, with its affine and header
    result.save_brats_space("brats/")  # the BraTS-space images, brain mask and labels
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np
import SimpleITK as sitk

from bratseg.data.io import CaseVolumes, save_nifti
from bratseg.data.labels import to_brats2020
from bratseg.data.layout import MODALITIES, REQUIRED_MODALITIES
from bratseg.errors import InvalidCaseError, MissingModalityError, NativeScanError
from bratseg.inference.predictor import Prediction, Segmenter
from bratseg.data.labels import region_volumes
from bratseg.native import checks
from bratseg.native.reader import Scan, ScanSource, read_scan
from bratseg.native.registration import coregister, register_to_atlas, similarity_region
from bratseg.native.skullstrip import SkullStripError, strip_skull
from bratseg.native.space import (
    BRATS_AFFINE,
    BRATS_SHAPE,
    affine_transform_from_ras,
    array_view,
    atlas_t1,
    brats_grid,
    chain,
    grid_image,
    resample,
    rigid_ras_matrix,
    to_array,
    to_sitk,
    to_working_grid,
)
from bratseg.native.to_patient import labels_on, mask_on, on_reference

STRIP_ON = "t1ce"  # deepbet on the T1ce beat it on the T1 against HD-BET (skullstrip.py)


@dataclass
class NativePrediction:
    """The result of :func:`segment_native`.

    ``labels`` are BraTS 2020 labels (0/1/2/4) on the grid of the ``reference`` sequence, with
    its affine and header; ``brain_mask`` is the skull strip on that grid. ``brats`` is the
    BraTS-space prediction (its ``volumes`` hold the BraTS-space images). ``atlas_to_reference``
    is the 4 x 4 matrix (RAS world coordinates, NiftyReg's convention) taking BraTS/atlas
    coordinates to the reference scan's, and ``t1ce_to_sequence`` holds, for every sequence,
    the matrix taking T1ce coordinates to that sequence's (the rigid co-registration).
    ``images`` are the sequences co-registered onto the reference grid (float32 ``[x, y, z]``
    arrays in the label map's voxel order), to show the labels over the patient's own scans.
    ``timings`` are seconds per step, in order (``cpu_seconds`` the CPU time of this process in
    each, all threads together: what a busy machine inflates least); ``steps`` say what each
    step did; ``warnings`` are one-line doubts (the guards' included).
    """

    labels: nib.Nifti1Image
    reference: str
    brats: Prediction
    brain_mask: nib.Nifti1Image
    atlas_to_reference: np.ndarray
    t1ce_to_sequence: dict[str, np.ndarray] = field(default_factory=dict)
    images: dict[str, np.ndarray] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    cpu_seconds: dict[str, float] = field(default_factory=dict)
    steps: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def seconds(self) -> float:
        return float(sum(self.timings.values()))

    def region_volumes(self) -> dict[str, float]:
        """Volume of each tumour region in cm3, counted on the patient's grid."""
        labels = np.asanyarray(self.labels.dataobj)  # BraTS 2020 values, as region_volumes counts
        return region_volumes(labels, tuple(float(z) for z in self.labels.header.get_zooms()[:3]))

    def to_nifti(self) -> nib.Nifti1Image:
        """The label map on the reference grid (as :meth:`Prediction.to_nifti` on the fast path)."""
        return self.labels

    def on_reference_grid(self, brats_volume: np.ndarray, order: int = 1) -> nib.Nifti1Image:
        """A BraTS-space volume (say, the uncertainty map of :attr:`brats`) resampled onto the
        reference grid through :attr:`atlas_to_reference` (linear by default), as float32 with
        the reference scan's affine: what is shown beside the labels on the patient's scan
        (``order`` 0: nearest neighbour)."""
        image = to_sitk(np.asarray(brats_volume, dtype=np.float32), self.brats.volumes.affine)
        to_brats = affine_transform_from_ras(np.linalg.inv(self.atlas_to_reference))  # reference -> BraTS world
        grid = grid_image(self.labels.shape, self.labels.affine)
        data = array_view(resample(image, grid, to_brats, linear=order != 0))
        header = self.labels.header.copy()
        header.set_data_dtype(np.float32)
        return nib.Nifti1Image(data, self.labels.affine, header)

    def save(self, path: str | Path) -> Path:
        """Write the label map on the reference grid (atomically)."""
        return save_nifti(self.labels, path)

    def save_brats_space(self, folder: str | Path, case_id: str | None = None) -> list[Path]:
        """Write the BraTS-space images, brain mask and labels in BraTS naming
        (``<case>_flair.nii.gz`` ... ``<case>_seg.nii.gz``), as BraTS Toolkit does, for other
        BraTS tools."""
        volumes = self.brats.volumes
        case_id = case_id or volumes.case_id
        folder = Path(folder)
        written = []
        for modality, data in volumes.images.items():
            written.append(save_nifti(_brats_image(data.astype(np.float32)), folder / f"{case_id}_{modality}.nii.gz"))
        brain = np.zeros(volumes.shape, dtype=np.uint8)
        for data in volumes.images.values():
            brain |= (data != 0).astype(np.uint8)
        written.append(save_nifti(_brats_image(brain), folder / f"{case_id}_brain_mask.nii.gz"))
        written.append(save_nifti(_brats_image(self.brats.labels.astype(np.uint8)), folder / f"{case_id}_seg.nii.gz"))
        return written


def segment_native(
    segmenter: Segmenter,
    images: Mapping[str, ScanSource],
    *,
    reference: str = "t1ce",
    keep_intermediate: str | Path | None = None,
    log: Callable[[str], None] | None = None,
    case_id: str | None = None,
    atlas_affine: bool = False,
    names: Mapping[str, str] | None = None,
) -> NativePrediction:
    """Segment native scans (any grid, orientation and spacing, with skull) and return the label
    map on the grid of the ``reference`` sequence.

    ``images`` maps modalities (``flair``, ``t1ce``, ``t1``, ``t2``; FLAIR and T1ce required)
    to NIfTI paths, DICOM series folders or zips, or images. ``keep_intermediate`` names a
    folder for every intermediate volume and transform; ``log`` receives one line per step.
    ``names`` say how messages name images given in memory (a DICOM series, say), by modality.
    ``atlas_affine`` registers to the atlas with 12 degrees of freedom instead of 6: off by
    default, since BraTS (and the reference BrainLesion pipeline) register rigidly, keeping each
    brain's size, and the model was trained on such data.

    Raises :class:`~bratseg.errors.InvalidCaseError` (a subclass names the step) with one line
    naming the file when the scans cannot be used.
    """
    run = _Run(log)
    unknown = sorted(set(images) - set(MODALITIES))
    if unknown:
        raise InvalidCaseError(None, f"unknown modality {', '.join(unknown)} (known: {', '.join(MODALITIES)})")
    for modality in REQUIRED_MODALITIES:
        if modality not in images:
            raise MissingModalityError(None, f"no {modality.upper()} image given (required: FLAIR and T1ce)")
    if reference not in images:
        raise InvalidCaseError(None, f"the reference sequence {reference} is not among the images given")

    with run.step("read") as say:
        given = [m for m in MODALITIES if m in images]
        # Two at a time: gzip and the casts release the GIL, and two keep the memory of reading
        # (the file's array, its float32 copy and the image) to two sequences at once.
        with ThreadPoolExecutor(max_workers=2) as pool:
            scans = dict(zip(given, pool.map(lambda m: read_scan(images[m], m), given), strict=True))
        for modality, name in (names or {}).items():
            if modality in scans and scans[modality].path is None:
                scans[modality].path = Path(name)
        for scan in scans.values():
            _refuse_if(scan, checks.slice_problem(scan.spacing))
            run.warn(scan, checks.slice_warnings(scan.spacing))
        say(", ".join(f"{m} {_grid_text(s)}" for m, s in scans.items()))
    case_id = case_id or _case_id(scans["t1ce"])
    fixed = scans["t1ce"].image
    # Skull stripping and registration on each sequence's working grid (about 1 mm).
    working = {m: to_working_grid(scan.image) for m, scan in scans.items()}

    with run.step("skull-strip") as say:
        strip = scans[STRIP_ON]
        try:
            brain_mask = strip_skull(working[STRIP_ON])
        except SkullStripError as exc:
            raise NativeScanError(_where(strip), f"skull stripping failed: {exc}") from None
        _refuse_if(strip, checks.brain_mask_problem(brain_mask))
        run.warn(strip, checks.brain_mask_warnings(brain_mask))
        voxels = int(np.count_nonzero(sitk.GetArrayViewFromImage(brain_mask)))
        shrunk = working[STRIP_ON].GetSize() != strip.image.GetSize()
        on = f" (on its {_spacing_text(working[STRIP_ON])} mm working grid)" if shrunk else ""
        say(f"deepbet on {STRIP_ON}{on}: brain {voxels * np.prod(brain_mask.GetSpacing()) / 1000:.0f} cm3")

    to_t1ce: dict[str, sitk.Transform] = {"t1ce": sitk.Euler3DTransform()}
    with run.step("co-register") as say:
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

    with run.step("atlas") as say:
        brain = sitk.Mask(working["t1ce"], brain_mask)
        atlas_reg = register_to_atlas(atlas_t1(), brain, brain_mask, affine=atlas_affine)
        atlas_to_t1ce = atlas_reg.transform
        del brain
        say(f"t1ce -> SRI24 {'affine' if atlas_affine else 'rigid'}, NMI {atlas_reg.similarity:.3f}")

    with run.step("to BraTS space") as say:
        grid = brats_grid()
        brats_brain = to_array(resample(sitk.Cast(brain_mask, sitk.sitkFloat32), grid, atlas_to_t1ce)) > 0.5
        arrays = {}
        for modality, scan in scans.items():
            # From the working grid: its averaged voxels are what a 1 mm grid should sample.
            data = to_array(resample(working[modality], grid, chain(atlas_to_t1ce, to_t1ce[modality])))
            data[~brats_brain] = 0
            arrays[modality] = np.maximum(data, 0, out=data)
            run.warn(scan, _coverage_warnings(data, brats_brain))
        # The files each sequence came from: the checks on BraTS-space volumes name them.
        paths = {m: scan.path for m, scan in scans.items() if scan.path is not None}
        volumes = CaseVolumes(case_id, arrays, BRATS_AFFINE.copy(), _brats_header(), paths=paths)
        say(f"{len(arrays)} sequences, brain {int(brats_brain.sum()) / 1000:.0f} cm3")
    del working

    with run.step("segment") as say:
        brats = segmenter.segment(volumes)
        run.warnings += brats.warnings
        say(f"{brats.seconds:.2f} s in the network and its pre- and post-processing")

    ref = scans[reference]
    with run.step("back to the patient") as say:
        to_ref_grid = chain(to_t1ce[reference].GetInverse(), atlas_to_t1ce.GetInverse())  # ref point -> BraTS
        labels = labels_on(ref, brats, to_ref_grid)
        ref_to_t1ce = to_t1ce[reference].GetInverse()
        mask_on_t1ce = mask_on(brain_mask, fixed, sitk.Transform())
        ref_mask = mask_on_t1ce if reference == "t1ce" else mask_on(brain_mask, ref.image, ref_to_t1ce)
        # Every sequence on the reference grid, for showing the labels over the patient's scans:
        # a float32 sequence already there is shown as it is (no copy), the others resampled or
        # cast, each releasing its scan (unless kept for the intermediate files) as it goes.
        del fixed, strip, scan  # only ``scans`` and ``ref`` hold the full-resolution images now
        on_ref = {}
        for modality in list(scans):
            on_ref[modality] = on_reference(scans[modality], ref, chain(ref_to_t1ce, to_t1ce[modality]))
            if keep_intermediate is None and modality != reference:
                del scans[modality]
        say(f"region probabilities resampled onto {ref.name} ({_grid_text(ref)}) and thresholded at 0.5")

    atlas_to_reference = rigid_ras_matrix(chain(atlas_to_t1ce, to_t1ce[reference]))
    result = NativePrediction(
        labels=_nifti_like(to_brats2020(labels), ref),
        reference=reference,
        brats=brats,
        brain_mask=_nifti_like(to_array(ref_mask), ref),
        atlas_to_reference=atlas_to_reference,
        t1ce_to_sequence={m: rigid_ras_matrix(t) for m, t in to_t1ce.items()},
        images=on_ref,
        timings=run.timings,
        cpu_seconds=run.cpu_seconds,
        steps=run.steps,
        warnings=run.warnings,
    )
    if keep_intermediate is not None:
        with run.step("keep intermediate") as say:
            from bratseg.native.intermediate import write_intermediate

            written = write_intermediate(Path(keep_intermediate), result, scans, to_t1ce, atlas_to_t1ce, mask_on_t1ce)
            say(f"{len(written)} files in {keep_intermediate}")
    return result


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


def _nifti_like(data: np.ndarray, scan: Scan) -> nib.Nifti1Image:
    """A uint8 map on ``scan``'s grid with its affine and header, as the data layer writes labels."""
    header = scan.header.copy()
    header.set_data_dtype(np.uint8)
    image = nib.Nifti1Image(data.astype(np.uint8, copy=False), scan.affine, header)
    image.header.set_slope_inter(1, 0)
    return image


def _spacing_text(image: sitk.Image) -> str:
    return "x".join(f"{s:.3g}" for s in image.GetSpacing())


def _grid_text(scan: Scan) -> str:
    size = "x".join(str(s) for s in scan.image.GetSize())
    spacing = "x".join(f"{s:.3g}" for s in scan.spacing)
    return f"{size} at {spacing} mm"


def _case_id(scan: Scan) -> str:
    if scan.path is None:
        return "native"
    name = scan.path.name
    for ext in (".nii.gz", ".nii", ".zip"):
        if name.lower().endswith(ext):
            return name[: -len(ext)]
    return name


class _Run:
    """Per-step timings, what each step did, and warnings, logged as they happen."""

    def __init__(self, log: Callable[[str], None] | None):
        self.log = log
        self.timings: dict[str, float] = {}
        self.cpu_seconds: dict[str, float] = {}
        self.steps: list[str] = []
        self.warnings: list[str] = []

    def warn(self, scan: Scan, warnings: list[str]) -> None:
        self.warnings += [f"{scan.name}: {w}" for w in warnings]

    @contextmanager
    def step(self, name: str) -> Iterator[Callable[[str], None]]:
        notes: list[str] = []
        t0, cpu0 = time.perf_counter(), time.process_time()
        yield notes.append
        seconds = time.perf_counter() - t0
        self.timings[name] = seconds
        self.cpu_seconds[name] = time.process_time() - cpu0
        line = f"{name}: {'; '.join(notes)} ({seconds:.2f} s)" if notes else f"{name} ({seconds:.2f} s)"
        self.steps.append(line)
        if self.log is not None:
            self.log(line)
