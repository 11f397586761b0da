"""Preprocessing: z-score normalisation inside the brain, the brain-centred crop, resizing,
the slice policy of the cache and the shared preparation pipeline."""

from __future__ import annotations

import doctest
import importlib
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from bratseg.data.io import CaseVolumes, load_case
from bratseg.data.layout import case_from_folder
from bratseg.preprocessing.cache import build_cache, read_manifest
from bratseg.preprocessing.config import PreprocessingConfig
from bratseg.preprocessing.crop import brain_window, crop_xy, resize_slices, uncrop_xy
from bratseg.preprocessing.normalize import background_value, brain_mask, zscore
from bratseg.preprocessing.pipeline import prepare_case
from bratseg.preprocessing.slices import select_slices
from bratseg.synthetic import write_synthetic_case

# --- normalisation -------------------------------------------------------------------------


def test_brain_mask_is_union_of_nonzero_voxels() -> None:
    a = np.array([0, 1, 0, 0, -2], dtype=np.float32)
    b = np.array([0, 0, 3, 0, 0], dtype=np.float32)
    np.testing.assert_array_equal(brain_mask({"flair": a, "t1ce": b}), [False, True, True, False, True])


def test_zscore_real_int16_and_already_normalised_float(brats18_case: Path) -> None:
    raw = np.asanyarray(nib.load(str(brats18_case / f"{brats18_case.name}_flair.nii.gz")).dataobj)
    assert raw.dtype == np.int16  # as stored on disk
    raw = raw[:, :, 40:110]  # a slab through the tumour keeps the test quick
    mask = raw != 0
    z = zscore(raw, mask)
    assert z.dtype == np.float32 and z.shape == raw.shape
    assert not z[~mask].any()
    inside = z[mask].astype(np.float64)
    assert abs(inside.mean()) < 1e-4 and abs(inside.std() - 1) < 1e-4
    # Statistics come from the brain only: the background's zeros would pull the mean down.
    assert abs(z[mask].mean() - (raw[mask].mean() - raw.mean()) / raw[mask].std()) > 0.1
    # Inputs that were already normalised (z-scored, or scaled to [0, 1] as some datasets
    # ship) give the same result up to float precision.
    for already in (z, (raw / raw.max()).astype(np.float32), raw.astype(np.float64) * 0.01 + 3 * mask):
        np.testing.assert_allclose(zscore(already, mask), z, atol=2e-4)


def test_zscore_constant_and_empty_inputs() -> None:
    x = np.full((4, 4), 7, dtype=np.int16)
    mask = np.zeros((4, 4), dtype=bool)
    mask[1:3, 1:3] = True
    out = zscore(x, mask)
    assert np.isfinite(out).all() and not out.any()  # zero variance: no division by zero
    assert not zscore(x, np.zeros_like(mask)).any()


def test_pipeline_same_on_raw_and_normalised_input(tmp_path: Path) -> None:
    raw = load_case(write_synthetic_case(tmp_path / "S", (64, 64, 24), seed=2))
    mask = brain_mask(raw.images)
    normalised = CaseVolumes(
        raw.case_id, {m: zscore(d, mask) for m, d in raw.images.items()}, raw.affine, raw.header, raw.label
    )
    config = PreprocessingConfig(crop_size=(48, 56))
    a, b = prepare_case(raw, config), prepare_case(normalised, config)
    assert a.start == b.start
    np.testing.assert_array_equal(a.brain, b.brain)
    np.testing.assert_allclose(a.image, b.image, atol=2e-4)


# --- crop -------------------------------------------------------------------------------------


def test_brain_window_centres_the_brain() -> None:
    mask = np.zeros((60, 70, 4), dtype=bool)
    mask[10:30, 5:45, 1] = True  # x 10..29, y 5..44
    assert brain_window(mask, (20, 30)) == (10, 10)
    assert brain_window(mask, (40, 60)) == (0, -5)  # centred even where that runs off the volume
    assert brain_window(mask, (80, 100)) == (-20, -25)  # larger than the volume: negative start
    assert brain_window(np.zeros((60, 70, 4), dtype=bool), (20, 30)) == (20, 20)  # no brain: centre


