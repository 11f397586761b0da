"""The native pipeline on the raw TCGA-FG-6692 scans (with skull, 5.5 mm slices, each sequence
on its own grid) against what the reference BraTS pipeline (BrainLesion preprocessing: NiftyReg,
HD-BET) produced for the same case; and its refusals on real data made unusable."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

from bratseg.errors import InvalidCaseError, MissingModalityError, NativeScanError
from bratseg.inference.native_path import segment_native
from bratseg.native import checks, read_scan
from bratseg.native.registration import normalised_mutual_information, similarity_region
from bratseg.native.space import BRATS_AFFINE, BRATS_SHAPE, to_array

SUFFIXES = {"flair": "_fla", "t1ce": "_t1c", "t1": "_t1", "t2": "_t2"}
STEPS = ["read", "skull-strip", "co-register", "atlas", "to BraTS space", "segment", "back to the patient"]


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2.0 * float((a & b).sum()) / max(float(a.sum() + b.sum()), 1.0)


@pytest.fixture(scope="module")
def native_files(native_dir: Path) -> dict[str, Path]:
    return {m: next(native_dir.glob(f"*{suffix}.nii.gz")) for m, suffix in SUFFIXES.items()}


@pytest.fixture(scope="module")
def segmenter():
    import bratseg

    return bratseg.from_pretrained()


@pytest.fixture(scope="module")
def run(segmenter, native_files, tmp_path_factory):
    """The whole case end to end once, intermediate files kept."""
    keep = tmp_path_factory.mktemp("native_keep")
    lines: list[str] = []
    result = segment_native(segmenter, native_files, keep_intermediate=keep, log=lines.append)
    return result, keep, lines


def test_brain_mask_matches_hdbet(run, native_dir: Path) -> None:
    result, _, _ = run
    reference = nib.load(native_dir / "reference" / "hdbet_native_t1c_brain_mask.nii.gz")
    ours = np.asanyarray(result.native.brain_mask.dataobj) > 0
    assert ours.shape == reference.shape
    assert _dice(ours, np.asanyarray(reference.dataobj) > 0) >= 0.95


def test_brats_space_brain_mask_matches_reference(run, native_dir: Path) -> None:
    result, _, _ = run
    reference = nib.load(native_dir / "reference" / "brats_space_brain_mask.nii.gz")
    assert np.allclose(reference.affine, BRATS_AFFINE)
    volumes = result.model_space.volumes
    assert volumes.shape == BRATS_SHAPE and np.allclose(volumes.affine, BRATS_AFFINE)
    ours = np.zeros(BRATS_SHAPE, dtype=bool)
    for data in volumes.images.values():
        ours |= data != 0
    # Measured 0.954; the reference pipeline's own native mask pulled through its transform: 0.972.
    assert _dice(ours, np.asanyarray(reference.dataobj) > 0) >= 0.93


def test_brats_space_volume_back_on_the_reference_grid(run) -> None:
    """on_reference_grid pulls a BraTS-space volume onto the patient's grid: the BraTS-space
    brain mask lands on the native skull strip it came from."""
    result, _, _ = run
    volumes = result.model_space.volumes
    brats_brain = np.zeros(BRATS_SHAPE, dtype=np.float32)
    for data in volumes.images.values():
        brats_brain = np.maximum(brats_brain, (data != 0).astype(np.float32))
    image = result.native.on_reference_grid(brats_brain)
    assert image.shape == result.native.labels.shape and np.allclose(image.affine, result.native.labels.affine)
    back = np.asanyarray(image.dataobj)
    assert back.dtype == np.float32 and 0.0 <= back.min() and back.max() <= 1.0
    assert _dice(back > 0.5, np.asanyarray(result.native.brain_mask.dataobj) > 0) >= 0.9


def test_atlas_transform_agrees_with_reference(run, native_dir: Path) -> None:
    """Brain points of BraTS space land within a few mm of where the reference transform puts
    them on the native T1ce (measured: 3.1 mm mean, 6.3 mm at most; the slices are 5.5 mm)."""
    result, _, _ = run
    reference = np.loadtxt(native_dir / "reference" / "atlas_to_native_t1c_affine.txt")
    brain = np.asanyarray(nib.load(native_dir / "reference" / "brats_space_brain_mask.nii.gz").dataobj) > 0
    voxels = np.argwhere(brain)[::97]
    points = np.c_[voxels, np.ones(len(voxels))] @ BRATS_AFFINE.T
    distance = np.linalg.norm((points @ result.native.atlas_to_reference.T - points @ reference.T)[:, :3], axis=1)
    assert distance.mean() < 4.5 and distance.max() < 9.0
    # Rigid, as the reference: no scaling or shear.
    assert np.allclose(np.linalg.svd(result.native.atlas_to_reference[:3, :3])[1], 1.0, atol=1e-6)


def test_sequences_coregistered(run, native_files) -> None:
    """Each sequence, resampled through its co-registration, is more similar to the T1ce than
    through the scanner geometry alone, and above the pipeline's threshold."""
    result, keep, _ = run
    t1ce = read_scan(native_files["t1ce"], "t1ce").image
    mask = sitk.Cast(sitk.ReadImage(str(keep / "native" / "brain_mask_t1ce.nii.gz")), sitk.sitkUInt8)
    region = similarity_region(mask)
    for modality in ("flair", "t1", "t2"):
        moving = read_scan(native_files[modality], modality).image
        transform = sitk.ReadTransform(str(keep / "transforms" / f"{modality}_to_t1ce.tfm"))
        before = normalised_mutual_information(t1ce, moving, sitk.Transform(), region)
        after = normalised_mutual_information(t1ce, moving, transform, region)
        assert after > before + 0.02, modality
        assert checks.coregistration_problem("t1ce", after) is None
        # The same sequence moved 10 mm and 5 degrees off its registration is refused.
        off = sitk.Euler3DTransform(sitk.Euler3DTransform(transform))
        params = list(off.GetParameters())
        params[0] += np.radians(5.0)
        params[3] += 10.0
        off.SetParameters(params)
        assert checks.coregistration_problem("t1ce", normalised_mutual_information(t1ce, moving, off, region))
        assert np.allclose(result.native.t1ce_to_sequence[modality][3], [0, 0, 0, 1])


