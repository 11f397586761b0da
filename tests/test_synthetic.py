"""Synthetic cases (bratseg.synthetic): realistic-enough contrasts, reproducible, written in
each naming scheme and file format that bratseg reads."""

from __future__ import annotations

import doctest
import importlib
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from bratseg.data.io import load_case
from bratseg.data.layout import Case, case_from_folder, find_cases
from bratseg.synthetic import synthetic_volumes, write_synthetic_case, write_synthetic_dataset

SMALL = (48, 48, 24)


def test_volumes_shapes_dtypes_labels() -> None:
    images, label = synthetic_volumes(SMALL, seed=0)
    assert sorted(images) == ["flair", "t1", "t1ce", "t2"]
    for data in images.values():
        assert data.shape == SMALL and data.dtype == np.int16
    assert label.shape == SMALL and label.dtype == np.uint8
    assert set(np.unique(label).tolist()) == {0, 1, 2, 4}
    brain = images["flair"] != 0
    assert brain.mean() > 0.2  # an ellipsoid brain in a zero background
    assert not label[~brain].any()  # tumour only inside the brain


def test_volumes_are_reproducible_per_seed() -> None:
    a_images, a_label = synthetic_volumes(SMALL, seed=1)
    b_images, b_label = synthetic_volumes(SMALL, seed=1)
    c_images, _ = synthetic_volumes(SMALL, seed=2)
    np.testing.assert_array_equal(a_label, b_label)
    for m in a_images:
        np.testing.assert_array_equal(a_images[m], b_images[m])
    assert not np.array_equal(a_images["flair"], c_images["flair"])


def test_contrasts_follow_gliomas() -> None:
    images, label = synthetic_volumes((96, 96, 48), seed=0)
    brain = (images["flair"] != 0) & (label == 0)

    def mean(modality: str, region: np.ndarray) -> float:
        return float(images[modality][region].mean())

    edema, rim, necrosis = label == 2, label == 4, label == 1
    assert mean("flair", edema) > 1.5 * mean("flair", brain)  # edema bright on FLAIR
    assert mean("t2", edema) > 1.5 * mean("t2", brain)  # and on T2
    assert mean("t1ce", rim) > 1.5 * mean("t1ce", brain)  # enhancing rim bright on T1ce
    assert mean("t1ce", necrosis) < 0.6 * mean("t1ce", brain)  # necrotic centre dark on T1ce


def test_full_size_case(synthetic_case: Case) -> None:
    assert synthetic_case.case_id == "SYNTHETIC_FULL"
    assert nib.load(str(synthetic_case.images["flair"])).shape == (240, 240, 155)
    assert case_from_folder(synthetic_case.folder) == synthetic_case


def test_default_case_is_brats2020_gz(tmp_path: Path) -> None:
    case = write_synthetic_case(tmp_path / "SYNTHETIC_001", SMALL, seed=1)
    assert sorted(p.name for p in (tmp_path / "SYNTHETIC_001").iterdir()) == [
        f"SYNTHETIC_001_{m}.nii.gz" for m in ("flair", "seg", "t1", "t1ce", "t2")
    ]
    assert case == case_from_folder(tmp_path / "SYNTHETIC_001")
    assert case.label_scheme == "brats2020"
    assert case.images["flair"].read_bytes()[:2] == b"\x1f\x8b"  # gzip
    images, label = synthetic_volumes(SMALL, seed=1)
    np.testing.assert_array_equal(np.asanyarray(nib.load(str(case.label)).dataobj), label)
    np.testing.assert_array_equal(np.asanyarray(nib.load(str(case.images["t2"])).dataobj), images["t2"])


def test_brats2023_naming_uncompressed(tmp_path: Path) -> None:
    folder = tmp_path / "BraTS-GLI-00007-000"
    case = write_synthetic_case(folder, SMALL, seed=1, naming="brats2023", suffix=".nii")
    assert sorted(p.name for p in folder.iterdir()) == [
        f"BraTS-GLI-00007-000-{m}.nii" for m in ("seg", "t1c", "t1n", "t2f", "t2w")
    ]
    assert case == case_from_folder(folder)
    assert case.label_scheme == "brats2023"
    assert case.images["flair"].read_bytes()[:2] != b"\x1f\x8b"
    seg = np.asanyarray(nib.load(str(case.label)).dataobj)
    _, label = synthetic_volumes(SMALL, seed=1)
    np.testing.assert_array_equal(seg, np.where(label == 4, 3, label))  # enhancing is 3 in BraTS 2023


def test_without_label(tmp_path: Path) -> None:
    case = write_synthetic_case(tmp_path / "BraTS20_Validation_001", SMALL, suffix=".nii", with_label=False)
    assert case.label is None
    assert not list((tmp_path / "BraTS20_Validation_001").glob("*seg*"))
    assert load_case(case).label is None


@pytest.mark.parametrize(
    ("kwargs", "message"), [({"naming": "brats2015"}, "unknown naming"), ({"suffix": ".mha"}, "suffix")]
)
def test_bad_options(tmp_path: Path, kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        write_synthetic_case(tmp_path / "X", SMALL, **kwargs)


def test_dataset(tmp_path: Path) -> None:
    cases = write_synthetic_dataset(tmp_path, 3, shape=SMALL)
    assert [c.case_id for c in cases] == ["SYNTHETIC_000", "SYNTHETIC_001", "SYNTHETIC_002"]
    assert [c.case_id for c in find_cases(tmp_path)] == [c.case_id for c in cases]
    labels = [load_case(c).label for c in cases]
    assert not np.array_equal(labels[0], labels[1])  # each case its own seed
    for lab in labels:
        assert set(np.unique(lab).tolist()) == {0, 1, 2, 3}


def test_docstring_examples() -> None:
    results = doctest.testmod(importlib.import_module("bratseg.synthetic"))
    assert results.attempted > 0 and results.failed == 0
