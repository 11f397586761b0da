"""Reading and validating volumes and cases (bratseg.data.io): the real data, the naming
schemes' label conventions, and one typed error per kind of bad input.

Bad inputs are written at test time in tmp_path from small synthetic cases.
"""

from __future__ import annotations

import doctest
import gzip
import importlib
import os
import pickle
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from bratseg.data.io import CaseVolumes, atomic_write_bytes, load_case, load_volume, save_labels
from bratseg.data.layout import Case, case_from_folder
from bratseg.errors import InvalidCaseError, MissingModalityError
from bratseg.synthetic import synthetic_volumes, write_synthetic_case

SMALL = (32, 32, 16)
AFFINE = np.diag([-1.0, -1.0, 1.0, 1.0])


def _raw(path: Path) -> np.ndarray:
    return np.asanyarray(nib.load(str(path)).dataobj)


# --- the real data -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def brats18_loaded(brats18_case: Path) -> tuple[Case, CaseVolumes]:
    case = case_from_folder(brats18_case)
    return case, load_case(case)


def test_load_real_brats2018_case(brats18_loaded: tuple[Case, CaseVolumes]) -> None:
    case, vols = brats18_loaded
    assert vols.case_id == case.case_id
    assert sorted(vols.images) == ["flair", "t1", "t1ce", "t2"]
    assert vols.shape == (240, 240, 155)
    assert vols.spacing == (1.0, 1.0, 1.0)
    for data in vols.images.values():
        assert data.dtype == np.float32 and data.shape == (240, 240, 155)
    np.testing.assert_array_equal(vols.images["t1ce"], _raw(case.images["t1ce"]).astype(np.float32))
    raw = _raw(case.label)
    assert set(np.unique(raw).tolist()) == {0, 1, 2, 4}
    assert vols.label.dtype == np.uint8
    # on-disk 4 (enhancing) is internal 3; 0/1/2 keep their values
    np.testing.assert_array_equal(vols.label, np.where(raw == 4, 3, raw))
    np.testing.assert_allclose(vols.affine, nib.load(str(case.images["flair"])).affine)


def test_load_real_unlabelled_cases(tcga_case: Path, brats2023_case: Path) -> None:
    for folder in (tcga_case, brats2023_case):
        vols = load_case(case_from_folder(folder))
        assert vols.label is None
        assert vols.shape == (240, 240, 155)
        assert sorted(vols.images) == ["flair", "t1", "t1ce", "t2"]
        assert all(np.any(d) for d in vols.images.values())


def test_with_label_false_skips_label(brats18_case: Path) -> None:
    assert load_case(case_from_folder(brats18_case), with_label=False).label is None


# --- synthetic namings and file formats ----------------------------------------------------


def test_kaggle_nii_case_355_misnamed_label(tmp_path: Path) -> None:
    folder = tmp_path / "MICCAI_BraTS2020_TrainingData" / "BraTS20_Training_355"
    written = write_synthetic_case(folder, SMALL, seed=5, suffix=".nii")
    misnamed = written.label.rename(folder / "W39_1998.09.19_Segm.nii")
    case = case_from_folder(folder)
    assert case.label == misnamed
    vols = load_case(case)
    raw = _raw(misnamed)
    # uncompressed files: no gzip magic number
    assert misnamed.read_bytes()[:2] != b"\x1f\x8b"
    np.testing.assert_array_equal(vols.label, np.where(raw == 4, 3, raw))
    assert set(np.unique(vols.label).tolist()) == {0, 1, 2, 3}


def test_validation_case_without_label(tmp_path: Path) -> None:
    folder = tmp_path / "BraTS20_Validation_001"
    write_synthetic_case(folder, SMALL, suffix=".nii", with_label=False)
    vols = load_case(case_from_folder(folder))
    assert vols.label is None and sorted(vols.images) == ["flair", "t1", "t1ce", "t2"]