def test_same_grid_but_moved_is_registered(run) -> None:
    """The T1 shares the T1ce's grid, but the head moved between the two: the alignment check
    fails (similarity through the scanner's geometry 1.022, under the threshold) and the T1 is
    registered, as the sequences on grids of their own are."""
    result, _, _ = run
    coregistration = next(line for line in result.steps if line.startswith("co-register"))
    assert "t1 -> t1ce rigid" in coregistration and "already aligned" not in coregistration
    moved_mm = np.linalg.norm(result.native.t1ce_to_sequence["t1"][:3, 3])
    assert moved_mm > 1.0, result.native.t1ce_to_sequence["t1"]


def test_labels_on_the_t1ce_grid(run, native_files) -> None:
    result, _, _ = run
    t1ce = nib.load(native_files["t1ce"])
    assert result.native.labels.shape == t1ce.shape
    assert np.allclose(result.native.labels.affine, t1ce.affine)
    assert result.native.labels.get_data_dtype() == np.uint8
    labels = np.asanyarray(result.native.labels.dataobj)
    assert set(np.unique(labels).tolist()) <= {0, 1, 2, 4}
    tumour = labels > 0
    # A low-grade glioma: some cm3 of tumour, all of it inside the brain.
    assert 2.0 < result.region_volumes()["whole tumour"] < 200.0
    brain = np.asanyarray(result.native.brain_mask.dataobj) > 0
    assert (tumour & ~brain).sum() <= 0.02 * tumour.sum()
    # The sequences on the same grid, to draw the labels over: the T1ce is the input itself.
    assert sorted(result.volumes.images) == sorted(SUFFIXES)
    assert all(data.shape == labels.shape for data in result.volumes.images.values())
    assert np.allclose(result.volumes.images["t1ce"], np.asanyarray(t1ce.dataobj), atol=1e-3)
    assert result.to_nifti() is result.native.labels