@pytest.mark.parametrize(
    ("start", "size"),
    [
        ((5, 7), (20, 30)),  # inside the volume
        ((-6, 35), (20, 30)),  # leaves the volume below in x and above in y
        ((-5, -3), (50, 60)),  # larger than the volume on every side
        ((30, -10), (20, 20)),  # partly outside in both axes
    ],
)
def test_crop_uncrop_round_trip(start: tuple[int, int], size: tuple[int, int]) -> None:
    rng = np.random.default_rng(0)
    data = rng.normal(size=(40, 50, 3)).astype(np.float32) + 10  # no zeros in the data
    cropped = crop_xy(data, start, size)
    assert cropped.shape == (*size, 3) and cropped.dtype == data.dtype
    back = uncrop_xy(cropped, start, data.shape)
    assert back.shape == data.shape
    # Inside the window (clipped to the volume) every voxel comes back; outside it is 0.
    inside = np.zeros(data.shape[:2], dtype=bool)
    inside[max(start[0], 0) : start[0] + size[0], max(start[1], 0) : start[1] + size[1]] = True
    np.testing.assert_array_equal(back[inside], data[inside])
    assert not back[~inside].any()
    # The part of the window outside the volume is zero padding.
    assert (cropped != 0).sum() == inside.sum() * 3


def test_crop_keeps_integer_and_bool_dtypes() -> None:
    labels = np.arange(24, dtype=np.uint8).reshape(4, 6, 1)
    cropped = crop_xy(labels, (-1, 2), (3, 5))
    assert cropped.dtype == np.uint8
    np.testing.assert_array_equal(cropped[1:, :4, 0], labels[:2, 2:, 0])
    assert not cropped[0].any() and not cropped[:, 4:].any()
    assert crop_xy(labels > 5, (0, 0), (2, 2)).dtype == bool


@pytest.fixture(scope="module")
def real_volumes(brats18_case: Path) -> CaseVolumes:
    return load_case(case_from_folder(brats18_case))


def test_real_case_crop_keeps_all_brain_and_label(real_volumes: CaseVolumes) -> None:
    vols = real_volumes
    prep = prepare_case(vols, PreprocessingConfig())  # 160 x 192 window
    mask = brain_mask(vols.images)
    assert prep.image.shape == (4, 160, 192, 155) and prep.image.dtype == np.float32
    assert prep.full_shape == (240, 240, 155)
    assert prep.brain.sum() == mask.sum()  # the whole brain fits the window
    np.testing.assert_array_equal(uncrop_xy(prep.label, prep.start, vols.shape), vols.label)
    np.testing.assert_array_equal(uncrop_xy(prep.brain, prep.start, vols.shape), mask)
    flair = uncrop_xy(prep.image[0], prep.start, vols.shape)
    np.testing.assert_allclose(flair, zscore(vols.images["flair"], mask), atol=1e-6)


# --- the background: BraTS's zeros, or any constant ---------------------------------------


def test_brats_input_is_prepared_bit_identically_to_the_nonzero_rule(real_volumes: CaseVolumes) -> None:
    """The slice cache and inference share prepare_case: on BraTS data (a border of zeros) the
    background rule must give exactly the mask "non-zero in any modality" it always used, so
    caches and predictions made before stay valid bit for bit."""
    vols = real_volumes
    nonzero = np.zeros(vols.shape, dtype=bool)
    for data in vols.images.values():
        nonzero |= data != 0
    np.testing.assert_array_equal(brain_mask(vols.images), nonzero)
    config = PreprocessingConfig()
    prep = prepare_case(vols, config)
    start = brain_window(nonzero, config.crop_size)
    assert prep.start == start
    expected = np.stack([crop_xy(zscore(vols.images[m], nonzero), start, config.crop_size) for m in config.modalities])
    np.testing.assert_array_equal(prep.image, expected)
    np.testing.assert_array_equal(prep.brain, crop_xy(nonzero, start, config.crop_size))


@pytest.fixture(scope="module")
def real_slab(real_volumes: CaseVolumes) -> tuple[CaseVolumes, object]:
    """Slices 40-109 of the real case (through the tumour; quicker than the whole) prepared."""
    images = {m: np.ascontiguousarray(d[:, :, 40:110]) for m, d in real_volumes.images.items()}
    slab = CaseVolumes(real_volumes.case_id, images, real_volumes.affine, real_volumes.header)
    return slab, prepare_case(slab, PreprocessingConfig())


@pytest.mark.parametrize("transform", ["offset +100", "offset -3.5", "z-scored over the whole volume"])
def test_constant_background_is_background(real_slab, transform: str) -> None:
    """Already-normalised data or a header intercept move the background off 0: the mask and
    the network's input stay those of the BraTS original (before, the whole volume was
    "brain" and the shipped model called 1533 cm3 of Brats18_TCIA01_201_1 tumour)."""
    vols, a = real_slab
    if transform.startswith("offset"):
        shift = np.float32(transform.split()[1])
        images = {m: d + shift for m, d in vols.images.items()}
    else:
        images = {m: ((d - d.mean()) / d.std()).astype(np.float32) for m, d in vols.images.items()}
    assert not any(np.any(d == 0) for d in images.values())
    moved = CaseVolumes(vols.case_id, images, vols.affine, vols.header)
    b = prepare_case(moved, PreprocessingConfig())
    np.testing.assert_array_equal(b.brain, a.brain)
    assert a.start == b.start
    np.testing.assert_allclose(b.image, a.image, atol=1e-4)