def test_brats2023_enhancing_label_3_maps_to_internal_3_and_is_written_as_4(tmp_path: Path) -> None:
    case = write_synthetic_case(tmp_path / "BraTS-GLI-00003-000", SMALL, seed=4, naming="brats2023")
    raw = _raw(case.label)
    assert set(np.unique(raw).tolist()) == {0, 1, 2, 3}
    vols = load_case(case_from_folder(case.folder))
    np.testing.assert_array_equal(vols.label, raw)  # 2023 values are the internal ones
    for suffix in (".nii.gz", ".nii"):
        out = save_labels(vols.label, vols, tmp_path / f"pred{suffix}")
        assert (out.read_bytes()[:2] == b"\x1f\x8b") == (suffix == ".nii.gz")
        img = nib.load(str(out))
        written = np.asanyarray(img.dataobj)
        assert written.dtype == np.uint8
        np.testing.assert_array_equal(written, np.where(raw == 3, 4, raw))
        np.testing.assert_allclose(img.affine, vols.affine)
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_file()) == ["pred.nii", "pred.nii.gz"]


def test_same_case_in_both_namings_loads_identically(tmp_path: Path) -> None:
    a = load_case(write_synthetic_case(tmp_path / "A", SMALL, seed=9))
    b = load_case(write_synthetic_case(tmp_path / "B", SMALL, seed=9, naming="brats2023", suffix=".nii"))
    np.testing.assert_array_equal(a.label, b.label)
    for modality in a.images:
        np.testing.assert_array_equal(a.images[modality], b.images[modality])


def test_save_labels_on_real_grid_round_trips(brats18_loaded: tuple[Case, CaseVolumes], tmp_path: Path) -> None:
    case, vols = brats18_loaded
    out = save_labels(vols.label, vols, tmp_path / "seg.nii.gz")
    np.testing.assert_array_equal(_raw(out), _raw(case.label))
    assert nib.load(str(out)).header.get_data_dtype() == np.uint8
    np.testing.assert_allclose(nib.load(str(out)).affine, vols.affine)


def test_four_d_singleton_is_squeezed_and_accepted(tmp_path: Path) -> None:
    case = write_synthetic_case(tmp_path / "S4D", SMALL, seed=1)
    flair = case.images["flair"]
    data = _raw(flair)
    nib.save(nib.Nifti1Image(data[..., None], AFFINE), str(flair))
    assert nib.load(str(flair)).shape == (*SMALL, 1)
    vol = load_volume(flair)
    assert vol.data.shape == SMALL
    np.testing.assert_array_equal(vol.data, data)
    vols = load_case(case_from_folder(case.folder))  # other modalities are 3-D: same grid after squeezing
    assert vols.shape == SMALL
    # a label written on that grid is 3-D
    out = save_labels(vols.label, vols, tmp_path / "out.nii.gz")
    assert nib.load(str(out)).shape == SMALL


# --- bad inputs: each a typed error naming the file and the problem ------------------------


@pytest.fixture
def case(tmp_path: Path) -> Case:
    """A small valid case whose files the tests below break one at a time."""
    return write_synthetic_case(tmp_path / "BAD_001", SMALL, seed=7)


def _expect(case: Case, culprit: Path, problem: str, error: type[InvalidCaseError] = InvalidCaseError) -> str:
    """load_case fails with ``error`` whose message starts with the culprit's file name and
    names the problem, on one line (the CLI prints it as is)."""
    with pytest.raises(error) as info:
        load_case(case_from_folder(case.folder))
    message = str(info.value)
    assert message.startswith(f"{culprit.name}: "), message
    assert problem in message, message
    assert "\n" not in message
    assert info.value.path == culprit
    return message


def test_not_nifti(case: Case) -> None:
    case.images["t1ce"].write_text("this is not an image\n")
    _expect(case, case.images["t1ce"], "not a readable NIfTI file")


def test_not_nifti_uncompressed(tmp_path: Path) -> None:
    bogus = tmp_path / "X_flair.nii"
    bogus.write_bytes(os.urandom(600))
    with pytest.raises(InvalidCaseError, match=r"^X_flair.nii: not a readable NIfTI file"):
        load_volume(bogus)


