"""Pictures of a case and its prediction: grey MRI slices with tumour regions in colour.

Shared by the PDF reports (:mod:`bratseg.reporting.figures`, the follow-up report), the Flask
app and the Gradio demo, so that a slice looks the same everywhere; everything returns RGB
``uint8`` arrays (or PNG bytes), nothing is written to disk and no matplotlib figure is opened.

Orientation. A slice ``index`` is a *voxel* index along the voxel axis closest to the
requested anatomical axis (for BraTS files, voxel axis 2 is axial), so it matches what
``data[:, :, index]`` means to a user. The picture is oriented from the affine, the same
way for all three axes, following the radiological convention: superior (or, for axial
slices, anterior) at the top; the patient's right on the viewer's left in axial and coronal
slices; anterior on the viewer's left in sagittal slices. For BraTS's LPS-stored volumes an
axial slice is shown as ``data[:, :, z].T``. :func:`orientation`, :func:`voxel_axis` and
:func:`display_slice` give that orientation to other drawings of a slice (a difference map,
an uncertainty map) so that they line up with :func:`render_overlay`'s.

Example:
    >>> import numpy as np
    >>> labels = np.zeros((8, 8, 6), dtype=np.uint8); labels[2:4, 2:4, 4] = 2
    >>> best_slice(labels, "axial"), slice_count(labels.shape, "sagittal")
    (4, 8)
    >>> lps = np.diag([-1.0, -1.0, 1.0, 1.0])  # BraTS files store LPS
    >>> voxel_axis("axial", orientation(lps)), display_slice(labels, "axial", 4, orientation(lps)).shape
    (2, (8, 8))
    >>> bool(np.array_equal(display_slice(labels, "axial", 4, orientation(lps)), labels[:, :, 4].T))
    True
"""

from __future__ import annotations

import io
import weakref

import nibabel as nib
import numpy as np
from PIL import Image, ImageDraw, ImageFont

from bratseg.data.io import CaseVolumes
from bratseg.data.labels import REGION_LABELS, resolve_region

AXES = ("axial", "coronal", "sagittal")
# RAS world axis normal to each kind of slice.
_WORLD_AXIS = {"sagittal": 0, "coronal": 1, "axial": 2}

REGION_COLOURS: dict[str, tuple[int, int, int]] = {
    "necrotic core": (230, 41, 55),  # label 1: red
    "edema": (0, 200, 83),  # label 2: green
    "enhancing tumour": (255, 214, 0),  # label 4: yellow
    "tumour core": (255, 128, 0),  # labels 1 + 4 drawn as one region: orange
    "whole tumour": (0, 160, 255),  # labels 1 + 2 + 4 drawn as one region: blue
}
"""RGB colour of each region of :data:`~bratseg.data.labels.REGION_LABELS`."""

LABEL_COLOURS: dict[int, tuple[int, int, int]] = {
    1: REGION_COLOURS["necrotic core"],
    2: REGION_COLOURS["edema"],
    4: REGION_COLOURS["enhancing tumour"],
}
"""RGB colour of each BraTS 2020 label; the whole tumour is drawn with these three."""

_LABEL_NAMES = {1: "necrotic core", 2: "edema", 4: "enhancing tumour"}
_ALPHA = 0.55  # region opacity: enough colour to see, enough grey to see the anatomy through


def _check_axis(axis: str) -> str:
    if axis not in AXES:
        raise ValueError(f"unknown axis {axis!r}; choose one of {', '.join(AXES)}")
    return axis


_IDENTITY_ORIENTATION = np.array([[0, 1], [1, 1], [2, 1]], dtype=float)


def orientation(affine: np.ndarray | None) -> np.ndarray:
    """nibabel orientation (voxel axis -> RAS axis and direction); identity without affine.

    A degenerate affine (singular, rank 2, NaN) leaves some voxel axes without a world axis:
    they get the world axes left over, in order, so that a picture can still be drawn (as
    stored) instead of failing; whether such a case may be predicted is for the loader.
    """
    if affine is None:
        return _IDENTITY_ORIENTATION.copy()
    matrix = np.asarray(affine, dtype=float)
    if matrix.shape != (4, 4) or not np.isfinite(matrix).all():
        return _IDENTITY_ORIENTATION.copy()
    with np.errstate(invalid="ignore", divide="ignore"):
        ornt = nib.orientations.io_orientation(matrix)
    missing = np.isnan(ornt[:, 0])
    if missing.any():
        free = [w for w in range(3) if w not in ornt[~missing, 0]]
        ornt[missing] = [[w, 1.0] for w in free]
    return ornt


def voxel_axis(axis: str, ornt: np.ndarray) -> int:
    """The voxel axis pointing along ``axis``'s RAS normal."""
    world = _WORLD_AXIS[_check_axis(axis)]
    return int(np.flatnonzero(ornt[:, 0] == world)[0])


