"""DICOM reading on real series from five vendors (one an enhanced multi-frame file) against
dicom2nifti's conversion of each, series splitting in mixed folders and zips, and sequence
guessing with overrides on real series given other descriptions."""

from __future__ import annotations

import shutil
import zipfile
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from pydicom.uid import generate_uid

from bratseg.errors import DicomError
from bratseg.native import read_scan
from bratseg.native.dicom import find_series, read_dicom_series, read_study
from bratseg.native.space import to_array, to_nifti_affine

VENDORS = ("ge", "siemens", "philips", "hitachi", "philips_enhanced")


@pytest.fixture(scope="module")
def dicom_dir(data_dir: Path) -> Path:
    folder = data_dir / "dicom"
    if not folder.is_dir():
        pytest.skip(f"DICOM test series not found at {folder}")
    return folder


def _canonical(data: np.ndarray, affine: np.ndarray) -> nib.Nifti1Image:
    return nib.as_closest_canonical(nib.Nifti1Image(data.reshape(data.shape[:3]), affine))


def _assert_matches_reference(image, reference_path: Path) -> None:
    reference = nib.load(reference_path)
    ours = _canonical(to_array(image), to_nifti_affine(image))
    ref = _canonical(np.asanyarray(reference.dataobj), reference.affine)
    assert ours.shape == ref.shape
    # The same anatomical axis along each voxel axis (GDCM may stack the slices the other way
    # round than dicom2nifti; the world-space comparison below covers the direction).
    axis = {"L": "LR", "R": "LR", "A": "AP", "P": "AP", "S": "IS", "I": "IS"}
    codes = nib.aff2axcodes(to_nifti_affine(image)), nib.aff2axcodes(reference.affine)
    assert [axis[c] for c in codes[0]] == [axis[c] for c in codes[1]]
    assert np.allclose(ours.affine, ref.affine, atol=1e-3)
    assert np.allclose(np.asanyarray(ours.dataobj), np.asanyarray(ref.dataobj), rtol=1e-5, atol=1e-3)


@pytest.mark.parametrize("vendor", VENDORS)
def test_series_geometry_and_values_match_dicom2nifti(dicom_dir: Path, vendor: str) -> None:
    scan = read_scan(dicom_dir / vendor / "series", "t1")
    assert scan.image.GetDimension() == 3
    _assert_matches_reference(scan.image, dicom_dir / vendor / "reference_dicom2nifti.nii.gz")


def _mixed_folder(dicom_dir: Path, target: Path) -> Path:
    """Every vendor's files in one folder, shuffled together under neutral names."""
    target.mkdir()
    files = [p for v in VENDORS for p in (dicom_dir / v / "series").iterdir()]
    for i, path in enumerate(sorted(files, key=lambda p: p.name[::-1])):
        shutil.copy(path, target / f"f{i:03d}")
    return target


def test_mixed_folder_and_zip_split_by_series_uid(dicom_dir: Path, tmp_path: Path) -> None:
    mixed = _mixed_folder(dicom_dir, tmp_path / "mixed")
    series = find_series(mixed)
    assert len(series) == 5 and sum(len(s.files) for s in series) == 17
    # Told apart by their headers: the guesses of the five (no SeriesDescription in these files).
    guesses = sorted(str(s.sequence) for s in series)
    assert guesses == ["None", "flair", "flair", "t1", "t1"]
    archive = tmp_path / "study.zip"
    with zipfile.ZipFile(archive, "w") as z:
        for path in mixed.iterdir():
            z.write(path, f"study/{path.name}")
    # The five come from five studies (StudyInstanceUIDs): refused as one case, naming them ...
    with pytest.raises(DicomError, match=r"study.zip: the series come from \d different studies \(StudyInstanceUID"):
        read_study(archive)
    # ... unless the user names the series of every sequence.
    guessed = {s.sequence: s.uid for s in series if s.sequence is not None}
    chosen, found = read_study(archive, overrides=guessed)
    assert len(found) == 5
    by_uid = {s.uid: s for s in found}
    for vendor in VENDORS:
        uid = str(
            pydicom.dcmread(next((dicom_dir / vendor / "series").iterdir()), stop_before_pixels=True).SeriesInstanceUID
        )
        if by_uid[uid] in chosen.values():  # read from the zip before its folder went away
            _assert_matches_reference(by_uid[uid].image, dicom_dir / vendor / "reference_dicom2nifti.nii.gz")
    with pytest.raises(DicomError, match="holds 5 series"):
        read_dicom_series(mixed)


def _relabelled_copy(source: Path, target: Path, description: str, number: int) -> None:
    """A real series under another SeriesInstanceUID, number and description."""
    target.mkdir(parents=True)
    uid = generate_uid()
    for path in sorted(source.iterdir()):
        ds = pydicom.dcmread(path)
        ds.SeriesInstanceUID = uid
        ds.SeriesNumber = number
        ds.SeriesDescription = description
        ds.save_as(target / path.name)


def test_sequences_guessed_from_descriptions_and_overridden(dicom_dir: Path, tmp_path: Path) -> None:
    study = tmp_path / "study"
    siemens = dicom_dir / "siemens" / "series"
    for number, description in enumerate(["AX T2 FLAIR", "AX T1 POST GAD", "AX T1 SE", "AX T2 TSE", "DWI b1000"], 2):
        _relabelled_copy(siemens, study / f"s{number}", description, number)
    chosen, found = read_study(study)
    assert {m: s.description for m, s in chosen.items()} == {
        "flair": "AX T2 FLAIR",
        "t1ce": "AX T1 POST GAD",
        "t1": "AX T1 SE",
        "t2": "AX T2 TSE",
    }
    assert chosen["t1ce"].basis == "SeriesDescription 'AX T1 POST GAD'"
    assert next(s for s in found if s.number == 6).sequence is None  # DWI is none of the four
    # The user says series 4 is the post-contrast T1 and series 3 the plain one.
    chosen, _ = read_study(study, overrides={"t1ce": 4, "t1": "AX T1 POST GAD"})
    assert chosen["t1ce"].number == 4 and chosen["t1"].number == 3
    with pytest.raises(DicomError, match="0 series match 'AX T1 PRE'"):
        read_study(study, overrides={"t1": "AX T1 PRE"})
    # One series folder given as a sequence reads as that sequence.
    scan = read_scan(study / "s3", "t1ce")
    assert scan.description == "AX T1 POST GAD" and scan.image.GetSize() == (256, 256, 4)


