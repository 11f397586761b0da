"""Label schemes and evaluation regions (bratseg.data.labels), on synthetic arrays and on the
real BraTS 2018 and BraTS 2023 label maps."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from bratseg.data.labels import (
    ED,
    ET,
    NCR,
    REGIONS,
    labels_to_regions,
    regions_to_labels,
    to_brats2020,
    to_internal,
)


def test_to_internal_brats2020() -> None:
    seg = np.array([[0, 1], [2, 4]], dtype=np.int16)
    out = to_internal(seg, "brats2020")
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(out, [[0, NCR], [ED, ET]])


def test_to_internal_brats2023() -> None:
    seg = np.array([0, 1, 2, 3], dtype=np.uint16)
    np.testing.assert_array_equal(to_internal(seg, "brats2023"), [0, NCR, ED, ET])


def test_float_labels_within_rounding_are_accepted() -> None:
    seg = np.array([0.0, 0.9999999, 2.0000001, 4.0], dtype=np.float32)
    np.testing.assert_array_equal(to_internal(seg, "brats2020"), [0, 1, 2, 3])


@pytest.mark.parametrize(
    ("values", "scheme", "message"),
    [
        ([0, 1, 3], "brats2020", r"label values \[3\] are not in the brats2020 scheme \[0, 1, 2, 4\]"),
        ([0, 4, 2], "brats2023", r"label values \[4\] are not in the brats2023 scheme \[0, 1, 2, 3\]"),
        ([0, -1, 5, 300], "brats2020", r"label values \[-1, 5, 300\] are not in the brats2020 scheme"),
        ([0.0, 0.5, 2.0], "brats2020", r"label values \[0.5\] are not integers"),
    ],
)
def test_values_outside_scheme_are_listed(values: list[float], scheme: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        to_internal(np.array(values), scheme)


def test_to_brats2020_inverts_both_schemes() -> None:
    internal = np.arange(4, dtype=np.uint8)
    np.testing.assert_array_equal(to_brats2020(internal), [0, 1, 2, 4])
    for scheme, on_disk in (("brats2020", [0, 1, 2, 4]), ("brats2023", [0, 1, 2, 3])):
        np.testing.assert_array_equal(to_internal(np.array(on_disk), scheme), internal)
    assert to_brats2020(internal).dtype == np.uint8


def test_regions_are_nested_brats_regions() -> None:
    labels = np.array([0, NCR, ED, ET], dtype=np.uint8)
    regions = labels_to_regions(labels)
    assert regions.shape == (3, 4) and regions.dtype == bool
    # WT = NCR+ED+ET, TC = NCR+ET, ET = ET
    np.testing.assert_array_equal(regions, [[0, 1, 1, 1], [0, 1, 0, 1], [0, 0, 0, 1]])
    assert list(REGIONS) == ["WT", "TC", "ET"]


def test_regions_round_trip_and_inconsistent_masks() -> None:
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 4, size=(16, 16, 8)).astype(np.uint8)
    np.testing.assert_array_equal(regions_to_labels(labels_to_regions(labels)), labels)
    # Not nested (ET outside TC and WT, TC outside WT): ET wins, then TC gives NCR.
    wt = np.array([1, 0, 0, 1, 0], dtype=bool)
    tc = np.array([0, 1, 0, 1, 0], dtype=bool)
    et = np.array([0, 0, 1, 0, 0], dtype=bool)
    np.testing.assert_array_equal(regions_to_labels(np.stack([wt, tc, et])), [ED, NCR, ET, NCR, 0])


def test_real_brats2018_label_round_trip(brats18_case: Path) -> None:
    raw = np.asanyarray(nib.load(str(brats18_case / f"{brats18_case.name}_seg.nii.gz")).dataobj)
    internal = to_internal(raw, "brats2020")
    np.testing.assert_array_equal(to_brats2020(internal), raw)
    assert int((internal == ET).sum()) == int((raw == 4).sum()) > 0


def test_real_brats2023_label_enhancing_3(data_dir: Path) -> None:
    path = data_dir / "metrics" / "BraTS-MET-00217-000" / "BraTS-MET-00217-000-seg.nii.gz"
    if not path.exists():
        pytest.skip(f"BraTS 2023 label map not found at {path}")
    raw = np.asanyarray(nib.load(str(path)).dataobj)
    assert 3 in np.unique(raw)
    internal = to_internal(raw, "brats2023")
    np.testing.assert_array_equal(internal, raw)  # 2023's values are the internal ones
    written = to_brats2020(internal)
    np.testing.assert_array_equal(written == 4, raw == 3)
    with pytest.raises(ValueError, match="not in the brats2020 scheme"):
        to_internal(raw, "brats2020")  # read with the wrong scheme, its 3s are refused
