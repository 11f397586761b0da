"""Real cases turned into the inputs the guards must catch or handle, shared by the guard tests
and ``bench/guard_probes.py``: skull and scalp added, background offset or noisy, resampled,
a modality mirrored or replaced, voxel order changed with a matching affine.

Each function takes a loaded :class:`~bratseg.data.io.CaseVolumes` and returns a new one; the
original is never modified.
"""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage

from bratseg.data.io import CaseVolumes
from bratseg.preprocessing.normalize import brain_mask

# Layers outside the brain, in mm from its outline, and their intensity as a multiple of the
# brain's median per modality: CSF (bright on T2 only), bone (dark everywhere), scalp fat
# (bright on T1, T1ce and FLAIR). Real skull-on scans look like this in BraTS space.
_LAYERS_MM = (2, 7, 12)
_LAYER_LEVELS = {"flair": (0.3, 0.1, 1.6), "t1": (0.4, 0.1, 2.2), "t1ce": (0.4, 0.1, 2.0), "t2": (2.0, 0.1, 1.3)}


def with_images(
    volumes: CaseVolumes,
    images: dict[str, np.ndarray],
    affine: np.ndarray | None = None,
    label: np.ndarray | None = None,
) -> CaseVolumes:
    """``volumes`` with other images (and optionally another grid and label map); the header
    follows the affine, as a file written with it would."""
    affine = volumes.affine if affine is None else affine
    shape = next(iter(images.values())).shape
    header = nib.Nifti1Image(np.zeros(shape, np.int16), affine).header
    return CaseVolumes(volumes.case_id, images, affine, header, volumes.label if label is None else label)


def skull_on(volumes: CaseVolumes, seed: int = 0) -> CaseVolumes:
    """CSF, bone and scalp fat layers (12 mm in all) around the brain, with 10 % noise."""
    mask = brain_mask(volumes.images)
    box = tuple(slice(max(s.start - 14, 0), s.stop + 14) for s in ndimage.find_objects(mask.view(np.uint8))[0])
    distance = np.full(mask.shape, np.inf, dtype=np.float32)
    distance[box] = ndimage.distance_transform_edt(~mask[box])  # within 14 mm of the brain: enough
    rng = np.random.default_rng(seed)
    layers = []
    inner = 0
    for outer in _LAYERS_MM:
        layers.append((distance > inner) & (distance <= outer))
        inner = outer
    images = {}
    for modality, data in volumes.images.items():
        median = float(np.median(data[mask]))
        out = data.copy()
        for layer, level in zip(layers, _LAYER_LEVELS[modality]):
            out[layer] = median * level * (1 + 0.1 * rng.standard_normal(int(layer.sum()))).astype(np.float32)
        images[modality] = out
    return with_images(volumes, images)


def offset(volumes: CaseVolumes, value: float) -> CaseVolumes:
    """Every voxel shifted by ``value``, as a header intercept (``scl_inter``) does."""
    return with_images(volumes, {m: (d + np.float32(value)).astype(np.float32) for m, d in volumes.images.items()})


def zscored_whole_volume(volumes: CaseVolumes) -> CaseVolumes:
    """Each modality z-scored over the whole volume: a negative constant background."""
    return with_images(volumes, {m: ((d - d.mean()) / d.std()).astype(np.float32) for m, d in volumes.images.items()})


def noisy_air(volumes: CaseVolumes, level: float = 0.03, seed: int = 0) -> CaseVolumes:
    """Rician noise (``level`` times the brain's median) over the whole volume, as a magnitude
    image has it before the background is masked."""
    rng = np.random.default_rng(seed)
    mask = brain_mask(volumes.images)
    images = {}
    for modality, data in volumes.images.items():
        sigma = level * float(np.median(data[mask]))
        real = data + sigma * rng.standard_normal(data.shape, dtype=np.float32)
        images[modality] = np.hypot(real, sigma * rng.standard_normal(data.shape, dtype=np.float32)).astype(np.float32)
    return with_images(volumes, images)


def resampled(volumes: CaseVolumes, voxel_mm: tuple[float, float, float]) -> CaseVolumes:
    """The case resampled (linear; labels nearest) to voxels of ``voxel_mm``, the affine
    scaled to match: the same head at another resolution."""
    zoom = 1 / np.asarray(voxel_mm, dtype=np.float64)
    images = {m: ndimage.zoom(d, zoom, order=1).astype(np.float32) for m, d in volumes.images.items()}
    label = None if volumes.label is None else ndimage.zoom(volumes.label, zoom, order=0)
    affine = volumes.affine.copy()
    affine[:3, :3] = affine[:3, :3] / zoom
    out = with_images(volumes, images, affine, label)
    if volumes.label is None:
        out.label = None
    return out