def test_bad_dicom_input(dicom_dir: Path, tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("not DICOM")
    with pytest.raises(DicomError, match="empty: holds no DICOM image series"):
        read_scan(empty, "flair")
    evil = tmp_path / "evil.zip"
    with zipfile.ZipFile(evil, "w") as z:
        z.writestr("../outside.dcm", b"x")
    with pytest.raises(DicomError, match="would unpack outside the folder"):
        read_scan(evil, "flair")
    broken = tmp_path / "broken.zip"
    broken.write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(DicomError, match="broken.zip: not a DICOM folder or a readable zip"):
        read_scan(broken, "flair")
    two = tmp_path / "two_slices"
    two.mkdir()
    for path in sorted((dicom_dir / "ge" / "series").iterdir())[:2]:
        shutil.copy(path, two / path.name)
    with pytest.raises(DicomError, match="no DICOM image series of 3 or more slices"):
        read_scan(two, "t1")


def _copy_series(source: Path, target: Path, skip: int | None = None, **tags: object) -> None:
    """A real series under a new SeriesInstanceUID with ``tags`` set, without its ``skip``-th
    file (in position order: the series' slices differ along one axis) when given."""
    target.mkdir(parents=True)
    uid = generate_uid()
    files = sorted(
        source.iterdir(), key=lambda p: tuple(pydicom.dcmread(p, stop_before_pixels=True).ImagePositionPatient)
    )
    for i, path in enumerate(files):
        if i == skip:
            continue
        ds = pydicom.dcmread(path)
        ds.SeriesInstanceUID = uid
        for keyword, value in tags.items():
            setattr(ds, keyword, value)
        ds.save_as(target / path.name)


def test_series_of_two_patients_are_refused_unless_named(dicom_dir: Path, tmp_path: Path) -> None:
    """One study folder whose FLAIR and T1ce carry different PatientIDs: refused naming both
    IDs and series; accepted when the user names the series of each sequence."""
    siemens, study = dicom_dir / "siemens" / "series", tmp_path / "study"
    _copy_series(siemens, study / "s2", SeriesNumber=2, SeriesDescription="AX FLAIR", PatientID="PAT-A")
    _copy_series(siemens, study / "s3", SeriesNumber=3, SeriesDescription="AX T1 POST GAD", PatientID="PAT-B")
    with pytest.raises(DicomError) as info:
        read_study(study)
    message = str(info.value)
    assert message.startswith("study: the series come from 2 different patients (PatientID 'PAT-A': FLAIR (series 2")
    assert "PatientID 'PAT-B': T1CE (series 3 'AX T1 POST GAD')" in message and "give each series explicitly" in message
    with pytest.raises(DicomError, match="different patients"):
        read_study(study, overrides={"flair": 2})  # one named, the other guessed: still refused
    chosen, _ = read_study(study, overrides={"flair": 2, "t1ce": 3})
    assert chosen["flair"].patient_id == "PAT-A" and chosen["t1ce"].patient_id == "PAT-B"
    # Each series given on its own (--flair DIR --t1ce DIR) is the user's explicit choice.
    assert read_scan(study / "s3", "t1ce").image.GetSize() == (256, 256, 4)


def test_series_with_a_missing_slice_is_refused_naming_the_gap(dicom_dir: Path, tmp_path: Path) -> None:
    """A series whose second slice (of four, 1 mm apart) is missing: before, GDCM stacked the
    three as evenly spaced; now refused with the gap, however the series is given."""
    gappy = tmp_path / "gappy"
    _copy_series(dicom_dir / "siemens" / "series", gappy, skip=1, SeriesDescription="AX FLAIR")
    expected = (
        r"gappy: series \d+ 'AX FLAIR': slice positions are not evenly spaced: 1 mm apart, but 2 mm between "
        r"-?[\d.]+ and -?[\d.]+ mm along the slice normal \(1 slice missing\?\)"
    )
    with pytest.raises(DicomError, match=expected):
        read_scan(gappy, "flair")
    with pytest.raises(DicomError, match="slice positions are not evenly spaced"):
        read_study(tmp_path)
    # The same slice twice (another echo at one position) is refused too.
    doubled = tmp_path / "doubled"
    _copy_series(dicom_dir / "siemens" / "series", doubled, SeriesDescription="AX FLAIR")
    first = sorted(doubled.iterdir())[0]
    ds = pydicom.dcmread(first)
    ds.SOPInstanceUID = generate_uid()
    ds.save_as(doubled / "echo2.dcm")
    with pytest.raises(DicomError, match=r"2 slices share positions .*several images per slice in one series"):
        read_scan(doubled, "flair")


@pytest.mark.parametrize("vendor", VENDORS)
def test_real_series_are_evenly_spaced(dicom_dir: Path, vendor: str) -> None:
    """No false alarm: every real series (an enhanced multi-frame one included) passes."""
    from bratseg.native.dicom import slice_gap_problem

    (series,) = find_series(dicom_dir / vendor / "series")
    assert len(series.planes) == series.frames and slice_gap_problem(series) is None
