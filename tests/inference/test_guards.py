"""The input and result guards (bratseg.inference.guards) on real cases transformed by the test:
each untrustworthy input is refused with a one-line reason or handled, and no real case is
refused or flagged (no false alarms).

The transformations are in ``guard_inputs.py``; the shipped model's answers on them before the
guards existed (tumour volumes, Dice) are in ``bench/guard_probes.py`` and the module docs.
"""

from __future__ import annotations

import doctest
import importlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from guard_inputs import (
    mirrored,
    native_in_brats_space,
    noisy_air,
    offset,
    only,
    permuted,
    refused_by_guards,
    replaced,
    resampled,
    skull_on,
    with_images,
    write_case,
    zscored_whole_volume,
)
from scipy import ndimage

from bratseg.data.io import CaseVolumes, load_case
from bratseg.data.labels import to_brats2020
from bratseg.data.layout import case_from_folder
from bratseg.errors import (
    InconsistentModalitiesError,
    InvalidCaseError,
    UntrustworthyInputError,
    UntrustworthyResultError,
)
from bratseg.inference import guards
from bratseg.inference.predictor import Prediction
from bratseg.preprocessing.config import PreprocessingConfig
from bratseg.preprocessing.normalize import brain_mask
from bratseg.synthetic import write_synthetic_case

CONFIG = PreprocessingConfig()  # the shipped model's: 160 x 192 window, 2-D


@pytest.fixture(scope="module")
def real(brats18_case: Path) -> CaseVolumes:
    """Brats18_2013_11_1, a validation case of the shipped model, all four modalities."""
    return load_case(case_from_folder(brats18_case))


def _refused(volumes: CaseVolumes, *fragments: str, error: type[InvalidCaseError] = UntrustworthyInputError) -> str:
    return refused_by_guards(volumes, error, *fragments)


# --- no false alarms ---------------------------------------------------------------------------


@pytest.mark.slow
def test_every_real_case_passes_without_refusal_or_warning(data_dir: Path) -> None:
    """The 27 labelled BraTS cases, TCGA-DU-7294 (BraTS Toolkit) and the two BraTS 2023 cases
    pass the input checks with no warning, and their expert label maps pass the result checks."""
    folders = [
        *sorted((data_dir / "brats18").iterdir()),
        *sorted((data_dir / "brats-extra").iterdir()),
        data_dir / "tcga" / "TCGA-DU-7294",
        *sorted((data_dir / "unlabeled").iterdir()),
    ]
    assert len(folders) == 30

    def check(folder: Path) -> list[str]:
        volumes = load_case(case_from_folder(folder))
        try:
            warnings = guards.check_input(volumes, CONFIG)
            if volumes.label is not None:
                expert = Prediction(to_brats2020(volumes.label), volumes, 0.0)
                warnings += guards.check_result(expert)
        except InvalidCaseError as exc:
            warnings = [str(exc)]
        return warnings

    # Two at a time: gzip and most NumPy work release the GIL, and the checks are read-only.
    with ThreadPoolExecutor(2) as pool:
        flagged = {f.name: w for f, w in zip(folders, pool.map(check, folders), strict=True) if w}
    assert flagged == {}


def test_small_synthetic_cases_pass_with_at_most_a_small_brain_warning(tmp_path: Path) -> None:
    """The synthetic cases the demo and the tests use are no BraTS brains, but nothing about
    them is untrustworthy: a brain under 800 cm3 is only flagged."""
    small = load_case(write_synthetic_case(tmp_path / "SYNTHETIC_S", shape=(64, 64, 24)))
    warnings = guards.check_input(small, CONFIG)
    assert len(warnings) == 1 and "the brain mask is only 24 cm3" in warnings[0]
    assert guards.brats_space_problems(small) == []


# --- background and skull: handled when constant, refused when not removed ----------------------


@pytest.mark.parametrize("transform", ["offset", "zscored"])
def test_constant_background_passes(real: CaseVolumes, transform: str) -> None:
    moved = offset(real, 100.0) if transform == "offset" else zscored_whole_volume(real)
    assert guards.check_input(moved, CONFIG) == []


