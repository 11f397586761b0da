"""The key-slice panel of a prediction: the slice of largest tumour area in each of the three
planes, the tumour labels in colour over FLAIR, a legend, and (when the prediction carries
region probabilities) the uncertainty map over the same slices.

The report embeds it; ``bratseg predict --figures DIR`` and the README use it as a PNG.
Colours, orientation and grey windows are :mod:`bratseg.reporting.render`'s, so the panel looks
like the demo. Slices are shown at their physical aspect ratio (voxel spacing).

:func:`draw_target_lesions` draws, with matplotlib, each RANO target lesion of a
:class:`~bratseg.measurement.rano.Measurement` on its axial slice over T1ce with its two
diameters, for the report's measurement page.

Example:
    >>> import numpy as np
    >>> labels = np.zeros((8, 8, 6), dtype=np.uint8); labels[2:4, 5, 1:5] = 2
    >>> key_slices(labels)
    {'axial': 1, 'coronal': 5, 'sagittal': 2}
    >>> display_position((2.0, 5.0, 1.0), "axial", labels.shape, np.diag([-1.0, -1.0, 1.0, 1.0]))  # BraTS: LPS
    (5.0, 2.0)
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from bratseg.data.io import atomic_write_bytes
from bratseg.data.labels import REGION_LABELS
from bratseg.reporting.render import (
    AXES,
    best_slice,
    display_slice,
    legend_entries,
    orientation,
    render_overlay,
    to_png,
    voxel_axis,
)

if TYPE_CHECKING:
    from bratseg.data.io import CaseVolumes
    from bratseg.inference.prediction import Prediction
    from bratseg.measurement.rano import Measurement

UNCERTAINTY_COLOUR = (255, 0, 255)  # magenta: apart from every tumour label's colour
_UNCERTAINTY_ALPHA = 0.9  # opacity at 1 bit; fades to the grey scan at 0
_GAP = 8  # pixels between panels


def key_slices(labels: np.ndarray, affine: np.ndarray | None = None, brain: np.ndarray | None = None) -> dict[str, int]:
    """Voxel index of the slice of largest tumour area along each of ``axial``, ``coronal``
    and ``sagittal``; where there is no tumour, the middle of ``brain`` (a mask) or of the
    volume. Voxel axes come from ``affine`` (without one, 0/1/2 are sagittal/coronal/axial,
    as in BraTS files)."""
    return {axis: best_slice(labels, axis, affine=affine, brain=brain) for axis in AXES}


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1 has only the fixed bitmap font
        return ImageFont.load_default()


def display_spacing(axis: str, affine: np.ndarray, spacing: tuple[float, float, float]) -> tuple[float, float]:
    """(row, column) spacing in mm of an ``axis`` slice as :mod:`~bratseg.reporting.render`
    orients it: rows follow the remaining voxel axis of higher RAS world axis, columns the other.
    The PDFs draw slices at this aspect ratio."""
    ornt = orientation(affine)
    world = {"sagittal": 0, "coronal": 1, "axial": 2}[axis]
    rest = [a for a in range(3) if int(ornt[a, 0]) != world]
    low, high = sorted(rest, key=lambda a: int(ornt[a, 0]))
    return spacing[high], spacing[low]


def _to_physical(image: np.ndarray, row_mm: float, col_mm: float, scale: int) -> np.ndarray:
    """``image`` resized so that a pixel is ``min(spacing) / scale`` mm along both axes."""
    unit = min(row_mm, col_mm) / scale
    height = max(1, round(image.shape[0] * row_mm / unit))
    width = max(1, round(image.shape[1] * col_mm / unit))
    if (height, width) == image.shape[:2]:
        return image
    return np.asarray(Image.fromarray(image).resize((width, height), Image.Resampling.NEAREST))


def _uncertainty_slice(grey: np.ndarray, uncertainty: np.ndarray) -> np.ndarray:
    """A grey RGB slice with the uncertainty (0..1) blended in :data:`UNCERTAINTY_COLOUR`."""
    alpha = (_UNCERTAINTY_ALPHA * np.clip(uncertainty, 0.0, 1.0))[..., None]
    rgb = (1.0 - alpha) * grey.astype(np.float32) + alpha * np.asarray(UNCERTAINTY_COLOUR, dtype=np.float32)
    return np.round(rgb).astype(np.uint8)


def _brain_box(brain_slice: np.ndarray, margin: int = 4) -> tuple[slice, slice]:
    """Rows and columns of a displayed slice that hold brain, plus ``margin`` pixels."""
    rows, cols = np.flatnonzero(brain_slice.any(axis=1)), np.flatnonzero(brain_slice.any(axis=0))
    if rows.size == 0:
        return slice(None), slice(None)
    h, w = brain_slice.shape
    return (
        slice(max(0, rows[0] - margin), min(h, rows[-1] + margin + 1)),
        slice(max(0, cols[0] - margin), min(w, cols[-1] + margin + 1)),
    )


def _row(images: list[np.ndarray], captions: list[str], font_size: int) -> np.ndarray:
    """``images`` side by side on black, centred vertically under a caption line each."""
    caption_height = font_size + 8
    height = max(image.shape[0] for image in images) + caption_height
    pieces = []
    for i, image in enumerate(images):
        pad = height - caption_height - image.shape[0]
        column = np.zeros((height, image.shape[1], 3), dtype=np.uint8)
        top = caption_height + pad // 2
        column[top : top + image.shape[0]] = image
        picture = Image.fromarray(column)
        ImageDraw.Draw(picture).text((2, 3), captions[i], fill=(235, 235, 235), font=_font(font_size))
        if i:
            pieces.append(np.zeros((height, _GAP, 3), dtype=np.uint8))
        pieces.append(np.asarray(picture))
    return np.concatenate(pieces, axis=1)


def _label_key(width: int, font_size: int) -> np.ndarray:
    """A dark strip naming each BraTS label in its overlay colour."""
    entries = legend_entries("whole tumour")
    strip = Image.new("RGB", (width, font_size + 12), (24, 24, 24))
    draw = ImageDraw.Draw(strip)
    x = 6
    font = _font(font_size)
    for name, colour in entries:
        text = f"{name} (label {', '.join(str(v) for v in REGION_LABELS[name])})"
        draw.rectangle((x, 6, x + font_size, 6 + font_size), fill=colour)
        draw.text((x + font_size + 6, 5), text, fill=(235, 235, 235), font=font)
        x += font_size + 6 + int(draw.textlength(text, font=font)) + 3 * font_size
    return np.asarray(strip)


def _uncertainty_key(width: int, font_size: int) -> np.ndarray:
    """A dark strip with a 0-to-1-bit colour ramp of the uncertainty overlay."""
    strip = Image.new("RGB", (width, font_size + 12), (24, 24, 24))
    draw = ImageDraw.Draw(strip)
    ramp_width = 10 * font_size
    for x in range(ramp_width):
        colour = _uncertainty_slice(np.full((1, 1, 3), 60, np.uint8), np.array([[x / (ramp_width - 1)]]))[0, 0]
        draw.line((6 + x, 6, 6 + x, 6 + font_size), fill=tuple(int(c) for c in colour))
    text = "uncertainty: 0 (sure) to 1 bit (a region's probability is 0.5)"
    draw.text((ramp_width + 14, 5), text, fill=(235, 235, 235), font=_font(font_size))
    return np.asarray(strip)


def key_slice_image(prediction: Prediction, scale: int = 2, uncertainty: bool | None = None) -> np.ndarray:
    """The key-slice panel as an RGB ``uint8`` array.

    Row 1: axial, coronal and sagittal slices of largest tumour area with the labels over
    FLAIR (the first modality when there is no FLAIR) and the label legend. Row 2, with
    ``uncertainty`` (default: when the prediction has probabilities): the uncertainty map of
    :func:`bratseg.inference.confidence.uncertainty_map` over the same slices, with its key.
    ``scale`` enlarges the slices (nearest neighbour) for legibility.
    """
    volumes = prediction.volumes
    labels = prediction.labels
    base = "flair" if "flair" in volumes.images else next(iter(volumes.images))
    slices = key_slices(labels, volumes.affine, brain=volumes.images[base] != 0)
    if uncertainty is None:
        uncertainty = prediction.probabilities is not None
    umap = None
    if uncertainty:
        from bratseg.inference.confidence import uncertainty_map

        umap = uncertainty_map(prediction)
    ornt = orientation(volumes.affine)
    brain = volumes.images[base] != 0
    no_labels = np.zeros_like(labels)
    font_size = 9 + 3 * scale
    top, bottom, captions = [], [], []
    for axis, index in slices.items():
        row_mm, col_mm = display_spacing(axis, volumes.affine, volumes.spacing)
        box = _brain_box(display_slice(brain, axis, index, ornt))
        overlay = render_overlay(volumes, labels, "whole tumour", axis, index, base=base)[box]
        top.append(_to_physical(overlay, row_mm, col_mm, scale))
        captions.append(f"{axis} {index}")
        if umap is not None:
            grey = render_overlay(volumes, no_labels, "whole tumour", axis, index, base=base)[box]
            heat = _uncertainty_slice(grey, display_slice(umap, axis, index, ornt)[box])
            bottom.append(_to_physical(heat, row_mm, col_mm, scale))
    first = _row(top, captions, font_size)
    parts = [first, _label_key(first.shape[1], font_size)]
    if bottom:
        parts += [_row(bottom, captions, font_size), _uncertainty_key(first.shape[1], font_size)]
    return np.concatenate(parts, axis=0)


def key_slice_panel(prediction: Prediction, path: str | Path, scale: int = 2, uncertainty: bool | None = None) -> Path:
    """Write :func:`key_slice_image` to ``path`` as a PNG (atomically) and return the path."""
    path = Path(path)
    data = to_png(key_slice_image(prediction, scale=scale, uncertainty=uncertainty))
    atomic_write_bytes(path, lambda tmp: tmp.write_bytes(data))
    return path


# --------------------------------------------------------------------------------------------
# RANO target lesions
# --------------------------------------------------------------------------------------------

LONGEST_COLOUR = "#00e5ff"  # cyan and magenta: apart from every label colour and each other
PERPENDICULAR_COLOUR = "#ff3df5"


def display_position(
    point: tuple[float, float, float], axis: str, shape: tuple[int, ...], affine: np.ndarray | None = None
) -> tuple[float, float]:
    """(row, column) of voxel coordinates ``point`` (i, j, k) in the picture of its ``axis``
    slice as :func:`bratseg.reporting.render.render_overlay` draws it (pixel centres at whole
    numbers), so that lines measured on the array can be drawn over the picture."""
    ornt = orientation(affine)
    ax = voxel_axis(axis, ornt)
    flat = tuple(1 if a == ax else int(n) for a, n in enumerate(shape[:3]))
    position = [0.0, 0.0]
    for a in (a for a in range(3) if a != ax):
        # Where each index of voxel axis ``a`` lands: the picture only transposes and flips.
        ramp = np.broadcast_to(
            np.arange(shape[a], dtype=np.float64).reshape([-1 if b == a else 1 for b in range(3)]), flat
        )
        shown = display_slice(ramp, axis, 0, ornt)
        origin = shown[0, 0]
        if shown.shape[0] > 1 and shown[1, 0] != origin:
            position[0] = float((point[a] - origin) / (shown[1, 0] - origin))
        elif shown.shape[1] > 1 and shown[0, 1] != origin:
            position[1] = float((point[a] - origin) / (shown[0, 1] - origin))
    return position[0], position[1]


def draw_target_lesions(
    figure, rect: tuple[float, float, float, float], volumes: CaseVolumes, labels: np.ndarray, measurement: Measurement
) -> int:
    """Draw each target lesion of ``measurement`` (measured on ``labels``, on ``volumes``'
    grid) into ``figure`` (a matplotlib Figure) side by side within ``rect`` (left, bottom,
    width, height as figure fractions): its axial slice over T1ce (FLAIR without one) with
    the labels in colour, zoomed on the lesion, its longest diameter in cyan and the
    perpendicular one in magenta. Returns how many lesions were drawn (none when the
    measurement's axial axis is not the one the pictures slice along)."""
    targets = [lesion for lesion in measurement.lesions if lesion.target]
    ornt = orientation(volumes.affine)
    if not targets or voxel_axis("axial", ornt) != measurement.axial_axis:
        return 0
    base = "t1ce" if "t1ce" in volumes.images else next(iter(volumes.images))
    row_mm, col_mm = display_spacing("axial", volumes.affine, volumes.spacing)
    left, bottom, width, height = rect
    slot = width / len(targets)
    for number, lesion in enumerate(targets, start=1):
        axes = figure.add_axes((left + (number - 1) * slot + 0.01, bottom, slot - 0.02, height))
        picture = render_overlay(volumes, labels, "whole tumour", "axial", lesion.slice, base=base)
        axes.imshow(picture, interpolation="nearest", aspect=row_mm / col_mm)
        ends = []
        for diameter, colour in ((lesion.longest, LONGEST_COLOUR), (lesion.perpendicular, PERPENDICULAR_COLOUR)):
            (r0, c0), (r1, c1) = (
                display_position(p, "axial", labels.shape, volumes.affine) for p in (diameter.start, diameter.end)
            )
            axes.plot([c0, c1], [r0, r1], color=colour, linewidth=1.6, marker="o", markersize=2.5)
            ends += [(r0, c0), (r1, c1)]
        # Zoomed on the lesion, with room around it for context, square in mm.
        rows, cols = zip(*ends)
        half_mm = max(25.0, 0.8 * lesion.longest_mm)
        centre_r, centre_c = (min(rows) + max(rows)) / 2, (min(cols) + max(cols)) / 2
        axes.set_xlim(centre_c - half_mm / col_mm, centre_c + half_mm / col_mm)
        axes.set_ylim(centre_r + half_mm / row_mm, centre_r - half_mm / row_mm)
        axes.set_xticks([])
        axes.set_yticks([])
        axes.set_title(
            f"Target {number}: axial slice {lesion.slice}\n"
            f"{lesion.longest_mm:.1f} x {lesion.perpendicular_mm:.1f} mm = {lesion.product_mm2:.0f} mm²",
            fontsize=8,
        )
    return len(targets)