def test_header_intercept_background_is_background(real_volumes: CaseVolumes, brats18_case: Path, tmp_path: Path):
    flair = next(brats18_case.glob("*_flair.nii.gz"))
    shifted = tmp_path / flair.name.replace(".nii.gz", ".nii")
    nib.save(nib.load(str(flair)), str(shifted))
    # Stored values unchanged, scl_slope 1 and scl_inter 100 (bytes 112-119 of a NIfTI-1
    # header; nibabel would rescale the data instead): every voxel reads 100 more.
    blob = bytearray(shifted.read_bytes())
    blob[112:120] = np.array([1.0, 100.0], dtype="<f4").tobytes()
    shifted.write_bytes(bytes(blob))
    (tmp_path / flair.name.replace("_flair", "_t1ce")).symlink_to(next(brats18_case.glob("*_t1ce.nii.gz")))
    vols = load_case(case_from_folder(tmp_path))
    assert float(vols.images["flair"].min()) == 100.0
    original = {m: real_volumes.images[m] for m in ("flair", "t1ce")}
    np.testing.assert_array_equal(brain_mask(vols.images), brain_mask(original))


def test_background_without_a_dominant_value_falls_back_to_zero() -> None:
    """Noisy air has no background value; the mask is then every non-zero voxel (the whole
    volume), which the guards refuse rather than this function guessing a threshold."""
    rng = np.random.default_rng(0)
    noisy = rng.rayleigh(5.0, (20, 20, 10)).astype(np.float32)
    assert background_value(noisy)[0] == 0.0 and background_value(noisy)[1] < 0.01
    assert brain_mask({"flair": noisy}).all()
    half = np.zeros((20, 20, 10), dtype=np.float32)
    half[:, 10:] = 7.0  # no value fills more than half of the border: 0 is kept
    assert background_value(half) == (0.0, 0.5)


# --- resize -----------------------------------------------------------------------------------


def test_resize_slices() -> None:
    x = torch.rand(3, 4, 96, 80)
    assert resize_slices(x, (96, 80)) is x  # no-op at the target size
    assert resize_slices(x, (128, 128)).shape == (3, 4, 128, 128)
    labels = torch.randint(0, 4, (3, 1, 96, 80), dtype=torch.uint8)
    out = resize_slices(labels, (128, 128), nearest=True)
    assert out.dtype == torch.uint8 and set(out.unique().tolist()) <= {0, 1, 2, 3}


def test_resize_option_changes_cached_slice_shape(tmp_path: Path) -> None:
    write_synthetic_case(tmp_path / "data" / "SYNTHETIC_000", (80, 72, 24), seed=0)
    plain = PreprocessingConfig(crop_size=(80, 72))
    resized = PreprocessingConfig(crop_size=(80, 72), resize=(128, 128))
    a = build_cache(tmp_path / "data", tmp_path / "plain", plain, workers=1, progress=False)
    b = build_cache(tmp_path / "data", tmp_path / "resized", resized, workers=1, progress=False)
    images_a, labels_a = np.load(a / "images.npy"), np.load(a / "labels.npy")
    images_b, labels_b = np.load(b / "images.npy"), np.load(b / "labels.npy")
    n = len(images_a)
    assert images_a.shape == (n, 4, 80, 72) and labels_a.shape == (n, 80, 72)
    assert images_b.shape == (n, 4, 128, 128) and labels_b.shape == (n, 128, 128)
    assert images_b.dtype == np.float16 and labels_b.dtype == np.uint8
    # Same slices; labels resized with nearest neighbour, and the manifest counts the resized ones.
    rows_a, rows_b = read_manifest(a), read_manifest(b)
    assert [r["slice"] for r in rows_a] == [r["slice"] for r in rows_b]
    expected = resize_slices(torch.from_numpy(labels_a[:, None]), (128, 128), nearest=True)[:, 0].numpy()
    np.testing.assert_array_equal(labels_b, expected)
    assert [r["WT"] for r in rows_b] == [int((lab > 0).sum()) for lab in labels_b]
    assert PreprocessingConfig.from_json(b / "preprocessing.json").resize == (128, 128)


