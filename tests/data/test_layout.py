"""Naming schemes and case discovery (bratseg.data.layout) on the real data and on synthetic
layouts that the real data does not cover (Kaggle BraTS 2020 nesting, ``.nii``, case 355)."""

from __future__ import annotations

import doctest
import importlib
import os
from pathlib import Path

import pytest

from bratseg.data.layout import Case, case_from_folder, find_cases, modality_of, nifti_stem
from bratseg.errors import InvalidCaseError, MissingModalityError
from bratseg.synthetic import write_synthetic_case

SMALL = (32, 32, 16)


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        # BraTS 2018-2021
        ("Brats18_2013_11_1_flair.nii.gz", ("flair", "brats2020")),
        ("Brats18_2013_11_1_t1.nii.gz", ("t1", "brats2020")),
        ("Brats18_2013_11_1_t1ce.nii.gz", ("t1ce", "brats2020")),
        ("Brats18_2013_11_1_t2.nii.gz", ("t2", "brats2020")),
        ("Brats18_2013_11_1_seg.nii.gz", ("seg", "brats2020")),
        ("BraTS20_Training_001_flair.nii", ("flair", "brats2020")),
        ("BraTS20_Training_001_t1ce.nii", ("t1ce", "brats2020")),
        ("BraTS20_Training_001_seg.nii", ("seg", "brats2020")),
        ("BRATS20_TRAINING_001_T2.NII.GZ", ("t2", "brats2020")),
        # Kaggle BraTS 2020 case 355's label
        ("W39_1998.09.19_Segm.nii", ("seg", "brats2020")),
        # BraTS Toolkit output, with and without _bet
        ("TCGA-DU-7294_fla_bet.nii.gz", ("flair", "brats2020")),
        ("TCGA-DU-7294_t1_bet.nii.gz", ("t1", "brats2020")),
        ("TCGA-DU-7294_t1c_bet.nii.gz", ("t1ce", "brats2020")),
        ("TCGA-DU-7294_t2_bet.nii.gz", ("t2", "brats2020")),
        ("TCGA-DU-7294_fla.nii.gz", ("flair", "brats2020")),
        ("TCGA-DU-7294_t1c.nii", ("t1ce", "brats2020")),
        # BraTS 2023+
        ("BraTS-GLI-00001-000-t2f.nii.gz", ("flair", "brats2023")),
        ("BraTS-GLI-00001-000-t1n.nii.gz", ("t1", "brats2023")),
        ("BraTS-GLI-00001-000-t1c.nii.gz", ("t1ce", "brats2023")),
        ("BraTS-GLI-00001-000-t2w.nii.gz", ("t2", "brats2023")),
        ("BraTS-MET-00217-000-seg.nii.gz", ("seg", "brats2023")),
        ("BraTS-GLI-00001-000-t2f.nii", ("flair", "brats2023")),
        # not a known naming, or not NIfTI at all
        ("consensus-mav.nii.gz", None),
        ("isen-20.nii.gz", None),
        ("SEG-00217-000.nii.gz", None),
        ("Brats18_2013_11_1_flair.mha", None),
        ("README.md", None),
        ("flair_notes.txt", None),
    ],
)
def test_modality_of_every_naming(name: str, expected: tuple[str, str] | None) -> None:
    assert modality_of(name) == expected


def test_nifti_stem() -> None:
    assert nifti_stem("a/b/X_flair.nii.gz") == "X_flair"
    assert nifti_stem("X_flair.NII") == "X_flair"
    assert nifti_stem("X_flair.nii.bak") is None


def _file_names(case: Case) -> dict[str, str]:
    names = {m: p.name for m, p in case.images.items()}
    if case.label is not None:
        names["seg"] = case.label.name
    return names


def test_brats2018_real_case(brats18_case: Path) -> None:
    case = case_from_folder(brats18_case)
    cid = brats18_case.name
    assert case.case_id == cid
    assert case.label_scheme == "brats2020"
    assert case.folder == brats18_case
    assert _file_names(case) == {
        "flair": f"{cid}_flair.nii.gz",
        "t1": f"{cid}_t1.nii.gz",
        "t1ce": f"{cid}_t1ce.nii.gz",
        "t2": f"{cid}_t2.nii.gz",
        "seg": f"{cid}_seg.nii.gz",
    }


def test_brats2018_real_folder_every_case_complete(brats18_dir: Path) -> None:
    cases = find_cases(brats18_dir)
    folders = sorted(p.name for p in brats18_dir.iterdir() if p.is_dir())
    assert [c.case_id for c in cases] == folders
    for case in cases:
        assert sorted(case.images) == ["flair", "t1", "t1ce", "t2"], case.case_id
        assert case.label is not None and case.label.name == f"{case.case_id}_seg.nii.gz"