def slice_count(shape: tuple[int, ...], axis: str, affine: np.ndarray | None = None) -> int:
    """How many ``axis`` slices a volume of ``shape`` has (voxel axis from ``affine``;
    without one, voxel axes 0/1/2 are taken as sagittal/coronal/axial as in BraTS)."""
    return int(shape[voxel_axis(axis, orientation(affine))])


def _check_index(index: int, shape: tuple[int, ...], axis: str, affine: np.ndarray | None) -> int:
    n = slice_count(shape, axis, affine)
    if not 0 <= int(index) < n:
        raise ValueError(f"{axis} slice {index} is out of range 0..{n - 1}")
    return int(index)


def best_slice(
    labels: np.ndarray,
    axis: str = "axial",
    region: str | None = None,
    affine: np.ndarray | None = None,
    brain: np.ndarray | None = None,
) -> int:
    """The ``axis`` slice holding the most tumour (of ``region`` when given, else any
    non-zero label); without tumour, the middle of the brain (of ``brain``, a mask, when
    given, else of the volume)."""
    ornt = orientation(affine)
    ax = voxel_axis(axis, ornt)
    mask = labels != 0 if region is None else np.isin(labels, REGION_LABELS[resolve_region(region)])
    others = tuple(a for a in range(3) if a != ax)
    counts = mask.sum(axis=others)
    if counts.any():
        return int(np.argmax(counts))
    if brain is not None:
        present = np.flatnonzero(np.asarray(brain).any(axis=others))
        if present.size:
            return int((present[0] + present[-1]) // 2)
    return labels.shape[ax] // 2


def display_slice(volume: np.ndarray, axis: str, index: int, ornt: np.ndarray) -> np.ndarray:
    """Slice ``index`` of ``volume`` along ``axis``, oriented for display (see module doc)."""
    ax = voxel_axis(axis, ornt)
    sl = np.take(volume, index, axis=ax)
    rest = [a for a in range(3) if a != ax]
    world = [int(ornt[a, 0]) for a in rest]
    flips = [ornt[a, 1] < 0 for a in rest]
    if world[0] > world[1]:  # make the slice's axes run in RAS order
        sl, flips = sl.T, flips[::-1]
    if flips[0]:
        sl = sl[::-1, :]
    if flips[1]:
        sl = sl[:, ::-1]
    # sl[a, b] now increases towards R/A/S along both axes: put the higher world axis
    # (anterior or superior) at the top and the lower one (right or anterior) on the left.
    return np.ascontiguousarray(sl[::-1, ::-1].T)


_WINDOWS: dict[int, tuple[float, float]] = {}


def _grey_window(volume: np.ndarray) -> tuple[float, float]:
    """Display window of a volume: robust percentiles of its non-zero (brain) voxels, so
    every slice of one scan is shown with the same contrast.

    Computed over the whole volume (independent of how voxels are stored) and remembered
    while the array lives, since a viewer re-renders the same volume slice after slice.
    """
    key = id(volume)
    window = _WINDOWS.get(key)
    if window is not None:
        return window
    brain = volume[volume != 0]
    if brain.size == 0:
        window = (0.0, 1.0)
    else:
        lo, hi = (float(v) for v in np.percentile(brain, [0.5, 99.5]))
        window = (lo, hi if hi > lo else lo + 1.0)
    try:
        weakref.finalize(volume, _WINDOWS.pop, key, None)  # forget it before the id is reused
        _WINDOWS[key] = window
    except TypeError:  # not weak-referenceable: just do not cache
        pass
    return window


def _grey(image: np.ndarray, window: tuple[float, float]) -> np.ndarray:
    lo, hi = window
    scaled = np.clip((image.astype(np.float32) - lo) / (hi - lo), 0.0, 1.0)
    return np.round(scaled * 255).astype(np.uint8)


def _rgb(grey: np.ndarray) -> np.ndarray:
    return np.repeat(grey[..., None], 3, axis=2)


def _base_slice(volumes: CaseVolumes, base: str, axis: str, index: int, ornt: np.ndarray) -> np.ndarray:
    if base not in volumes.images:
        raise ValueError(f"no {base!r} image in this case; have {', '.join(volumes.images)}")
    volume = volumes.images[base]
    return _grey(display_slice(volume, axis, index, ornt), _grey_window(volume))


def render_overlay(
    volumes: CaseVolumes,
    labels: np.ndarray,
    region: str,
    axis: str = "axial",
    index: int | None = None,
    base: str = "flair",
    legend: bool = False,
    alpha: float = _ALPHA,
) -> np.ndarray:
    """RGB ``uint8`` picture of one slice: ``base`` in grey, ``region`` blended in colour.

    ``region`` is anything :func:`~bratseg.data.labels.resolve_region` accepts; the
    whole tumour (``all_the_tumor``) is drawn as its three labels in their three colours, as
    the original app did, any other region in its own colour (:data:`REGION_COLOURS`).
    ``labels`` is a BraTS 2020 (0/1/2/4) map on the volumes' grid. ``index`` defaults to
    :func:`best_slice` for the region. With ``legend`` a colour key is drawn in a strip below
    the slice (the image is then taller than the slice); otherwise the image has the slice's
    size and :func:`draw_legend` (or the web pages' HTML key,
    :func:`bratseg.serving.legend.legend_html`) gives the key.

    Raises ``KeyError`` for an unknown region and ``ValueError`` for an unknown axis or
    base, an out-of-range index or labels of another shape.
    """
    name = resolve_region(region)
    _check_axis(axis)
    if labels.shape != volumes.shape:
        raise ValueError(f"labels of shape {labels.shape} do not match the images' {volumes.shape}")
    ornt = orientation(volumes.affine)
    if index is None:
        brain = volumes.images[base] != 0 if base in volumes.images else None
        index = best_slice(labels, axis, region=name, affine=volumes.affine, brain=brain)
    index = _check_index(index, volumes.shape, axis, volumes.affine)
    rgb = _rgb(_base_slice(volumes, base, axis, index, ornt)).astype(np.float32)
    lab = display_slice(labels, axis, index, ornt)
    if name == "whole tumour":
        layers = [(lab == value, colour) for value, colour in LABEL_COLOURS.items()]
    else:
        layers = [(np.isin(lab, REGION_LABELS[name]), REGION_COLOURS[name])]
    for mask, colour in layers:
        rgb[mask] = (1.0 - alpha) * rgb[mask] + alpha * np.asarray(colour, dtype=np.float32)
    image = np.round(rgb).astype(np.uint8)
    return draw_legend(image, name) if legend else image


def render_inputs(
    volumes: CaseVolumes,
    axis: str = "axial",
    index: int | None = None,
    modalities: tuple[str, ...] = ("flair", "t1ce"),
    captions: bool = True,
) -> np.ndarray:
    """The input slices (FLAIR and T1ce by default) side by side in grey, as RGB ``uint8``,
    each captioned with its modality. ``index`` defaults to the middle of the brain."""
    _check_axis(axis)
    ornt = orientation(volumes.affine)
    if index is None:
        index = best_slice(
            np.zeros(volumes.shape, dtype=np.uint8),
            axis,
            affine=volumes.affine,
            brain=volumes.images[modalities[0]] != 0,
        )
    index = _check_index(index, volumes.shape, axis, volumes.affine)
    panels = [_rgb(_base_slice(volumes, m, axis, index, ornt)) for m in modalities]
    gap = np.zeros((panels[0].shape[0], 4, 3), dtype=np.uint8)
    pieces: list[np.ndarray] = []
    for i, panel in enumerate(panels):
        if captions:
            panel = _caption(panel, _MODALITY_NAMES.get(modalities[i], modalities[i]))
        pieces += [gap, panel] if pieces else [panel]
    return np.concatenate(pieces, axis=1)


_MODALITY_NAMES = {"flair": "FLAIR", "t1ce": "T1ce", "t1": "T1", "t2": "T2"}


def _font(size: int = 11) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1 has only the fixed bitmap font
        return ImageFont.load_default()


def _caption(panel: np.ndarray, text: str) -> np.ndarray:
    image = Image.fromarray(panel)
    ImageDraw.Draw(image).text((4, 3), text, fill=(255, 255, 255), font=_font(), stroke_width=1, stroke_fill=(0, 0, 0))
    return np.asarray(image)


def legend_entries(region: str) -> list[tuple[str, tuple[int, int, int]]]:
    """(name, RGB colour) of what :func:`render_overlay` draws for ``region``."""
    name = resolve_region(region)
    if name == "whole tumour":
        return [(_LABEL_NAMES[v], LABEL_COLOURS[v]) for v in LABEL_COLOURS]
    return [(name, REGION_COLOURS[name])]


def draw_legend(image: np.ndarray, region: str) -> np.ndarray:
    """``image`` with a colour key of ``region`` appended as a dark strip below it."""
    entries = legend_entries(region)
    row = 15
    height, width = image.shape[:2]
    strip = Image.new("RGB", (width, row * len(entries) + 6), (24, 24, 24))
    draw = ImageDraw.Draw(strip)
    font = _font()
    for i, (name, colour) in enumerate(entries):
        y = 3 + i * row
        draw.rectangle((4, y + 2, 14, y + 12), fill=colour)
        draw.text((20, y), name, fill=(235, 235, 235), font=font)
    return np.concatenate([image, np.asarray(strip)], axis=0)


def to_png(image: np.ndarray) -> bytes:
    """PNG bytes of an RGB (or grey) ``uint8`` image."""
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim not in (2, 3):
        raise ValueError(f"expected a uint8 grey or RGB image, got {image.dtype} of shape {image.shape}")
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG", compress_level=3)  # fast; these are small
    return buf.getvalue()