def test_noisy_air_is_refused(real: CaseVolumes) -> None:
    # Before: brain mask = the whole volume, 1529 cm3 of "tumour" (Brats18_TCIA01_201_1).
    _refused(
        noisy_air(only(real, "flair", "t1ce")),
        "not BraTS-space input",
        "no uniform background in FLAIR, T1CE (the commonest border value fills 0% of the border at most)",
        "the brain mask is 8928 cm3",
        "--preprocess native",
    )


def test_skull_and_scalp_are_refused(real: CaseVolumes) -> None:
    # Before: Brats18_TCIA01_201_1 with these layers gave 250 cm3 of tumour against 155 (Dice 0.75).
    message = _refused(skull_on(real), "not BraTS-space input", "more than any skull-stripped brain", "skull")
    assert "the outer 3 mm of the brain mask is bright on T1" in message


def test_real_skull_on_scan_is_refused_and_its_skull_stripped_version_passes(data_dir: Path) -> None:
    """TCGA-FG-6692 as scanned (skull, scalp and noisy air) pulled into BraTS space through the
    reference pipeline's registration; the reference brain mask applied to it passes."""
    native = data_dir / "native" / "TCGA-FG-6692"
    if not native.is_dir():
        pytest.skip(f"{native} not found")
    head = native_in_brats_space(native)
    _refused(head, "no uniform background", "the brain mask is", "--preprocess native")
    import nibabel as nib

    reference = np.asanyarray(nib.load(str(native / "reference" / "brats_space_brain_mask.nii.gz")).dataobj) > 0
    stripped = with_images(head, {m: np.where(reference, d, 0).astype(np.float32) for m, d in head.images.items()})
    assert guards.check_input(stripped, CONFIG) == []


# --- grid: voxel size, window, orientation ------------------------------------------------------


def test_two_mm_voxels_are_refused(real: CaseVolumes) -> None:
    # Before: whole-tumour Dice 0.41 on this case at 2 mm (0.87 at 1 mm), 0.68 on TCIA10_637.
    _refused(resampled(real, (2.0, 2.0, 2.0)), "voxel size 2 x 2 x 2 mm", "--preprocess native")


def test_half_mm_in_plane_brain_is_larger_than_the_window(real: CaseVolumes) -> None:
    """480 x 480 voxels of 0.5 mm (common clinically): before, the fixed 160 x 192 window left
    most of the brain unsegmented without a word."""
    slab = with_images(real, {m: np.ascontiguousarray(real.images[m][:, :, 60:100]) for m in ("flair", "t1ce")})
    fine = resampled(slab, (0.5, 0.5, 1.0))
    message = _refused(fine, "voxel size 0.5 x 0.5 x 1 mm", "fits the model's 160 x 192 voxel window")
    assert "the brain spans" in message


@pytest.mark.parametrize(
    ("voxel_mm", "refused"),
    [((1.0, 1.0, 1.0), False), ((1.08, 0.93, 1.0), False), ((1.0, 1.0, 3.0), False), ((1.2, 1.2, 1.0), True)],
)
def test_voxel_size_limits(tmp_path: Path, voxel_mm: tuple[float, float, float], refused: bool) -> None:
    case = load_case(write_synthetic_case(tmp_path / "SYNTHETIC_V", shape=(64, 64, 24)))
    case.affine = case.affine @ np.diag([*voxel_mm, 1.0])
    problems = guards.brats_space_problems(case)
    assert bool(problems) is refused and all("voxel size" in p for p in problems)
    if not refused:  # accepted off 1 mm in-plane: flagged
        off_1mm = any("the model was trained at 1 mm" in w for w in guards.check_input(case, CONFIG))
        assert off_1mm is (voxel_mm[:2] != (1.0, 1.0))


def test_sagittal_slices_are_refused(real: CaseVolumes) -> None:
    _refused(permuted(only(real, "flair", "t1ce"), (1, 2, 0)), "the slices are not axial", "--preprocess native")


def test_flips_in_plane_pass(real: CaseVolumes) -> None:
    """The model was trained with left-right and front-back flips: an array stored flipped
    (the SRI24 atlas's y order) with an affine that says so is as good as BraTS's."""
    images = {m: np.ascontiguousarray(d[:, ::-1]) for m, d in only(real, "flair", "t1ce").images.items()}
    affine = real.affine.copy()
    affine[:, 1] = -real.affine[:, 1]
    affine[:3, 3] = real.affine[:3, 3] + real.affine[:3, 1] * (real.shape[1] - 1)
    assert guards.check_input(with_images(real, images, affine), CONFIG) == []