def test_brats_toolkit_real_case(tcga_case: Path) -> None:
    case = case_from_folder(tcga_case)
    assert case.case_id == "TCGA-DU-7294"
    assert case.label is None  # segmentation/ holds algorithm outputs, not a label file beside the images
    assert case.label_scheme == "brats2020"
    assert _file_names(case) == {
        "flair": "TCGA-DU-7294_fla_bet.nii.gz",
        "t1": "TCGA-DU-7294_t1_bet.nii.gz",
        "t1ce": "TCGA-DU-7294_t1c_bet.nii.gz",
        "t2": "TCGA-DU-7294_t2_bet.nii.gz",
    }
    # The segmentation/ subfolder holds label maps only, so it is no case of its own.
    assert [c.case_id for c in find_cases(tcga_case.parent)] == ["TCGA-DU-7294"]


def test_brats2023_real_case(brats2023_case: Path) -> None:
    case = case_from_folder(brats2023_case)
    cid = brats2023_case.name
    assert case.label_scheme == "brats2023"
    assert case.label is None
    assert _file_names(case) == {
        "flair": f"{cid}-t2f.nii.gz",
        "t1": f"{cid}-t1n.nii.gz",
        "t1ce": f"{cid}-t1c.nii.gz",
        "t2": f"{cid}-t2w.nii.gz",
    }


def test_find_cases_whole_real_data(data_dir: Path) -> None:
    cases = {c.case_id: c for c in find_cases(data_dir)}
    labelled = {p.name for sub in ("brats18", "brats-extra") for p in (data_dir / sub).iterdir() if p.is_dir()}
    unlabeled = {p.name for p in (data_dir / "unlabeled").iterdir() if p.is_dir()}
    assert len(labelled) == 27
    # metrics/ holds label maps only and dicom/ one NIfTI per series (no modality naming);
    # native/ holds one raw clinical case in BraTS Toolkit's naming (_fla, _t1c, ...).
    assert set(cases) == labelled | unlabeled | {"TCGA-DU-7294", "TCGA-FG-6692"}
    assert {cases[c].label_scheme for c in unlabeled} == {"brats2023"}
    assert all(cases[c].label is not None for c in labelled)
    assert cases["TCGA-FG-6692"].label is None and set(cases["TCGA-FG-6692"].images) == {"flair", "t1", "t1ce", "t2"}


def _kaggle_brats2020(root: Path) -> tuple[Path, Path]:
    """The Kaggle BraTS 2020 download's nesting, with uncompressed ``.nii`` files: two
    training cases (355 with its misnamed label) and one validation case without label."""
    train = root / "BraTS2020_TrainingData" / "MICCAI_BraTS2020_TrainingData"
    val = root / "BraTS2020_ValidationData" / "MICCAI_BraTS2020_ValidationData"
    write_synthetic_case(train / "BraTS20_Training_001", SMALL, seed=1, suffix=".nii")
    c355 = write_synthetic_case(train / "BraTS20_Training_355", SMALL, seed=2, suffix=".nii")
    c355.label.rename(c355.label.with_name("W39_1998.09.19_Segm.nii"))
    write_synthetic_case(val / "BraTS20_Validation_001", SMALL, seed=3, suffix=".nii", with_label=False)
    (train / "name_mapping.csv").write_text("Grade,BraTS_2020_subject_ID\nHGG,BraTS20_Training_001\n")
    return train, val


def test_kaggle_brats2020_nesting(tmp_path: Path) -> None:
    train, val = _kaggle_brats2020(tmp_path)
    cases = {c.case_id: c for c in find_cases(tmp_path)}
    assert sorted(cases) == ["BraTS20_Training_001", "BraTS20_Training_355", "BraTS20_Validation_001"]
    c001 = cases["BraTS20_Training_001"]
    assert c001.folder == train / "BraTS20_Training_001"
    assert c001.images["t1ce"].name == "BraTS20_Training_001_t1ce.nii"
    assert c001.label.name == "BraTS20_Training_001_seg.nii"
    assert cases["BraTS20_Training_355"].label == train / "BraTS20_Training_355" / "W39_1998.09.19_Segm.nii"
    assert sorted(cases["BraTS20_Training_355"].images) == ["flair", "t1", "t1ce", "t2"]
    validation = cases["BraTS20_Validation_001"]
    assert validation.label is None and validation.folder == val / "BraTS20_Validation_001"
    # Pointing at one level of the nesting, or at the case folder itself, works as well.
    assert [c.case_id for c in find_cases(val)] == ["BraTS20_Validation_001"]
    assert [c.case_id for c in find_cases(train / "BraTS20_Training_355")] == ["BraTS20_Training_355"]


