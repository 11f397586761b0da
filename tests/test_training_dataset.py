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
