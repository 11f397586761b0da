"""Synthetic BraTS-layout cases for fast tests and the demo's example.

They are **synthetic**: an ellipsoid "brain" with a spherical tumour whose contrasts follow
real gliomas (edema bright on FLAIR and T2, an enhancing rim bright on T1ce, a necrotic centre
dark on T1ce). They exercise the code, not the medicine. Every case id starts with
``SYNTHETIC``.

Example:
    >>> import tempfile, pathlib
    >>> case = write_synthetic_case(pathlib.Path(tempfile.mkdtemp()) / "SYNTHETIC_001",
    ...                             shape=(64, 64, 40))
    >>> sorted(case.images), case.label.name
    (['flair', 't1', 't1ce', 't2'], 'SYNTHETIC_001_seg.nii.gz')
"""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np

from bratseg.data.labels import LabelScheme
from bratseg.data.layout import Case

# Mean intensity of (brain, edema, enhancing rim, necrosis) per modality, raw-scanner-like.
_CONTRASTS = {
    "flair": (400, 900, 700, 500),
    "t1": (500, 380, 420, 300),
    "t1ce": (500, 420, 1100, 220),
    "t2": (450, 1000, 800, 1100),
}


def synthetic_volumes(
    shape: tuple[int, int, int] = (240, 240, 155), seed: int = 0
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Four int16 modalities and a BraTS 2020 (0/1/2/4) label map of a synthetic case."""
    rng = np.random.default_rng(seed)
    grid = np.stack(np.meshgrid(*[np.arange(n, dtype=np.float32) for n in shape], indexing="ij"))
    centre = np.array(shape, dtype=np.float32)[:, None, None, None] / 2
    radii = np.array(shape, dtype=np.float32)[:, None, None, None] * np.array([0.35, 0.42, 0.4])[:, None, None, None]
    brain = (((grid - centre) / radii) ** 2).sum(0) <= 1
    scale = min(shape) / 155
    offset = rng.uniform(-0.12, 0.12, 3) * np.array(shape)
    t_centre = centre + offset[:, None, None, None]
    dist = np.sqrt(((grid - t_centre) ** 2).sum(0))
    r_core = rng.uniform(9, 14) * scale
    label = np.zeros(shape, dtype=np.uint8)
    label[(dist <= r_core * 2.2) & brain] = 2
    label[(dist <= r_core) & brain] = 4
    label[(dist <= r_core * 0.55) & brain] = 1
    region_index = {0: 0, 2: 1, 4: 2, 1: 3}
    images = {}
    for modality, means in _CONTRASTS.items():
        mean_map = np.zeros(shape, dtype=np.float32)
        for value, idx in region_index.items():
            mean_map[(label == value) & brain] = means[idx]
        noise = rng.normal(0, 0.06, shape).astype(np.float32) * mean_map
        images[modality] = np.where(brain, mean_map + noise, 0).astype(np.int16)
    return images, label


# File-name endings of each naming scheme bratseg reads (see bratseg.data.layout).
_NAMINGS: dict[str, dict[str, str]] = {
    "brats2020": {"flair": "_flair", "t1": "_t1", "t1ce": "_t1ce", "t2": "_t2", "seg": "_seg"},
    "brats2023": {"flair": "-t2f", "t1": "-t1n", "t1ce": "-t1c", "t2": "-t2w", "seg": "-seg"},
}


def write_synthetic_case(
    folder: str | Path,
    shape: tuple[int, int, int] = (240, 240, 155),
    seed: int = 0,
    naming: LabelScheme = "brats2020",
    suffix: str = ".nii.gz",
    with_label: bool = True,
) -> Case:
    """Write a synthetic case and return it. The folder name is the case id.

    ``naming`` picks BraTS 2018-2020 names (``<case>_flair``, ``_t1ce``, ..., labels 0/1/2/4)
    or BraTS 2023 names (``<case>-t2f``, ``-t1c``, ..., enhancing label 3); ``suffix`` is
    ``.nii.gz`` or ``.nii`` (uncompressed, as in the Kaggle BraTS 2020 download);
    ``with_label=False`` writes no label file, like a validation-set case.
    """
    if naming not in _NAMINGS:
        raise ValueError(f"unknown naming {naming!r}; known: {sorted(_NAMINGS)}")
    if suffix not in (".nii.gz", ".nii"):
        raise ValueError(f"suffix must be .nii.gz or .nii, not {suffix!r}")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    images, label = synthetic_volumes(shape, seed)
    affine = np.diag([-1.0, -1.0, 1.0, 1.0])
    ends = _NAMINGS[naming]
    paths = {}
    for modality, data in images.items():
        paths[modality] = folder / f"{folder.name}{ends[modality]}{suffix}"
        nib.save(nib.Nifti1Image(data, affine), str(paths[modality]))
    seg = None
    if with_label:
        if naming == "brats2023":
            label = np.where(label == 4, 3, label).astype(np.uint8)
        seg = folder / f"{folder.name}{ends['seg']}{suffix}"
        nib.save(nib.Nifti1Image(label, affine), str(seg))
    return Case(folder.name, paths, seg, naming, folder)


def write_synthetic_dataset(root: str | Path, n_cases: int, shape=(96, 96, 48)) -> list[Case]:
    """``n_cases`` synthetic cases named ``SYNTHETIC_000`` ... under ``root``."""
    return [write_synthetic_case(Path(root) / f"SYNTHETIC_{i:03d}", shape, seed=i) for i in range(n_cases)]
