"""The per-case choice between the fast path and the native pipeline, and DICOM study inputs."""

from __future__ import annotations

from pathlib import Path

import pydicom
import pytest
from pydicom.uid import generate_uid

from bratseg.data.layout import case_from_folder
from bratseg.errors import InvalidCaseError
from bratseg.native.dispatch import choose_path, dicom_inputs, holds_dicom, route, segment_any, study_folders


def test_brats_space_case_takes_the_fast_path(brats18_case: Path) -> None:
    assert choose_path(case_from_folder(brats18_case), "auto") == ("none", [])
    assert choose_path(case_from_folder(brats18_case), "native")[0] == "native"
    assert route(brats18_case) == ("none", "BraTS grid")
    assert route(brats18_case, "native")[0] == "native"
    assert not holds_dicom(brats18_case)


def test_native_case_takes_the_native_path_and_none_refuses(data_dir: Path) -> None:
    folder = data_dir / "native" / "TCGA-FG-6692"
    if not folder.is_dir():
        pytest.skip(f"native case not found at {folder}")
    case = case_from_folder(folder)
    path, reasons = choose_path(case, "auto")
    assert path == "native" and "differs from" in reasons[0]
    assert route(case)[0] == "native"
    with pytest.raises(
        InvalidCaseError,
        match=r"TCGA-FG-6692: not in BraTS space \(.*_fla.nii.gz is 208x256x26 at 0.9x0.9x5.5 mm\); run with",
    ):
        segment_any(None, case, "none")  # refused before any model is needed


def test_dicom_study_inputs_name_their_series(data_dir: Path, tmp_path: Path) -> None:
    source = data_dir / "dicom" / "siemens" / "series"
    if not source.is_dir():
        pytest.skip(f"DICOM series not found at {source}")
    study = tmp_path / "study"
    for number, description in ((7, "AX FLAIR"), (9, "AX T1 POST GAD")):
        uid = generate_uid()
        (study / f"s{number}").mkdir(parents=True)
        for path in sorted(source.iterdir()):
            ds = pydicom.dcmread(path)
            ds.SeriesInstanceUID, ds.SeriesNumber, ds.SeriesDescription = uid, number, description
            ds.save_as(study / f"s{number}" / path.name)
    assert holds_dicom(study)
    assert route(study) == ("native", "DICOM input")
    assert study_folders(study) == [study]  # one StudyInstanceUID: one study, two series
    assert study_folders(data_dir / "dicom") == sorted(p for p in (data_dir / "dicom").iterdir() if p.is_dir())
    inputs = dicom_inputs(study)
    assert inputs.case_id == "study" and sorted(inputs.images) == ["flair", "t1ce"]
    assert inputs.notes == [
        "flair: series 7 'AX FLAIR' (SeriesDescription 'AX FLAIR')",
        "t1ce: series 9 'AX T1 POST GAD' (SeriesDescription 'AX T1 POST GAD')",
    ]
    assert inputs.images["t1ce"].GetSize() == (256, 256, 4)
    assert inputs.names["t1ce"] == "study series 9 'AX T1 POST GAD'"  # how errors name the series
    with pytest.raises(InvalidCaseError, match="no series recognised as T1CE .* name it with --t1ce"):
        dicom_inputs(study / "s7")
    with pytest.raises(InvalidCaseError, match="DICOM scans need the native preprocessing"):
        segment_any(None, study, "none")


def test_a_1mm_crop_takes_the_fast_path(tmp_path: Path) -> None:
    # Skull-stripped, co-registered 1 mm data on a smaller grid (a crop of BraTS space) is
    # what the model was trained on; the guards still check its voxels on the fast path.
    from bratseg.synthetic import write_synthetic_case

    case = write_synthetic_case(tmp_path / "CROP", shape=(96, 96, 48))
    assert route(case) == ("none", "BraTS grid")