def test_steps_timings_and_intermediate_files(run) -> None:
    result, keep, lines = run
    assert list(result.native.timings)[: len(STEPS)] == STEPS
    assert all(seconds > 0 for seconds in result.native.timings.values())
    assert len(lines) == len(result.steps) == len(result.native.timings)
    assert lines[1].startswith("skull-strip: deepbet on t1ce")
    report = json.loads((keep / "steps.json").read_text())
    assert list(report["seconds"]) == STEPS
    case_id = result.model_space.volumes.case_id
    for modality in SUFFIXES:
        image = nib.load(keep / "brats" / f"{case_id}_{modality}.nii.gz")
        assert image.shape == BRATS_SHAPE and np.allclose(image.affine, BRATS_AFFINE)
        assert nib.load(keep / "native" / f"{modality}_on_t1ce.nii.gz").shape == result.native.labels.shape
    seg = np.asanyarray(nib.load(keep / "brats" / f"{case_id}_seg.nii.gz").dataobj)
    assert np.array_equal(seg, result.model_space.labels)
    saved = np.loadtxt(keep / "transforms" / "atlas_to_reference_ras.txt")
    assert np.allclose(saved, result.native.atlas_to_reference, atol=1e-4)
    on_disk = nib.load(keep / "native" / "labels.nii.gz")
    assert np.array_equal(np.asanyarray(on_disk.dataobj), np.asanyarray(result.native.labels.dataobj))


def _write_dicom_series(image: sitk.Image, folder: Path, description: str, study_uid: str, number: int) -> None:
    """``image`` as a single-frame MR series, one file per slice with its position and
    orientation (the geometry a scanner writes)."""
    from pydicom.uid import generate_uid

    folder.mkdir(parents=True)
    image = sitk.Cast(image, sitk.sitkInt16)
    direction = image.GetDirection()
    orientation = "\\".join(f"{v:.8f}" for v in (*direction[0:7:3], *direction[1:8:3]))
    series_uid = generate_uid()
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    for z in range(image.GetDepth()):
        plane = image[:, :, z]
        position = image.TransformIndexToPhysicalPoint((0, 0, z))
        tags = {
            "0008|0060": "MR",
            "0008|0016": "1.2.840.10008.5.1.4.1.1.4",
            "0008|0018": generate_uid(),
            "0008|103e": description,
            "0020|000d": study_uid,
            "0020|000e": series_uid,
            "0020|0011": str(number),
            "0020|0013": str(z + 1),
            "0020|0032": "\\".join(f"{v:.6f}" for v in position),
            "0020|0037": orientation,
            "0028|0030": "\\".join(f"{v:.6f}" for v in image.GetSpacing()[1::-1]),
            "0018|0050": f"{image.GetSpacing()[2]:.6f}",
        }
        for tag, value in tags.items():
            plane.SetMetaData(tag, value)
        writer.SetFileName(str(folder / f"{z:03d}.dcm"))
        writer.Execute(plane)