def test_truncated_gzip(case: Case) -> None:
    flair = case.images["flair"]
    blob = flair.read_bytes()
    flair.write_bytes(blob[: len(blob) // 2])
    _expect(case, flair, "truncated")


def test_truncated_uncompressed(tmp_path: Path) -> None:
    case = write_synthetic_case(tmp_path / "TRUNC", SMALL, suffix=".nii")
    t2 = case.images["t2"]
    blob = t2.read_bytes()
    t2.write_bytes(blob[: len(blob) - 1000])
    _expect(case, t2, "truncated")


def test_gzip_of_garbage(tmp_path: Path) -> None:
    bad = tmp_path / "G_flair.nii.gz"
    bad.write_bytes(gzip.compress(b"\x00" * 10))
    with pytest.raises(InvalidCaseError, match=r"^G_flair.nii.gz: "):
        load_volume(bad)


def test_two_d_image(case: Case) -> None:
    t1 = case.images["t1"]
    nib.save(nib.Nifti1Image(_raw(t1)[..., 8], AFFINE), str(t1))
    _expect(case, t1, "expected a 3-D volume, got shape (32, 32)")


def test_four_d_with_several_volumes(case: Case) -> None:
    t1 = case.images["t1"]
    data = _raw(t1)
    nib.save(nib.Nifti1Image(np.stack([data, data], axis=-1), AFFINE), str(t1))
    _expect(case, t1, "expected a 3-D volume, got shape (32, 32, 16, 2)")


def test_modalities_of_different_shapes(case: Case) -> None:
    t2 = case.images["t2"]
    nib.save(nib.Nifti1Image(_raw(t2)[:, :, :15], AFFINE), str(t2))
    _expect(case, t2, "shape (32, 32, 15) differs from BAD_001_flair.nii.gz's (32, 32, 16)")


def test_label_of_different_shape(case: Case) -> None:
    nib.save(nib.Nifti1Image(_raw(case.label)[:31], AFFINE), str(case.label))
    _expect(case, case.label, "differs from BAD_001_flair.nii.gz's")


def test_modalities_of_different_affines(case: Case) -> None:
    t1ce = case.images["t1ce"]
    shifted = AFFINE.copy()
    shifted[0, 3] = 2.0  # 2 mm off: not co-registered
    nib.save(nib.Nifti1Image(_raw(t1ce), shifted), str(t1ce))
    _expect(case, t1ce, "affine differs from BAD_001_flair.nii.gz's")


def test_label_with_zero_origin_is_voxel_aligned(case: Case) -> None:
    # Some BraTS 2017 label files carry no origin; their voxels match the images'.
    moved = AFFINE.copy()
    moved[:3, 3] = 0.0 if AFFINE[:3, 3].any() else 239.0
    expected = _raw(case.label)
    nib.save(nib.Nifti1Image(expected, moved), str(case.label))
    vols = load_case(case_from_folder(case.folder))
    assert vols.label is not None and int((vols.label > 0).sum()) == int((expected > 0).sum())


def test_label_with_other_orientation_is_refused(case: Case) -> None:
    flipped = AFFINE.copy()
    flipped[0, 0] = -flipped[0, 0]
    nib.save(nib.Nifti1Image(_raw(case.label), flipped), str(case.label))
    _expect(case, case.label, "affine differs from BAD_001_flair.nii.gz's")


def test_affine_within_float_precision_is_accepted(case: Case) -> None:
    t1ce = case.images["t1ce"]
    nudged = AFFINE.copy()
    nudged[0, 3] = 1e-5
    nib.save(nib.Nifti1Image(_raw(t1ce), nudged), str(t1ce))
    assert load_case(case_from_folder(case.folder)).shape == SMALL


def test_nan_voxels(case: Case) -> None:
    t2 = case.images["t2"]
    data = _raw(t2).astype(np.float32)
    data[3, 4, 5] = np.nan
    data[6, 7, 8] = np.inf
    nib.save(nib.Nifti1Image(data, AFFINE), str(t2))
    _expect(case, t2, "2 voxels are NaN or infinite")


def test_empty_brain(case: Case) -> None:
    flair = case.images["flair"]
    nib.save(nib.Nifti1Image(np.zeros(SMALL, np.int16), AFFINE), str(flair))
    _expect(case, flair, "empty (every voxel is 0)")


def test_label_values_outside_brats2020_scheme(case: Case) -> None:
    seg = _raw(case.label).copy()
    seg[0, 0, 0] = 3  # a BraTS 2023 value in a BraTS 2020 label map
    seg[0, 0, 1] = 7
    nib.save(nib.Nifti1Image(seg, AFFINE), str(case.label))
    _expect(case, case.label, "label values [3, 7] are not in the brats2020 scheme [0, 1, 2, 4]")


def test_label_values_outside_brats2023_scheme(tmp_path: Path) -> None:
    case = write_synthetic_case(tmp_path / "BraTS-GLI-00009-000", SMALL, naming="brats2023")
    seg = _raw(case.label).copy()
    seg[0, 0, 0] = 4  # a BraTS 2020 value in a BraTS 2023 label map
    nib.save(nib.Nifti1Image(seg, AFFINE), str(case.label))
    _expect(case, case.label, "label values [4] are not in the brats2023 scheme [0, 1, 2, 3]")


def test_fractional_label_values(case: Case) -> None:
    seg = _raw(case.label).astype(np.float32)
    seg[0, 0, 0] = 1.5  # an interpolated label map
    nib.save(nib.Nifti1Image(seg, AFFINE), str(case.label))
    _expect(case, case.label, "label values [1.5] are not integers")


@pytest.mark.parametrize("modality", ["flair", "t1ce"])
def test_missing_required_modality(case: Case, modality: str) -> None:
    images = {m: p for m, p in case.images.items() if m != modality}
    with pytest.raises(MissingModalityError, match=rf"^BAD_001: no {modality.upper()} image found"):
        load_case(Case(case.case_id, images, case.label, folder=case.folder))


def test_optional_modalities_may_be_missing(case: Case) -> None:
    vols = load_case(Case.from_files(case.images["flair"], case.images["t1ce"], label=case.label))
    assert sorted(vols.images) == ["flair", "t1ce"]


def test_file_not_found(tmp_path: Path) -> None:
    with pytest.raises(InvalidCaseError, match=r"^gone_flair.nii.gz: file not found"):
        load_volume(tmp_path / "gone_flair.nii.gz")


# --- atomic writes ----------------------------------------------------------------------------


def test_atomic_write_keeps_old_file_on_failure(tmp_path: Path) -> None:
    target = tmp_path / "out" / "labels.nii.gz"
    atomic_write_bytes(target, lambda p: p.write_bytes(b"old"))
    assert target.read_bytes() == b"old"
    assert target.stat().st_mode & 0o777 == 0o666 & ~_umask()

    def crash(p: Path) -> None:
        p.write_bytes(b"half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        atomic_write_bytes(target, crash)
    assert target.read_bytes() == b"old"
    assert os.listdir(target.parent) == ["labels.nii.gz"]  # no temp file left behind


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_case_volumes_properties() -> None:
    images, label = synthetic_volumes(SMALL, seed=0)
    header = nib.Nifti1Header()
    header.set_data_shape(SMALL)
    header.set_zooms((1.0, 1.2, 3.0))
    vols = CaseVolumes("X", {m: d.astype(np.float32) for m, d in images.items()}, AFFINE, header, None)
    assert vols.shape == SMALL
    assert vols.spacing == (1.0, pytest.approx(1.2), 3.0)


@pytest.mark.parametrize("error", [InvalidCaseError, MissingModalityError])
def test_errors_survive_pickling(error: type[InvalidCaseError]) -> None:
    """Cache workers send errors back to the parent process pickled: the type, file and
    problem must arrive intact (else the user sees BrokenProcessPool)."""
    original = error(Path("/data/X/X_flair.nii.gz"), "truncated or corrupt gzip data")
    copy = pickle.loads(pickle.dumps(original))
    assert type(copy) is error
    assert (copy.path, copy.problem, str(copy)) == (original.path, original.problem, str(original))


def test_docstring_examples() -> None:
    results = doctest.testmod(importlib.import_module("bratseg.data.io"))
    assert results.attempted > 0 and results.failed == 0


# --- grids no scan can have: refused at load, before any front end renders them ---------------


def _write_with_sform(path: Path, data: np.ndarray, sform: np.ndarray) -> Path:
    """A file whose sform is written as given (nibabel refuses to decompose a broken affine
    into a qform, so the header's rows are set directly)."""
    header = nib.Nifti1Image(data, AFFINE).header
    header["qform_code"], header["sform_code"] = 0, 2
    header["srow_x"], header["srow_y"], header["srow_z"] = sform[0], sform[1], sform[2]
    nib.save(nib.Nifti1Image(data, None, header), str(path))
    return path


@pytest.mark.parametrize(
    ("sform", "problem"),
    [
        (np.diag([1.0, 1.0, 0.0, 1.0]), "singular (rank 2 of 3)"),
        (np.array([[1.0, 0, 1, 0], [0, 1, 0, 0], [0, 0, 0, 0], [0, 0, 0, 1]]), "singular (rank 2 of 3)"),
        (np.zeros((4, 4)), "singular (rank 0 of 3)"),
        (np.full((4, 4), np.nan), "NaN or infinite values"),
        (np.diag([1e6, 1e6, 1e6, 1.0]), "voxel size 1e+06 x 1e+06 x 1e+06 mm from the affine is outside"),
        (np.diag([1e-3, 1.0, 1.0, 1.0]), "voxel size 0.001 x 1 x 1 mm from the affine is outside"),
    ],
    ids=["rank-2", "rank-2-sheared", "zero", "nan", "1e6-mm", "1e-3-mm"],
)
def test_broken_affine_is_refused_at_load(case: Case, sform: np.ndarray, problem: str) -> None:
    _write_with_sform(case.images["t1ce"], _raw(case.images["t1ce"]), sform)
    _expect(case, case.images["t1ce"], problem)


def test_header_voxel_size_absurd_or_disagreeing_with_the_affine(case: Case) -> None:
    flair = case.images["flair"]
    img = nib.Nifti1Image(_raw(flair), AFFINE)
    img.header.set_zooms((1e6, 1e6, 1e6))  # the 3e19 cm3 report: pixdim absurd, sform fine
    nib.save(img, str(flair))
    _expect(case, flair, "header voxel size 1e+06 x 1e+06 x 1e+06 mm is outside the plausible 0.05-20 mm")
    img.header.set_zooms((1.0, 1.0, 2.0))
    nib.save(img, str(flair))
    _expect(case, flair, "header voxel size 1 x 1 x 2 mm disagrees with the affine's 1 x 1 x 1 mm")


@pytest.mark.parametrize("shape", [(1, 1, 1), (240, 240, 1), (3, 64, 64)])
def test_volume_too_small_for_a_brain_is_refused(tmp_path: Path, shape: tuple[int, int, int]) -> None:
    path = tmp_path / "tiny_flair.nii.gz"
    nib.save(nib.Nifti1Image(np.ones(shape, np.int16), AFFINE), str(path))
    with pytest.raises(InvalidCaseError, match=rf"^tiny_flair.nii.gz: shape \({shape[0]}, .*too small"):
        load_volume(path)


def test_every_real_file_has_a_usable_grid(data_dir: Path) -> None:
    """No real scan trips the geometry checks: BraTS, TCGA, BraTS 2023, the native TCGA scans
    with 5.5 mm slices, the atlas and the BraTS-MET label maps on other grids."""
    from bratseg.data.geometry import geometry_problem

    files = sorted(data_dir.glob("*/*/*.nii.gz")) + sorted(data_dir.glob("atlas/*.nii.gz"))
    assert len(files) > 130
    for path in files:
        img = nib.load(str(path))
        assert geometry_problem(img.shape[:3], img.affine, img.header.get_zooms()[:3]) is None, path


# --- a modality stored in another voxel order with a matching affine: reoriented ------------


@pytest.fixture(scope="module")
def real_t1ce(brats18_case: Path) -> tuple[np.ndarray, np.ndarray]:
    img = nib.load(str(next(brats18_case.glob("*_t1ce.nii.gz"))))
    return np.asanyarray(img.dataobj), img.affine


def _real_case_with_t1ce(folder: Path, brats18_case: Path, data: np.ndarray, affine: np.ndarray) -> Case:
    """The real case's FLAIR (symlinked) and a T1ce written as given."""
    folder.mkdir()
    (folder / "R_flair.nii.gz").symlink_to(next(brats18_case.glob("*_flair.nii.gz")))
    nib.save(nib.Nifti1Image(data, affine), str(folder / "R_t1ce.nii.gz"))
    return case_from_folder(folder)


@pytest.mark.parametrize(
    ("how", "described"),
    [("flip-x", "flipped along x"), ("flip-xy", "flipped along x, y"), ("transpose-xy", "axes permuted yxz")],
)
def test_modality_stored_in_other_voxel_order_is_reoriented(
    tmp_path: Path, brats18_case: Path, real_t1ce, how: str, described: str
) -> None:
    from nibabel.orientations import apply_orientation, inv_ornt_aff

    data, affine = real_t1ce
    ornt = {
        "flip-x": [[0, -1], [1, 1], [2, 1]],
        "flip-xy": [[0, -1], [1, -1], [2, 1]],
        "transpose-xy": [[1, 1], [0, 1], [2, 1]],
    }[how]
    stored = apply_orientation(data, np.array(ornt))
    stored_affine = affine @ inv_ornt_aff(np.array(ornt), data.shape)
    assert not np.allclose(stored_affine, affine)  # a different header, the same world
    vols = load_case(_real_case_with_t1ce(tmp_path / "R", brats18_case, stored, stored_affine))
    np.testing.assert_array_equal(vols.images["t1ce"], data.astype(np.float32))
    np.testing.assert_allclose(vols.affine, affine)
    assert vols.notes == [
        f"R_t1ce.nii.gz: stored in another voxel order ({described}) with a matching affine; "
        "reoriented onto R_flair.nii.gz's grid"
    ]


def test_flip_in_the_affine_alone_is_still_refused(tmp_path: Path, brats18_case: Path, real_t1ce) -> None:
    """An affine flipped about the origin (data as before) puts the image elsewhere in the
    world: misregistration, not another voxel order."""
    data, affine = real_t1ce
    moved = affine.copy()
    moved[:, 0] = -affine[:, 0]
    case = _real_case_with_t1ce(tmp_path / "R", brats18_case, data, moved)
    with pytest.raises(InvalidCaseError, match=r"^R_t1ce.nii.gz: affine differs from R_flair.nii.gz.s: .*registered"):
        load_case(case)


# --- writing: suffixes in any letter case, as reading matches them -------------------------


@pytest.mark.parametrize(
    ("name", "gzipped"), [("seg.NII.GZ", True), ("seg.Nii.Gz", True), ("seg.nii.GZ", True), ("seg.Nii", False)]
)
def test_save_matches_suffixes_case_insensitively(tmp_path: Path, name: str, gzipped: bool) -> None:
    """``--output seg.NII.GZ`` once wrote an uncompressed file under a gzip name that nothing
    could read; reading must accept every name writing accepts (nibabel alone does not read
    ``seg.Nii.Gz``)."""
    images, label = synthetic_volumes(SMALL, seed=2)
    vols = CaseVolumes("X", {"flair": images["flair"]}, AFFINE, nib.Nifti1Image(images["flair"], AFFINE).header)
    out = save_labels(np.where(label == 4, 3, label), vols, tmp_path / name)
    assert out.name == name and sorted(p.name for p in tmp_path.iterdir()) == [name]
    assert (out.read_bytes()[:2] == b"\x1f\x8b") is gzipped
    back = load_volume(out, dtype=np.uint8)
    np.testing.assert_array_equal(back.data, label)
    np.testing.assert_allclose(back.affine, AFFINE)


@pytest.mark.parametrize(
    "name, image_class, dtype",
    [
        ("s.nii.gz", nib.Nifti1Image, "<i2"),
        ("s.Nii.Gz", nib.Nifti1Image, "<i2"),
        ("s.nii", nib.Nifti1Image, ">i2"),
        ("s.hdr", nib.Nifti1Pair, "<i2"),
        ("s.nii.gz", nib.Nifti2Image, "<f4"),
    ],
)
def test_every_nifti_flavour_reads_the_same_voxels(tmp_path, name, image_class, dtype):
    """Gzipped single-file NIfTI-1 is read through igzip; big-endian, header/image pairs,
    NIfTI-2 and names in any letter case give the same voxels as nibabel reads them."""
    voxels = np.arange(8 * 8 * 8).reshape(8, 8, 8).astype(dtype)
    path = tmp_path / name
    if name == "s.Nii.Gz":  # nibabel does not save under this name: rename what it wrote
        nib.save(image_class(voxels, np.eye(4)), str(tmp_path / "s.nii.gz"))
        (tmp_path / "s.nii.gz").rename(path)
    else:
        nib.save(image_class(voxels, np.eye(4)), str(path))
    assert np.array_equal(load_volume(path).data, voxels.astype(np.float32))