def test_brats2023_synthetic_with_label_and_mixed_suffixes(tmp_path: Path) -> None:
    folder = tmp_path / "BraTS-GLI-00002-000"
    written = write_synthetic_case(folder, SMALL, naming="brats2023")
    # one modality compressed, the rest not: both endings are read
    t1n = written.images["t1"]
    t1n.rename(t1n.with_name(t1n.name[: -len(".nii.gz")] + ".nii"))
    case = case_from_folder(folder)
    assert case.label_scheme == "brats2023"
    assert case.label == folder / "BraTS-GLI-00002-000-seg.nii.gz"
    assert case.images["t1"].name == "BraTS-GLI-00002-000-t1n.nii"
    assert case.images["flair"].name == "BraTS-GLI-00002-000-t2f.nii.gz"


def test_case_from_files_any_names(tmp_path: Path) -> None:
    case = Case.from_files(
        flair=tmp_path / "patient7_FLAIR_bet.nii.gz",
        t1ce=tmp_path / "contrast.nii",
        label=tmp_path / "mask.nii.gz",
        label_scheme="brats2023",
    )
    assert case.images == {"flair": tmp_path / "patient7_FLAIR_bet.nii.gz", "t1ce": tmp_path / "contrast.nii"}
    assert case.case_id == "patient7"
    assert case.label == tmp_path / "mask.nii.gz" and case.label_scheme == "brats2023"
    explicit = Case.from_files("a.nii", "b.nii", t1="c.nii", t2="d.nii", case_id="P1")
    assert explicit.case_id == "P1" and sorted(explicit.images) == ["flair", "t1", "t1ce", "t2"]


def test_missing_flair_names_folder(tmp_path: Path) -> None:
    case = write_synthetic_case(tmp_path / "NOFLAIR", SMALL)
    case.images["flair"].unlink()
    with pytest.raises(MissingModalityError, match=r"^NOFLAIR: no FLAIR image found"):
        case_from_folder(tmp_path / "NOFLAIR")


def test_missing_t1ce_names_folder(tmp_path: Path) -> None:
    case = write_synthetic_case(tmp_path / "data" / "NOT1CE", SMALL)
    case.images["t1ce"].unlink()
    # find_cases reaches the folder through its FLAIR and reports the missing T1ce.
    with pytest.raises(MissingModalityError, match=r"^NOT1CE: no T1CE image found") as info:
        find_cases(tmp_path / "data")
    assert info.value.path == tmp_path / "data" / "NOT1CE"


def test_two_files_claim_one_modality(tmp_path: Path) -> None:
    case = write_synthetic_case(tmp_path / "DUP", SMALL)
    flair = case.images["flair"]
    (tmp_path / "DUP" / "DUP_flair.nii").write_bytes(b"")
    with pytest.raises(InvalidCaseError, match=r"two files claim flair: DUP_flair.nii and DUP_flair.nii.gz"):
        case_from_folder(flair.parent)


def test_find_cases_bad_roots(tmp_path: Path) -> None:
    with pytest.raises(InvalidCaseError, match="nowhere: does not exist"):
        find_cases(tmp_path / "nowhere")
    afile = tmp_path / "x_flair.nii.gz"
    afile.write_bytes(b"")
    with pytest.raises(InvalidCaseError, match="x_flair.nii.gz: is a file"):
        find_cases(afile)
    with pytest.raises(InvalidCaseError, match="is not a folder"):
        case_from_folder(afile)
    (tmp_path / "empty").mkdir()
    assert find_cases(tmp_path / "empty") == []


def test_find_cases_follows_symlinked_case_folders(tmp_path: Path) -> None:
    data = tmp_path / "data"
    for i in range(3):
        write_synthetic_case(data / f"SYNTHETIC_{i:03d}", SMALL, seed=i)
    subset = tmp_path / "subset"
    subset.mkdir()
    for i in (0, 2):
        os.symlink(data / f"SYNTHETIC_{i:03d}", subset / f"SYNTHETIC_{i:03d}")
    os.symlink(subset, subset / "loop")  # a link cycle must not hang the walk or repeat cases
    cases = find_cases(subset)
    assert [c.case_id for c in cases] == ["SYNTHETIC_000", "SYNTHETIC_002"]
    assert cases[0].images["flair"].resolve() == (data / "SYNTHETIC_000" / "SYNTHETIC_000_flair.nii.gz")


def test_docstring_examples() -> None:
    results = doctest.testmod(importlib.import_module("bratseg.data.layout"))
    assert results.attempted > 0 and results.failed == 0
