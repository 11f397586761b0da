"""Slices from the memory-mapped cache, with augmentation and modality dropout."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from monai.transforms import (
    Compose,
    RandAdjustContrastd,
    RandAffined,
    RandFlipd,
    RandGaussianNoised,
    RandGaussianSmoothd,
    RandScaleIntensityd,
    RandShiftIntensityd,
    RandSimulateLowResolutiond,
)
from torch.utils.data import Dataset

from bratseg.data.labels import labels_to_regions
from bratseg.errors import CacheError
from bratseg.preprocessing.cache import read_manifest
from bratseg.preprocessing.config import PreprocessingConfig
from bratseg.preprocessing.soft_targets import check_soft_targets


def training_augmentation(intensity: bool = False, soft_targets: bool = False) -> Compose:
    """Flips, small rotations and scaling, intensity scale and shift (MONAI transforms).

    ``intensity`` adds nnU-Net's defences against scanner differences, with about its default
    probabilities: Gaussian noise, Gaussian blur, a simulated lower resolution (older scans,
    such as BraTS's 2013 collection, were acquired thicker and resampled) and gamma.
    ``soft_targets`` moves a ``soft`` map (teacher probabilities) with the image, resampled
    bilinearly as the image is (the label is resampled by nearest neighbour).
    """
    keys = ["image", "label", "soft"] if soft_targets else ["image", "label"]
    modes = ("bilinear", "nearest", "bilinear") if soft_targets else ("bilinear", "nearest")
    extra = (
        [
            RandGaussianNoised("image", prob=0.1, std=0.1),
            RandGaussianSmoothd("image", sigma_x=(0.5, 1.0), sigma_y=(0.5, 1.0), prob=0.2),
            RandSimulateLowResolutiond("image", prob=0.25, upsample_mode="bilinear", zoom_range=(0.5, 1.0)),
            RandAdjustContrastd("image", prob=0.3, gamma=(0.7, 1.5), retain_stats=True),
        ]
        if intensity
        else []
    )
    return Compose(
        [
            RandFlipd(keys, prob=0.5, spatial_axis=0),
            RandFlipd(keys, prob=0.5, spatial_axis=1),
            RandAffined(
                keys,
                prob=0.5,
                rotate_range=np.deg2rad(15),
                scale_range=0.1,
                mode=modes,
                padding_mode="zeros",
            ),
            RandScaleIntensityd("image", factors=0.1, prob=0.5, channel_wise=True),
            RandShiftIntensityd("image", offsets=0.1, prob=0.5, channel_wise=True),
            *extra,
        ]
    )


class SliceDataset(Dataset):
    """Slices of ``cases`` from a cache, as ``(image [C,H,W] float32, target [3,H,W])``:
    the target is the float masks of the overlapping regions WT, TC and ET.
    The memory maps are opened lazily, once per worker process.
    """

    def __init__(
        self,
        cache_dir: str | Path,
        cases: list[str],
        augment: bool = False,
        modality_dropout: float = 0.0,
        intensity_augment: bool = False,
        patch_size: tuple[int, int] | list[int] | None = None,
        foreground_fraction: float = 0.33,
        soft_targets: str | Path | None = None,
        soft_target_weight: float = 0.5,
    ):
        self.cache_dir = Path(cache_dir)
        self.config = PreprocessingConfig.from_json(self.cache_dir / "preprocessing.json")
        wanted = set(cases)
        rows = [r for r in read_manifest(self.cache_dir) if r["case"] in wanted]
        self.indices = np.array([r["index"] for r in rows], dtype=np.int64)
        self.case_of = [r["case"] for r in rows]
        self.soft_targets = None if soft_targets is None else Path(soft_targets)
        self.soft_target_weight = soft_target_weight
        if self.soft_targets is not None:
            check_soft_targets(self.soft_targets, self.cache_dir, sorted(wanted))
        self.transform = training_augmentation(intensity_augment, self.soft_targets is not None) if augment else None
        self.modality_dropout = modality_dropout
        self.patch_size = tuple(patch_size) if patch_size else None
        if self.patch_size and (
            len(self.patch_size) != 2 or not all(0 < p <= s for p, s in zip(self.patch_size, self.config.crop_size))
        ):
            raise ValueError(
                f"patch_size {list(self.patch_size)} must be 2 sizes within the slice {self.config.crop_size}"
            )
        self.foreground_fraction = foreground_fraction
        # Channels zeroed by modality dropout: every optional one (all but FLAIR and T1ce).
        self.optional = [i for i, m in enumerate(self.config.channels) if m not in ("flair", "t1ce")]
        self.rng = np.random.default_rng(0)
        self._images = self._labels = self._soft = None

    def reseed(self, seed: int) -> None:
        """Seed every random choice of this dataset (augmentation and dropout)."""
        self.rng = np.random.default_rng(seed)
        if self.transform is not None:
            self.transform.set_random_state(seed=seed % (2**32))

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int):
        if self._images is None:
            self._images = np.load(self.cache_dir / "images.npy", mmap_mode="r")
            self._labels = np.load(self.cache_dir / "labels.npy", mmap_mode="r")
            if self.soft_targets is not None:
                self._soft = np.load(self.soft_targets, mmap_mode="r")
        idx = self.indices[i]
        image = np.asarray(self._images[idx], dtype=np.float32)  # float16 -> float32: a copy
        # A copy too: a view of the read-only memory map would reach MONAI's transforms as a
        # tensor over read-only memory (PyTorch warns; any in-place write would be undefined).
        label = np.array(self._labels[idx])[None]
        sample = {"image": image, "label": label}
        if self._soft is not None:
            sample["soft"] = np.asarray(self._soft[idx], dtype=np.float32)
            if not np.isfinite(sample["soft"]).all():  # NaN would reach the loss silently
                raise CacheError(f"{self.soft_targets}: row {idx} holds no teacher probabilities")
        if self.transform is not None:
            out = self.transform(sample)
            sample = {key: np.asarray(value, dtype=np.float32) for key, value in out.items()}
            sample["label"] = sample["label"].astype(np.uint8)
        if self.patch_size is not None:
            sample = self._crop(sample)
        image = sample["image"]
        if self.optional and self.modality_dropout and self.rng.random() < self.modality_dropout:
            image[self.optional] = 0
        target = labels_to_regions(sample["label"][0]).astype(np.float32)
        if "soft" in sample:
            w = self.soft_target_weight
            target = (1 - w) * target + w * np.clip(sample["soft"], 0, 1)
        return torch.from_numpy(image), torch.from_numpy(np.ascontiguousarray(target, dtype=np.float32))

    def _crop(self, sample: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """A ``patch_size`` window of the (augmented) slice and of everything that goes with it:
        centred on a random tumour voxel with probability ``foreground_fraction`` when the slice
        has tumour, else anywhere."""
        label = sample["label"]
        ph, pw = self.patch_size
        h, w = label.shape[-2:]
        tumour = np.flatnonzero(label[0]) if self.rng.random() < self.foreground_fraction else np.empty(0)
        if tumour.size:
            cy, cx = divmod(int(tumour[self.rng.integers(tumour.size)]), w)
            top = int(np.clip(cy - ph // 2, 0, h - ph))
            left = int(np.clip(cx - pw // 2, 0, w - pw))
        else:
            top, left = int(self.rng.integers(h - ph + 1)), int(self.rng.integers(w - pw + 1))
        window = (slice(None), slice(top, top + ph), slice(left, left + pw))
        return {key: np.ascontiguousarray(value[window]) for key, value in sample.items()}


def seed_worker(worker_id: int) -> None:
    """DataLoader worker_init_fn: derive the dataset's seed from the loader's."""
    info = torch.utils.data.get_worker_info()
    info.dataset.reseed(info.seed % (2**32))
