"""The per-case choice between the fast path and the native pipeline (``bratseg.inference.segment``),
and DICOM study inputs."""

from __future__ import annotations

from pathlib import Path

import pydicom
import pytest
from pydicom.uid import generate_uid

from bratseg.data.io import load_case
from bratseg.data.layout import case_from_folder
from bratseg.errors import InvalidCaseError
from bratseg.inference import guards
from bratseg.inference.segment import route, segment
from bratseg.native.inputs import dicom_inputs, holds_dicom, study_folders


def test_brats_space_case_takes_the_fast_path(brats18_case: Path) -> None:
    # Routed from its headers, and its voxels pass the BraTS-space checks the fast path runs.
    assert route(case_from_folder(brats18_case), "auto")[0] == "none"
    assert guards.brats_space_problems(load_case(case_from_folder(brats18_case), with_label=False)) == []
    assert route(case_from_folder(brats18_case), "native")[0] == "native"
    assert route(brats18_case) == ("none", "BraTS grid")
    assert route(brats18_case, "native")[0] == "native"
    assert not holds_dicom(brats18_case)


def test_native_case_takes_the_native_path_and_none_refuses(data_dir: Path) -> None:
    folder = data_dir / "native" / "TCGA-FG-6692"
    if not folder.is_dir():
        pytest.skip(f"native case not found at {folder}")
    case = case_from_folder(folder)
    path, _reason = route(case, "auto")
    # The fast path could not even read it as one case: each sequence on its own grid.
    with pytest.raises(InvalidCaseError, match="differs from"):
        load_case(case, with_label=False)
    assert path == "native"
    assert route(case)[0] == "native"
    with pytest.raises(
        InvalidCaseError,
        match=r"TCGA-FG-6692: not in BraTS space \(.*_fla.nii.gz is 208x256x26 at 0.9x0.9x5.5 mm\); run with",
    ):
        segment(case, "none", model=_NoModel())  # refused before any model is needed


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
        segment(study, "none", model=_NoModel())


class _NoModel:
    """A model that must not be asked: refusals come before the model is needed."""

    def segment(self, case):
        raise AssertionError("the model was asked to segment")


def test_a_1mm_crop_takes_the_fast_path(tmp_path: Path) -> None:
    # Skull-stripped, co-registered 1 mm data on a smaller grid (a crop of BraTS space) is
    # what the model was trained on; the guards still check its voxels on the fast path.
    from bratseg.synthetic import write_synthetic_case

    case = write_synthetic_case(tmp_path / "CROP", shape=(96, 96, 48))
    assert route(case) == ("none", "BraTS grid")
