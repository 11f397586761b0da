"""The training dataset: cached slices, seeded augmentation, modality dropout."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from bratseg.training.dataset import SliceDataset


def samples(dataset: SliceDataset, seed: int, n: int = 24) -> list[tuple[torch.Tensor, torch.Tensor]]:
    dataset.reseed(seed)
    return [dataset[i % len(dataset)] for i in range(n)]


def train_cases(cache: Path) -> list[str]:
    return json.loads((cache / "split.json").read_text())["train"]


def test_plain_slices_are_the_cache_and_regions_nest(tiny_cache: Path):
    dataset = SliceDataset(tiny_cache, train_cases(tiny_cache))
    cached = np.load(tiny_cache / "images.npy", mmap_mode="r")
    image, target = dataset[0]
    assert image.dtype == torch.float32 and image.shape == (4, 64, 64)
    assert torch.equal(image, torch.from_numpy(np.asarray(cached[dataset.indices[0]], dtype=np.float32)))
    assert target.shape == (3, 64, 64)
    wt, tc, et = target.bool()
    assert not (tc & ~wt).any() and not (et & ~tc).any()  # ET within TC within WT


def test_augmentation_is_seeded_and_intensity_augmentation_adds_to_it(tiny_cache: Path):
    cases = train_cases(tiny_cache)
    spatial = SliceDataset(tiny_cache, cases, augment=True)
    intensity = SliceDataset(tiny_cache, cases, augment=True, intensity_augment=True)
    first, again = samples(intensity, 7), samples(intensity, 7)
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(first, again))
    assert any(not torch.equal(a[0], b[0]) for a, b in zip(first, samples(intensity, 8)))
    plain = samples(spatial, 7)
    # The intensity transforms come last with random states of their own: the geometry (and
    # so every label) is the spatial pipeline's, the intensities are not.
    assert all(torch.equal(a[1], b[1]) for a, b in zip(first, plain))
    assert any(not torch.allclose(a[0], b[0]) for a, b in zip(first, plain))
    assert all(torch.isfinite(x).all() and x.shape == (4, 64, 64) for x, _ in first)


def test_modality_dropout_zeroes_t1_and_t2_only(tiny_cache: Path):
    dataset = SliceDataset(tiny_cache, train_cases(tiny_cache), modality_dropout=1.0)
    image, _ = dataset[0]
    flair_t1ce = [dataset.config.modalities.index(m) for m in ("flair", "t1ce")]
    optional = [i for i in range(4) if i not in flair_t1ce]
    assert (image[optional] == 0).all()
    assert all(image[i].abs().sum() > 0 for i in flair_t1ce)


def test_patches_are_windows_of_the_slice_and_a_third_hold_tumour(tiny_cache: Path):
    """Patch training (nnU-Net): every sample is a window of its cached slice, seeded, and
    forcing the tumour-centred share up makes tumour appear in more patches."""
    cases = train_cases(tiny_cache)
    cached = np.load(tiny_cache / "images.npy", mmap_mode="r")
    dataset = SliceDataset(tiny_cache, cases, patch_size=(32, 48), foreground_fraction=0.33)
    first, again = samples(dataset, 3), samples(dataset, 3)
    assert all(torch.equal(a[0], b[0]) for a, b in zip(first, again))
    for i, (image, target) in enumerate(first):
        assert image.shape == (4, 32, 48) and target.shape == (3, 32, 48)
        whole = np.asarray(cached[dataset.indices[i % len(dataset)]], dtype=np.float32)
        # Find the window: the patch's top-left voxel pattern occurs in the whole slice.
        windows = np.lib.stride_tricks.sliding_window_view(whole, (4, 32, 48))[0]
        assert (windows == image.numpy()).all(axis=(-3, -2, -1)).any()
    tumour_slices = [i for i in range(len(dataset)) if dataset[i][1].any()]
    assert tumour_slices, "the tiny cache has tumour"

    def share_with_tumour(fraction: float) -> float:
        biased = SliceDataset(tiny_cache, cases, patch_size=(16, 16), foreground_fraction=fraction)
        biased.reseed(0)
        return float(np.mean([biased[i][1][0].any().item() for i in tumour_slices for _ in range(4)]))

    assert share_with_tumour(1.0) == 1.0  # centred on a tumour voxel: the patch always holds it
    assert share_with_tumour(0.0) < 1.0


def test_a_patch_larger_than_the_slice_is_refused(tiny_cache: Path):
    import pytest

    with pytest.raises(ValueError, match="patch_size"):
        SliceDataset(tiny_cache, train_cases(tiny_cache), patch_size=(128, 16))