def mirrored(volumes: CaseVolumes, modality: str) -> CaseVolumes:
    """One modality's data flipped left-right (axis 0 in BraTS), its affine left as it was."""
    images = dict(volumes.images)
    images[modality] = np.ascontiguousarray(images[modality][::-1])
    return with_images(volumes, images)


def replaced(volumes: CaseVolumes, modality: str, by: str) -> CaseVolumes:
    """``modality`` given the data of ``by`` (T1 given as T1ce, say)."""
    images = dict(volumes.images)
    images[modality] = images[by].copy()
    return with_images(volumes, images)


def only(volumes: CaseVolumes, *modalities: str) -> CaseVolumes:
    return with_images(volumes, {m: volumes.images[m] for m in modalities})


def permuted(volumes: CaseVolumes, order: tuple[int, int, int]) -> CaseVolumes:
    """Every modality with its voxel axes permuted and the affine permuted to match: the same
    head in world space, sliced along another axis (``(1, 2, 0)``: sagittal slices)."""
    images = {m: np.ascontiguousarray(np.transpose(d, order)) for m, d in volumes.images.items()}
    affine = volumes.affine.copy()
    affine[:, :3] = volumes.affine[:, list(order)]
    label = None if volumes.label is None else np.ascontiguousarray(np.transpose(volumes.label, order))
    out = with_images(volumes, images, affine, label)
    out.label = label
    return out