# --- slice policy -----------------------------------------------------------------------------


def _slices_fixture() -> tuple[np.ndarray, np.ndarray]:
    """20 axial slices of a 10 x 10 plane: 0-1 no brain, 2 little brain with tumour, 3 little
    brain without tumour, 4-19 brain (50 voxels), tumour in 8-10."""
    brain = np.zeros((10, 10, 20), dtype=bool)
    brain[:3, 0, 2:4] = True  # 3 voxels = 3 % of the plane
    brain[:5, :, 4:] = True  # 50 voxels
    label = np.zeros((10, 10, 20), dtype=np.uint8)
    label[0, 0, 2] = 1
    label[2:4, 2:4, 8:11] = 2
    label[2, 2, 9] = 3
    return brain, label


def test_slice_policy_keeps_tumour_drops_little_brain_samples_the_rest() -> None:
    brain, label = _slices_fixture()
    keep = select_slices(brain, label, min_brain_fraction=0.05, tumour_free_fraction=0.4, seed="CASE_A")
    assert keep.dtype == np.int64 and np.all(np.diff(keep) > 0)
    tumour = {2, 8, 9, 10}
    assert tumour <= set(keep.tolist())  # every tumour slice, even one with little brain
    assert not {0, 1, 3} & set(keep.tolist())  # no brain or little brain, no tumour: dropped
    free = set(keep.tolist()) - tumour
    assert free <= set(range(4, 20)) - tumour
    assert len(free) == round(13 * 0.4)  # 13 informative tumour-free slices
    # Deterministic for one case id, different across cases.
    again = select_slices(brain, label, 0.05, 0.4, seed="CASE_A")
    np.testing.assert_array_equal(keep, again)
    others = [select_slices(brain, label, 0.05, 0.4, seed=f"CASE_{c}").tolist() for c in "BCDE"]
    assert any(o != keep.tolist() for o in others)


def test_slice_policy_extremes() -> None:
    brain, label = _slices_fixture()
    assert select_slices(brain, label, 0.05, 0.0, seed="X").tolist() == [2, 8, 9, 10]
    assert select_slices(brain, label, 0.05, 1.0, seed="X").tolist() == [2, *range(4, 20)]
    # Without a label map every informative slice is kept.
    assert select_slices(brain, None, 0.05, 0.0, seed="X").tolist() == list(range(4, 20))
    # A higher threshold drops the 3 % slices' neighbours too, never a tumour slice.
    assert select_slices(brain, label, 0.6, 1.0, seed="X").tolist() == [2, 8, 9, 10]


# --- the shared pipeline ----------------------------------------------------------------------


def test_prepare_case_channel_order_and_missing_modality(tmp_path: Path) -> None:
    vols = load_case(write_synthetic_case(tmp_path / "S", (64, 64, 24), seed=1))
    del vols.images["t2"]
    config = PreprocessingConfig(crop_size=(48, 48), modalities=["t1ce", "t2", "flair"])
    prep = prepare_case(vols, config)
    assert prep.image.shape == (3, 48, 48, 24)
    assert prep.present == ["t1ce", "flair"]
    assert not prep.image[1].any()  # absent T2 is fed as zeros
    mask = brain_mask(vols.images)
    assert prep.start == brain_window(mask, (48, 48))
    np.testing.assert_allclose(prep.image[0], crop_xy(zscore(vols.images["t1ce"], mask), prep.start, (48, 48)))
    np.testing.assert_allclose(prep.image[2], crop_xy(zscore(vols.images["flair"], mask), prep.start, (48, 48)))
    np.testing.assert_array_equal(prep.label, crop_xy(vols.label, prep.start, (48, 48)))
    vols.label = None
    assert prepare_case(vols, config).label is None


def test_config_json_round_trip_and_validation(tmp_path: Path) -> None:
    config = PreprocessingConfig(crop_size=[128, 160], resize=[128, 128], tumour_free_fraction=0.25)
    assert config.crop_size == (128, 160) and config.resize == (128, 128)
    config.to_json(tmp_path / "p.json")
    assert PreprocessingConfig.from_json(tmp_path / "p.json") == config
    assert PreprocessingConfig.from_json(tmp_path / "p.json") != PreprocessingConfig()
    with pytest.raises(ValueError, match="unknown modalities"):
        PreprocessingConfig(modalities=["flair", "dwi"])


@pytest.mark.parametrize("module", ["normalize", "cache"])
def test_docstring_examples(module: str) -> None:
    results = doctest.testmod(importlib.import_module(f"bratseg.preprocessing.{module}"))
    assert results.attempted > 0 and results.failed == 0