# --- modalities that contradict each other ------------------------------------------------------


@pytest.mark.parametrize("modality", ["flair", "t1ce", "t2"])
def test_mirrored_modality_is_refused_and_named(real: CaseVolumes, modality: str) -> None:
    # Before: T1ce mirrored on TCIA01_201 gave TC Dice 0.10, ET 0.05; FLAIR mirrored WT 0.33.
    others = ", ".join(m.upper() for m in real.images if m != modality)
    _refused(
        mirrored(real, modality),
        f"{modality.upper()}: mirrored left-right against {others}",
        error=InconsistentModalitiesError,
    )


def test_mirrored_pair_names_both(real: CaseVolumes) -> None:
    _refused(
        mirrored(only(real, "flair", "t1ce"), "t1ce"),
        "FLAIR and T1CE are mirrored left-right against each other",
        error=InconsistentModalitiesError,
    )


def test_t1_given_as_t1ce_is_refused(real: CaseVolumes) -> None:
    # Before: enhancing Dice 0.03, tumour core 0.03 on TCIA01_201.
    _refused(replaced(real, "t1ce", "t1"), "T1CE and T1 are the same image", error=InconsistentModalitiesError)
    swapped = with_images(real, {**real.images, "t1": real.images["t1ce"], "t1ce": real.images["t1"]})
    _refused(
        swapped,
        "T1CE: darker than T1 where contrast should enhance",
        "T1 and T1ce swapped?",
        error=InconsistentModalitiesError,
    )


def test_notes_from_loading_become_warnings(real: CaseVolumes) -> None:
    noted = with_images(real, dict(real.images))
    noted.notes = ["X_t1ce.nii.gz: stored in another voxel order (flipped along x) with a matching affine; ..."]
    assert guards.check_input(noted, CONFIG) == noted.notes


def test_refusal_names_the_file(tmp_path: Path, real: CaseVolumes) -> None:
    """Loaded from files, the reason names the file to fix."""
    write_case(mirrored(only(real, "flair", "t1ce", "t1"), "t1"), tmp_path / "MIRRORED_1", dtype=np.int16)
    with pytest.raises(InconsistentModalitiesError, match=r"^MIRRORED_1_t1.nii.gz: mirrored left-right against "):
        guards.check_input(load_case(case_from_folder(tmp_path / "MIRRORED_1")), CONFIG)


# --- results ----------------------------------------------------------------------------------


def _prediction(real: CaseVolumes, labels: np.ndarray) -> Prediction:
    return Prediction(labels.astype(np.uint8), real, 0.0)


def test_tumour_filling_the_brain_is_flagged_or_refused(real: CaseVolumes) -> None:
    """Flagged by default (an untrained model under test still returns its map); refused when
    strict."""
    brain = brain_mask(real.images)
    everything = _prediction(real, np.where(brain, 2, 0))
    warnings = guards.check_result(everything)
    assert len(warnings) == 1 and "the predicted tumour is 1523 cm3, 100% of the brain: not plausible" in warnings[0]
    with pytest.raises(UntrustworthyResultError, match=r"the predicted tumour is 1523 cm3, 100% of the brain"):
        guards.check_result(everything, strict=True)


def test_large_tumour_and_enhancing_rim_are_flagged(real: CaseVolumes) -> None:
    brain = brain_mask(real.images)
    left_half = brain.copy()
    left_half[120:] = False  # about 40 % of the brain
    warnings = guards.check_result(_prediction(real, np.where(left_half, 2, 0)))
    assert len(warnings) == 1 and "of the brain (expert tumours in BraTS: at most 17 %)" in warnings[0]
    # Enhancing "tumour" painted along the brain's outline, as the model did on skull.
    outline = brain & ~ndimage.binary_erosion(brain, iterations=2)
    warnings = guards.check_result(_prediction(real, np.where(outline, 4, 0)))
    assert any("of the enhancing tumour lies in the outer 3 mm of the brain mask" in w for w in warnings)


@pytest.mark.parametrize("module", ["bratseg.inference.guards", "bratseg.inference.case_signals"])
def test_docstring_examples(module: str) -> None:
    results = doctest.testmod(importlib.import_module(module))
    assert results.attempted > 0 and results.failed == 0
