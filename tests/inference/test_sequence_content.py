"""Inputs that look like scans but hold nothing the model can answer right on (issue: never
silently wrong, round 2), on real cases transformed by the test (``guard_inputs.py``): a
sequence with no anatomy, a label map or mask given as an image, inverted contrast, sequences
of two patients in one case, an extreme header scale. Each is refused with one line naming the
file, or answered as the properly scaled image is; the real cases themselves pass
(``test_guards.py::test_every_real_case_passes_without_refusal_or_warning`` runs every check
on all 30 real BraTS-space cases, and the TCGA-FG-6692 test there on a real skull-stripped
case from another pipeline).

The shipped model's answers on these inputs before the checks (the issue's figures): a
constant FLAIR 4.6-7.7 cm3 of "tumour", an inverted FLAIR 16-17 cm3 (Dice 0), the label map as
T1ce 49-143 cm3, two patients 131 cm3 (Dice 0.28), a FLAIR with scl_slope 1e-30 Dice 0.
"""

from __future__ import annotations

import doctest
import importlib
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from guard_inputs import (
    constant_inside,
    flipped_inside,
    grey_flipped,
    label_as,
    mask_as,
    negated,
    only,
    refused_by_guards,
    save_with_scaling,
    scaled,
    two_patients,
    with_images,
    write_case,
)

from bratseg.data.io import CaseVolumes, load_case
from bratseg.data.layout import case_from_folder
from bratseg.errors import ImplausibleScanError, InconsistentModalitiesError, InvalidCaseError
from bratseg.inference import guards
from bratseg.preprocessing.config import PreprocessingConfig

CONFIG = PreprocessingConfig()


@pytest.fixture(scope="module")
def real(brats18_case: Path) -> CaseVolumes:
    """Brats18_2013_11_1, all four modalities and the expert labels."""
    return load_case(case_from_folder(brats18_case))


def _case(data_dir: Path, name: str) -> CaseVolumes:
    folder = next(data_dir.glob(f"*/{name}"), None)
    if folder is None:
        pytest.skip(f"{name} not found in {data_dir}")
    return load_case(case_from_folder(folder), with_label=False)


@pytest.fixture(scope="module")
def other(data_dir: Path) -> CaseVolumes:
    """Another patient in BraTS space (a low-grade glioma)."""
    return _case(data_dir, "Brats18_TCIA10_637_1")


@pytest.fixture(scope="module")
def metastasis(data_dir: Path) -> CaseVolumes:
    """The BraTS 2023 metastasis case: its T1 and T2 line up weakly."""
    return _case(data_dir, "BraTS-MET-00110-000")


_refused = refused_by_guards


# --- no anatomy, label maps, masks --------------------------------------------------------------


def test_constant_sequence_is_refused(real: CaseVolumes) -> None:
    _refused(constant_inside(real, "flair"), ImplausibleScanError, "FLAIR: one constant value (", "no anatomy")


def test_label_map_and_mask_given_as_images_are_refused(real: CaseVolumes) -> None:
    _refused(
        label_as(real, "t1ce"),
        ImplausibleScanError,
        "T1CE: only 3 distinct intensities inside the brain (1, 2, 4): a label map or mask, not a scan",
    )
    _refused(mask_as(only(real, "flair", "t1ce", "t2"), "t2"), ImplausibleScanError, "T2: one constant value (1)")


def test_one_value_over_most_of_the_brain_is_refused(real: CaseVolumes) -> None:
    """A constant FLAIR with a small painted region: no anatomy there either."""
    painted = constant_inside(real, "flair")
    flair = painted.images["flair"].copy()
    region = (slice(90, 130), slice(90, 130), slice(60, 100))  # 64 cm3 of varied values in 1500 cm3 of one
    flair[region] += np.random.default_rng(0).integers(1, 300, size=(40, 40, 40)).astype(np.float32)
    _refused(
        with_images(painted, {**painted.images, "flair": flair}),
        ImplausibleScanError,
        "FLAIR: one value (",
        "of the brain (scans: at most 5 %): no anatomy there",
    )


def test_tiny_intensities_in_memory_are_refused(real: CaseVolumes) -> None:
    """Float data at 1e-30 of its scale (not through a header, which the reader handles)."""
    _refused(scaled(real, "flair", 1e-30), ImplausibleScanError, "FLAIR: intensities vary by only", "normalise")


# --- inverted contrast -------------------------------------------------------------------------


@pytest.mark.parametrize("modality", ["flair", "t1ce", "t2"])
def test_negated_sequence_is_refused(real: CaseVolumes, modality: str) -> None:
    _refused(
        negated(real, modality),
        ImplausibleScanError,
        f"{modality.upper()}: darker than its background (0) in 100% of the brain: inverted contrast",
    )


def test_grey_scale_flipped_over_the_image_is_refused(real: CaseVolumes) -> None:
    _refused(grey_flipped(real, "flair"), ImplausibleScanError, "FLAIR: darker than its background", "inverted")


@pytest.mark.parametrize("modality", ["flair", "t1"])
def test_grey_scale_flipped_inside_the_brain_is_refused(real: CaseVolumes, modality: str) -> None:
    """The background left at 0: the brain outline (dark fluid) turns bright. On T1 the
    older rim check (skull) sees it first: refused either way."""
    error = ImplausibleScanError if modality == "flair" else InvalidCaseError
    _refused(flipped_inside(only(real, "flair", "t1ce", "t1"), modality), error)
    if modality == "flair":
        _refused(flipped_inside(real, "flair"), error, "FLAIR: its brain outline is brighter than", "inverted")


# --- header scaling ------------------------------------------------------------------------------