def flipped_storage(data: np.ndarray, affine: np.ndarray, axis: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``data`` stored flipped along ``axis`` with the affine that says so: the same voxels in
    world space."""
    flipped = np.ascontiguousarray(np.flip(data, axis=axis))
    moved = affine.copy()
    moved[:, axis] = -affine[:, axis]
    moved[:3, 3] = affine[:3, 3] + affine[:3, axis] * (data.shape[axis] - 1)
    return flipped, moved


def write_case(volumes: CaseVolumes, folder: Path, dtype: type = np.float32) -> dict[str, Path]:
    """Write ``volumes`` as a case folder in BraTS 2018 naming (``<folder>_<modality>.nii.gz``)."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = {}
    for modality, data in volumes.images.items():
        paths[modality] = folder / f"{folder.name}_{modality}.nii.gz"
        nib.save(nib.Nifti1Image(data.astype(dtype), volumes.affine), str(paths[modality]))
    return paths


def native_in_brats_space(native_dir: Path, modalities: tuple[str, ...] = ("flair", "t1ce")) -> CaseVolumes:
    """The raw TCGA-FG-6692 scans (skull, scalp and noisy air included) resampled onto the
    BraTS grid through the reference pipeline's atlas-to-native affine: a real skull-on scan
    in BraTS space. Its reference BraTS-space brain mask overlaps HD-BET's native one pulled
    through the same affine with Dice 0.97."""
    suffixes = {"flair": "_fla", "t1ce": "_t1c", "t1": "_t1", "t2": "_t2"}
    reference = nib.load(str(native_dir / "reference" / "brats_space_brain_mask.nii.gz"))
    atlas_to_native = np.loadtxt(native_dir / "reference" / "atlas_to_native_t1c_affine.txt")
    images = {}
    for modality in modalities:
        path = next(p for p in native_dir.glob("*.nii.gz") if p.name.endswith(f"{suffixes[modality]}.nii.gz"))
        img = nib.load(str(path))
        pull = np.linalg.inv(img.affine) @ atlas_to_native @ reference.affine
        data = np.asanyarray(img.dataobj).astype(np.float32)
        images[modality] = ndimage.affine_transform(
            data, pull[:3, :3], pull[:3, 3], output_shape=reference.shape, order=1
        ).round()
    header = nib.Nifti1Image(np.zeros(reference.shape, np.int16), reference.affine).header
    return CaseVolumes("TCGA-FG-6692", images, reference.affine, header)


# --- inputs that look like scans but hold no usable content (issue: never silently wrong, 2) ---


def _own_mask(data: np.ndarray) -> np.ndarray:
    return data != 0


def constant_inside(volumes: CaseVolumes, modality: str) -> CaseVolumes:
    """``modality`` with one value (its brain median) wherever it had brain: no anatomy."""
    data = volumes.images[modality]
    inside = _own_mask(data)
    value = np.float32(np.median(data[inside]))
    return with_images(volumes, {**volumes.images, modality: np.where(inside, value, 0).astype(np.float32)})


def label_as(volumes: CaseVolumes, modality: str) -> CaseVolumes:
    """The expert label map (BraTS values 0/1/2/4) given as ``modality``."""
    assert volumes.label is not None
    brats = np.array([0, 1, 2, 4], dtype=np.float32)[volumes.label]
    return with_images(volumes, {**volumes.images, modality: brats})


def mask_as(volumes: CaseVolumes, modality: str) -> CaseVolumes:
    """The brain mask (0/1) given as ``modality``."""
    return with_images(volumes, {**volumes.images, modality: brain_mask(volumes.images).astype(np.float32)})


def noise_inside(volumes: CaseVolumes, modality: str, seed: int = 0) -> CaseVolumes:
    """``modality``'s brain filled with Gaussian noise around its median: values, no anatomy."""
    data = volumes.images[modality]
    inside = _own_mask(data)
    median, spread = float(np.median(data[inside])), float(data[inside].std())
    noise = np.random.default_rng(seed).normal(median + 3 * spread, spread, data.shape).astype(np.float32)
    return with_images(volumes, {**volumes.images, modality: np.where(inside, noise, 0).astype(np.float32)})


def negated(volumes: CaseVolumes, modality: str) -> CaseVolumes:
    """``modality`` times -1, as a header ``scl_slope`` of -1 gives."""
    return with_images(volumes, {**volumes.images, modality: -volumes.images[modality]})


def grey_flipped(volumes: CaseVolumes, modality: str) -> CaseVolumes:
    """``modality`` as maximum minus value over the whole image (an export that flips the grey
    scale: the background becomes the brightest value)."""
    data = volumes.images[modality]
    return with_images(volumes, {**volumes.images, modality: (data.max() - data).astype(np.float32)})


def flipped_inside(volumes: CaseVolumes, modality: str) -> CaseVolumes:
    """``modality``'s grey scale flipped inside the brain only, the background left at 0."""
    data = volumes.images[modality]
    inside = _own_mask(data)
    top = float(data[inside].max())
    return with_images(volumes, {**volumes.images, modality: np.where(inside, top - data + 1, 0).astype(np.float32)})


def scaled(volumes: CaseVolumes, modality: str, factor: float) -> CaseVolumes:
    """``modality`` times ``factor`` in memory (float32), as a file written with that scale."""
    return with_images(volumes, {**volumes.images, modality: (volumes.images[modality] * factor).astype(np.float32)})


def two_patients(first: CaseVolumes, second: CaseVolumes, from_second: tuple[str, ...]) -> CaseVolumes:
    """``first``'s sequences with those named in ``from_second`` taken from ``second`` (both in
    BraTS space): two patients in one case."""
    images = {m: (second.images[m] if m in from_second else d) for m, d in first.images.items()}
    return with_images(first, images)


CONTENT_PROBES = {
    "flair_constant": lambda v: constant_inside(v, "flair"),
    "t1ce_is_label_map": lambda v: label_as(v, "t1ce"),
    "flair_is_label_map": lambda v: label_as(v, "flair"),
    "t2_is_brain_mask": lambda v: mask_as(v, "t2"),
    "flair_noise": lambda v: noise_inside(v, "flair"),
    "flair_negated": lambda v: negated(v, "flair"),
    "t1ce_negated": lambda v: negated(v, "t1ce"),
    "flair_grey_flipped": lambda v: grey_flipped(v, "flair"),
    "t2_grey_flipped": lambda v: grey_flipped(v, "t2"),
    "flair_flipped_inside": lambda v: flipped_inside(v, "flair"),
    "t1_flipped_inside": lambda v: flipped_inside(v, "t1"),
    "flair_times_1e-30": lambda v: scaled(v, "flair", 1e-30),
    "flair_times_1e-3": lambda v: scaled(v, "flair", 1e-3),
}


def save_with_scaling(raw: np.ndarray, affine: np.ndarray, path: Path, slope: float, inter: float = 0.0) -> Path:
    """``raw`` (stored as is) in a gzipped NIfTI file whose header says ``scl_slope`` and
    ``scl_inter``: nibabel's own writer would rescale the data and reset them, so the header
    is written field by field."""
    import gzip

    header = nib.Nifti1Image(raw, affine).header
    header.set_data_dtype(raw.dtype)
    header["vox_offset"] = 352
    header["scl_slope"], header["scl_inter"] = slope, inter
    with gzip.open(path, "wb") as stream:
        stream.write(header.binaryblock + b"\0" * 4)  # 348 bytes and an empty extension flag
        stream.write(np.asarray(raw).tobytes(order="F"))
    return path


def refused_by_guards(volumes: CaseVolumes, error: type[Exception], *fragments: str) -> str:
    """The one-line message with which the input checks (the shipped model's preprocessing)
    refuse ``volumes`` as ``error``; each of ``fragments`` must be in it."""
    import pytest

    from bratseg.inference import guards
    from bratseg.preprocessing.config import PreprocessingConfig

    with pytest.raises(error) as info:
        guards.check_input(volumes, PreprocessingConfig())
    message = str(info.value)
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message, message
    return message