def test_flair_and_t1ce_from_dicom_onto_the_flair_grid(segmenter, native_files, run, tmp_path: Path) -> None:
    """FLAIR and T1ce alone, each given as a DICOM series folder written from the native scan,
    the result on the FLAIR's own grid; its tumour overlaps the four-sequence result moved onto
    that grid."""
    from pydicom.uid import generate_uid

    full, keep, _ = run
    images = {m: sitk.ReadImage(str(native_files[m]), sitk.sitkFloat32) for m in ("flair", "t1ce")}
    study = generate_uid()
    folders = {}
    for number, (modality, image) in enumerate(images.items(), 1):
        folders[modality] = tmp_path / modality
        _write_dicom_series(image, folders[modality], f"AX {modality.upper()}", study, number)
    result = segment_native(segmenter, folders, reference="flair")
    # The FLAIR's grid read back from DICOM: the same voxels in world space (DICOM stacks the
    # slices along the normal of its row and column directions, so possibly in reverse order).
    flair = nib.load(native_files["flair"])
    assert result.native.labels.shape == flair.shape
    ours_canonical = nib.as_closest_canonical(result.native.labels)
    assert np.allclose(ours_canonical.affine, nib.as_closest_canonical(flair).affine, atol=1e-3)
    ours = np.asanyarray(result.native.labels.dataobj) > 0
    # The four-sequence whole tumour, pulled onto the FLAIR grid through its co-registration.
    t1ce_labels = sitk.GetImageFromArray(
        (np.asanyarray(full.native.labels.dataobj) > 0).astype(np.uint8).transpose(2, 1, 0)
    )
    t1ce_labels.CopyInformation(read_scan(native_files["t1ce"], "t1ce").image)
    to_t1ce = sitk.ReadTransform(str(keep / "transforms" / "flair_to_t1ce.tfm")).GetInverse()
    flair_grid = read_scan(folders["flair"], "flair").image
    moved = to_array(sitk.Resample(t1ce_labels, flair_grid, to_t1ce, sitk.sitkNearestNeighbor, 0)) > 0
    assert ours.any() and _dice(ours, moved) > 0.5


def test_refusals(segmenter, native_files, tmp_path: Path) -> None:
    with pytest.raises(MissingModalityError, match="FLAIR"):
        segment_native(segmenter, {"t1ce": native_files["t1ce"]})
    with pytest.raises(InvalidCaseError, match="unknown modality dwi"):
        segment_native(segmenter, {"flair": native_files["flair"], "t1ce": native_files["t1ce"], "dwi": "x"})
    # The T2 with every other slice dropped: 11 mm slices.
    t2 = nib.load(native_files["t2"])
    thick = tmp_path / "thick_t2.nii.gz"
    affine = t2.affine.copy()
    affine[:3, 2] *= 2
    nib.save(nib.Nifti1Image(np.asanyarray(t2.dataobj)[:, :, ::2], affine), thick)
    images = {"flair": native_files["flair"], "t1ce": native_files["t1ce"], "t2": thick}
    with pytest.raises(NativeScanError, match=r"thick_t2.nii.gz: slices 11.0 mm apart are too thick"):
        segment_native(segmenter, images)


def test_a_content_refusal_on_the_native_path_names_the_file(segmenter, native_files, tmp_path: Path) -> None:
    """The input checks run on the BraTS-space volumes the pipeline builds: a refusal there names
    the file the sequence came from, not only its modality (here a FLAIR stored negated)."""
    from guard_inputs import save_with_scaling

    from bratseg.errors import InvalidCaseError

    flair = nib.load(native_files["flair"])
    negated = save_with_scaling(
        np.asanyarray(flair.dataobj.get_unscaled()), flair.affine, tmp_path / "negated_flair.nii.gz", -1.0
    )
    with pytest.raises(InvalidCaseError, match=r"negated_flair\.nii\.gz"):
        segment_native(segmenter, {"flair": negated, "t1ce": native_files["t1ce"]})


def test_skull_strip_checks_on_real_masks(native_dir: Path) -> None:
    mask = sitk.ReadImage(str(native_dir / "reference" / "hdbet_native_t1c_brain_mask.nii.gz"), sitk.sitkUInt8)
    assert checks.brain_mask_problem(mask) is None and checks.brain_mask_warnings(mask) == []
    eroded = sitk.BinaryErode(mask, [25, 25, 0])  # a strip that lost most of the brain
    assert "outside the adult range" in checks.brain_mask_problem(eroded)
    # The same mask moved 70 voxels to the side, out through the edge of the field of view.
    array = sitk.GetArrayFromImage(mask)
    shifted = sitk.GetImageFromArray(np.roll(array, 70, axis=2))
    shifted.CopyInformation(mask)
    assert "edge of the field of view" in (checks.brain_mask_problem(shifted) or "")