def _with_flair_scaling(real_folder: Path, target: Path, slope: float, inter: float = 0.0) -> Path:
    """The case folder with its FLAIR rewritten as the same int16 voxels and another header
    scaling."""
    target.mkdir()
    for path in real_folder.iterdir():
        if path.name.endswith(("_flair.nii.gz", "_t1ce.nii.gz")):
            (target / path.name).symlink_to(path)
    flair = next(target.glob("*_flair.nii.gz"))
    img = nib.load(str(flair))
    raw = np.asanyarray(img.dataobj.get_unscaled())
    flair.unlink()
    save_with_scaling(raw, img.affine, flair, slope, inter)
    proxy = nib.load(str(flair)).dataobj  # nibabel moves the header's scaling onto the data proxy
    assert np.isclose(proxy.slope, slope, rtol=1e-6) and np.isclose(proxy.inter, inter)
    return target


def test_extreme_header_scale_is_answered_as_the_plain_scan(brats18_case: Path, tmp_path: Path) -> None:
    """A FLAIR with scl_slope 1e-30 (and an intercept) gives the network the very input the
    plain FLAIR gives, so the very answer; a negative slope is caught as inverted contrast,
    naming the file."""
    import bratseg

    segmenter = bratseg.from_pretrained()
    plain = segmenter.prepare(_with_flair_scaling(brats18_case, tmp_path / "PLAIN", 1.0))
    tiny = segmenter.prepare(_with_flair_scaling(brats18_case, tmp_path / "TINY", 1e-30, 7.0))
    assert tiny.warnings == plain.warnings == []
    assert np.array_equal(tiny.slice_index, plain.slice_index)
    assert np.array_equal(tiny.slices.numpy(), plain.slices.numpy())
    inverted = _with_flair_scaling(brats18_case, tmp_path / "NEGATIVE", -1e-30)
    with pytest.raises(ImplausibleScanError, match=r"^Brats18_2013_11_1_flair\.nii\.gz: darker than its background"):
        segmenter.prepare(inverted)


# --- two patients ------------------------------------------------------------------------------


def test_sequences_of_two_patients_are_refused(real: CaseVolumes, other: CaseVolumes) -> None:
    """FLAIR and T1 of one patient with T1ce and T2 of another (in BraTS space, both on the
    atlas), and FLAIR with another patient's T1ce alone."""
    _refused(
        two_patients(real, other, ("t1ce", "t2")),
        InconsistentModalitiesError,
        "T1CE: with T2, does not come from the same head as FLAIR and T1: their brain outlines",
        "sequences of two patients?",
    )
    _refused(
        only(two_patients(real, other, ("t1ce",)), "flair", "t1ce"),
        InconsistentModalitiesError,
        "T1CE: does not come from the same head as FLAIR",
    )


def test_two_patients_whose_outlines_match_better_flipped_are_not_called_mirrored(data_dir: Path) -> None:
    """Brats18_CBICA_AMH_1 with Brats18_CBICA_AOZ_1's T1ce: their outlines match better with one
    flipped (4 of the 60 real pairings do), yet flipping it back does not make one head."""
    first, second = _case(data_dir, "Brats18_CBICA_AMH_1"), _case(data_dir, "Brats18_CBICA_AOZ_1")
    mixed = only(two_patients(first, second, ("t1ce",)), "flair", "t1ce")
    _refused(mixed, InconsistentModalitiesError, "T1CE: does not come from the same head as FLAIR")


def test_refusals_name_the_file(tmp_path: Path, real: CaseVolumes, other: CaseVolumes) -> None:
    write_case(label_as(only(real, "flair", "t1ce"), "t1ce"), tmp_path / "LABEL_1", dtype=np.int16)
    with pytest.raises(ImplausibleScanError, match=r"^LABEL_1_t1ce\.nii\.gz: only 3 distinct intensities"):
        guards.check_input(load_case(case_from_folder(tmp_path / "LABEL_1")), CONFIG)
    write_case(only(two_patients(real, other, ("t1ce",)), "flair", "t1ce"), tmp_path / "MIXED_1", dtype=np.int16)
    with pytest.raises(
        InconsistentModalitiesError, match=r"^MIXED_1_t1ce\.nii\.gz: does not come from the same head as MIXED_1_flair"
    ):
        guards.check_input(load_case(case_from_folder(tmp_path / "MIXED_1")), CONFIG)


def test_one_patient_with_a_weak_pair_is_one_head(metastasis: CaseVolumes, real: CaseVolumes) -> None:
    """The BraTS 2023 metastasis case: its T1 and T2 line up weakly (no outline or intensity
    gain of their own), yet both line up with its FLAIR: one head, no refusal."""
    from bratseg.inference.case_signals import CaseSignals
    from bratseg.inference.one_head import head_groups, pair_alignments

    signals = CaseSignals(metastasis.images, metastasis.affine)
    pairs = {(p.first, p.second): p for p in pair_alignments(signals)}
    assert len(pairs) == 6 and not pairs[("t1", "t2")].one_head
    assert all(pairs[("flair", m)].one_head for m in ("t1ce", "t1", "t2"))
    assert head_groups(signals) == [["flair", "t1ce", "t1", "t2"]]
    assert guards.check_input(metastasis, CONFIG) == []
    # With another patient's FLAIR and T1 its T1ce and T2 may split too: refused, each group named.
    message = _refused(two_patients(real, metastasis, ("t1ce", "t2")), InconsistentModalitiesError)
    assert "sequences of two patients?" in message or "sequences of several patients?" in message


@pytest.mark.parametrize("module", ["bratseg.inference.sequence_content", "bratseg.inference.one_head"])
def test_docstring_examples(module: str) -> None:
    results = doctest.testmod(importlib.import_module(module))
    assert results.attempted > 0 and results.failed == 0
