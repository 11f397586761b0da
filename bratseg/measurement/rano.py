"""RANO measurements of one label map: the enhancing lesions' perpendicular diameters, the
target lesions' sum of products (SPD) and the region volumes.

How the figures are made (RANO 2.0, Wen et al., J Clin Oncol 2023, for the bidimensional part):

* **Lesions** are the 3-D connected components of the enhancing tumour (label 4), with
  26-connectivity (voxels touching by a corner belong to one lesion, as in the BraTS 2023
  lesion-wise evaluation).
* **Axial slices** are the planes of the voxel axis closest to the world's inferior-superior
  axis (read from the affine), so any orientation works, oblique acquisitions included.
* **Diameters** are measured edge to edge on the voxels' squares, in mm from the affine (so
  anisotropic and sheared grids are measured correctly), on the lesion's slice outline with
  any hole it encloses filled (a ring-enhancing lesion is measured across its necrotic centre,
  as readers do). The *longest* diameter is the longest distance between two vertices of the
  outline's convex hull. The *perpendicular* one is the longest chord exactly at right angles
  to it, from outline edge to outline edge (computed exactly, no angular tolerance: see
  :func:`_perpendicular`).
* Each lesion is measured on the axial slice where the product of the two is largest.
* **Measurable**: both diameters at least 10 mm, and the lesion seen on at least two axial
  slices. On slices thicker than 5 mm a measurable lesion must be at least twice the slice
  thickness across (RANO); such a scan gets a note.
* **Targets**: the (up to) 3 measurable lesions with the largest products; ``spd_mm2`` is the
  sum of their products (0 when there is none).
* **Volumes**: the regions of :func:`bratseg.data.labels.region_volumes`, same keys.

Example: a 20 x 12 mm block of enhancing tumour on three 1 mm slices is one measurable lesion.

    >>> import numpy as np
    >>> labels = np.zeros((40, 40, 10), np.uint8); labels[10:30, 14:26, 4:7] = 4
    >>> m = measure(labels, np.eye(4))
    >>> lesion = m.lesions[0]
    >>> round(lesion.longest_mm, 1), round(lesion.perpendicular_mm, 1), lesion.measurable, round(m.spd_mm2, 1)
    (23.3, 14.0, True, 326.4)
    >>> m.axial_axis, m.volumes_cm3["enhancing tumour"]
    (2, 0.72)

The longest diameter of a 20 x 12 mm rectangle is its diagonal (23.3 mm); the longest chord
at right angles to the diagonal crosses from one long side to the other: 12 x 23.3 / 20 = 14.0 mm.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
from scipy import ndimage
from scipy.spatial import ConvexHull, QhullError

from bratseg.errors import InvalidCaseError

ENHANCING = 4  # BraTS 2017-2020 label of the enhancing tumour
MEASURABLE_MM = 10.0
"""RANO's smallest measurable diameter (both diameters)."""
THICK_SLICE_MM = 5.0
"""Slices thicker than this make the measurable size twice the slice thickness (RANO)."""
MIN_SLICES = 2
"""A measurable lesion is seen on at least this many axial slices (RANO)."""
MAX_TARGETS = 3
"""RANO 2.0 target lesions: up to three measurable enhancing lesions."""
_CONNECTIVITY = np.ones((3, 3, 3), dtype=bool)  # 26-connectivity
_FOUR = ndimage.generate_binary_structure(2, 1)


@dataclass(frozen=True)
class Diameter:
    """One measured diameter: its ends in voxel coordinates (i, j, k) of the measured label
    map's array (corners of voxels, so half-integers in-plane) and its length in mm."""

    start: tuple[float, float, float]
    end: tuple[float, float, float]
    length_mm: float

    def to_json(self) -> dict:
        return {
            "start": [round(v, 2) for v in self.start],
            "end": [round(v, 2) for v in self.end],
            "length_mm": round(self.length_mm, 1),
        }


@dataclass(frozen=True)
class Lesion:
    """One enhancing lesion (module docstring for how it is measured)."""

    longest_mm: float
    perpendicular_mm: float
    product_mm2: float
    volume_cm3: float
    measurable: bool
    slice: int
    target: bool
    longest: Diameter
    perpendicular: Diameter
    slices_spanned: int = 1
    component: int = 0
    """The lesion's label in :func:`enhancing_components` of the measured map."""

    def to_json(self) -> dict:
        """The contract's keys, plus both diameters' ends (``longest``, ``perpendicular``) and
        how many axial slices the lesion spans."""
        return {
            "longest_mm": round(self.longest_mm, 1),
            "perpendicular_mm": round(self.perpendicular_mm, 1),
            "product_mm2": round(self.product_mm2, 1),
            "volume_cm3": round(self.volume_cm3, 3),
            "measurable": self.measurable,
            "slice": self.slice,
            "target": self.target,
            "slices_spanned": self.slices_spanned,
            "longest": self.longest.to_json(),
            "perpendicular": self.perpendicular.to_json(),
        }


@dataclass(frozen=True)
class Measurement:
    """The RANO measurements of one label map (module docstring)."""

    spd_mm2: float
    lesions: list[Lesion]
    volumes_cm3: dict[str, float]
    axial_axis: int
    slice_thickness_mm: float
    notes: list[str] = field(default_factory=list)

    @property
    def targets(self) -> list[Lesion]:
        return [lesion for lesion in self.lesions if lesion.target]

    @property
    def measurable_disease(self) -> bool:
        """Whether at least one lesion is measurable (RANO's measurable disease)."""
        return any(lesion.measurable for lesion in self.lesions)

    def to_json(self) -> dict:
        return {
            "spd_mm2": round(self.spd_mm2, 1),
            "lesions": [lesion.to_json() for lesion in self.lesions],
            "volumes_cm3": dict(self.volumes_cm3),
            "target_count": len(self.targets),
            "measurable_disease": self.measurable_disease,
            "axial_axis": self.axial_axis,
            "slice_thickness_mm": round(self.slice_thickness_mm, 2),
            "notes": list(self.notes),
        }


def axial_axis_of(affine: np.ndarray) -> int:
    """The voxel axis whose direction is closest to the world's inferior-superior axis.

    >>> import numpy as np
    >>> axial_axis_of(np.eye(4)), axial_axis_of(np.array([[0, 0, 1, 0], [1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 0, 1.0]]))
    (2, 1)
    """
    directions = np.asarray(affine, dtype=np.float64)[:3, :3]
    cosines = np.abs(directions[2]) / np.linalg.norm(directions, axis=0)
    return int(np.argmax(cosines))


def _slice_geometry(affine: np.ndarray, axis: int) -> tuple[tuple[int, int], np.ndarray, float, float]:
    """In-plane axes, the 2 x 2 matrix taking in-plane voxel offsets to orthonormal mm
    coordinates of the slice plane, the slice spacing (distance between slice planes) and the
    angle (degrees) of the slice normal from the inferior-superior axis."""
    matrix = np.asarray(affine, dtype=np.float64)[:3, :3]
    in_plane = tuple(a for a in range(3) if a != axis)
    columns = matrix[:, list(in_plane)]
    _, to_mm = np.linalg.qr(columns)  # columns = Q @ to_mm, Q orthonormal: |columns @ x| = |to_mm @ x|
    normal = np.cross(columns[:, 0], columns[:, 1])
    spacing = abs(float(np.linalg.det(matrix))) / float(np.linalg.norm(normal))
    tilt = math.degrees(math.acos(min(1.0, abs(normal[2]) / float(np.linalg.norm(normal)))))
    return in_plane, to_mm, spacing, tilt  # type: ignore[return-value]


def _outline_pixels(mask: np.ndarray) -> np.ndarray:
    """Voxel-coordinate centres (n x 2) of the outline pixels of a 2-D mask, holes filled: the
    pixels with an edge on the outline, which alone bound every chord and every distance."""
    filled = ndimage.binary_fill_holes(mask)
    outline = filled & ~ndimage.binary_erosion(filled, _FOUR, border_value=0)
    return np.argwhere(outline).astype(np.float64)


# The four corners of a pixel, in order around it, as offsets from its centre (voxel units).
_CORNERS = np.array([[-0.5, -0.5], [0.5, -0.5], [0.5, 0.5], [-0.5, 0.5]])


def _longest(points_mm: np.ndarray) -> tuple[int, int, float]:
    """Indices of the two points farthest apart and their distance."""
    try:
        candidates = ConvexHull(points_mm).vertices
    except (QhullError, ValueError):  # degenerate outline: compare all points
        candidates = np.arange(len(points_mm))
    hull = points_mm[candidates]
    distances = np.linalg.norm(hull[:, None, :] - hull[None, :, :], axis=-1)
    a, b = np.unravel_index(int(np.argmax(distances)), distances.shape)
    return int(candidates[a]), int(candidates[b]), float(distances[a, b])


def _perpendicular(squares_mm: np.ndarray, direction: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """The longest chord at right angles to ``direction`` (unit vector, mm) across the outline
    pixels' squares (``n x 4 x 2`` corners in mm): its two ends (mm) and its length.

    Along the longest diameter (coordinate s), the lesion's extent across it (t) at s is the
    largest minus the smallest t where the line {s} meets a square's edge. That extent is
    piecewise linear in s and only peaks where some corner lies (between corners it is
    linear, and where the extreme switches square it has a valley), so evaluating it at every
    corner's s gives the exact longest chord.
    """
    across = np.array([-direction[1], direction[0]])
    s = squares_mm @ direction  # n x 4
    t = squares_mm @ across
    s_a, s_b = s.ravel(), np.roll(s, -1, axis=1).ravel()  # the edges: corner k to corner k+1
    t_a, t_b = t.ravel(), np.roll(t, -1, axis=1).ravel()
    span = s_b - s_a
    usable = np.abs(span) > 1e-9  # an edge along the line adds nothing its end corners do not
    s_a, s_b, t_a, t_b, span = s_a[usable], s_b[usable], t_a[usable], t_b[usable], span[usable]
    positions = np.unique(np.round(s.ravel(), 9))
    best = (-1.0, 0.0, 0.0, 0.0)
    for start in range(0, len(positions), 256):  # chunks keep the position x edge matrix small
        at = positions[start : start + 256, None]
        fraction = (at - s_a) / span
        hits = (fraction >= -1e-9) & (fraction <= 1 + 1e-9)
        t_hit = t_a + np.clip(fraction, 0, 1) * (t_b - t_a)
        top = np.where(hits, t_hit, -np.inf).max(axis=1)
        bottom = np.where(hits, t_hit, np.inf).min(axis=1)
        extent = top - bottom
        k = int(np.argmax(extent))
        if extent[k] > best[0]:
            best = (float(extent[k]), float(positions[start + k]), float(bottom[k]), float(top[k]))
    length, where, bottom, top = best
    return where * direction + bottom * across, where * direction + top * across, max(length, 0.0)


def _measure_component(
    component: np.ndarray, axis: int, origin: tuple[int, int, int], to_mm: np.ndarray
) -> tuple[float, float, int, Diameter, Diameter, int]:
    """Longest and perpendicular diameters of one lesion (its mask in a bounding box whose
    corner is ``origin``) on the slice where their product is largest."""
    in_plane = [a for a in range(3) if a != axis]
    slices = np.moveaxis(component, axis, 0)
    present = [z for z in range(slices.shape[0]) if slices[z].any()]
    candidates = []
    for z in present:
        squares = _outline_pixels(slices[z])[:, None, :] + _CORNERS[None]  # n x 4 x 2, voxel units
        corners = np.unique(squares.reshape(-1, 2), axis=0)
        points = corners @ to_mm.T
        a, b, length = _longest(points)
        candidates.append((length, z, squares, corners, points, a, b))
    candidates.sort(key=lambda c: -c[0])  # longest first: later slices can be skipped
    best: tuple | None = None
    for length, z, squares, corners, points, a, b in candidates:
        if best is not None and length * length <= best[0]:
            break  # the perpendicular is never longer than the longest: no better product here
        direction = (points[b] - points[a]) / length
        p_start, p_end, perpendicular = _perpendicular(squares @ to_mm.T, direction)
        product = length * perpendicular
        if best is None or product > best[0]:
            best = (product, length, perpendicular, z, corners[a], corners[b], p_start, p_end)
    assert best is not None
    _, length, perpendicular, z, l_start, l_end, p_start, p_end = best
    from_mm = np.linalg.inv(to_mm)

    def voxel(point_in_plane: np.ndarray) -> tuple[float, float, float]:
        out = [0.0, 0.0, 0.0]
        out[axis] = float(z + origin[axis])
        for position, a in enumerate(in_plane):
            out[a] = float(point_in_plane[position] + origin[a])
        return (out[0], out[1], out[2])

    longest = Diameter(voxel(l_start), voxel(l_end), length)
    across = Diameter(voxel(from_mm @ p_start), voxel(from_mm @ p_end), perpendicular)
    return length, perpendicular, z + origin[axis], longest, across, len(present)


def enhancing_components(labels: np.ndarray) -> tuple[np.ndarray, int]:
    """The enhancing lesions of a 0/1/2/4 label map: 3-D connected components of label 4
    (26-connectivity), numbered from 1, and their count."""
    components = np.zeros(labels.shape, dtype=np.int32)
    in_box, count, box = _components_in_box(labels)
    components[box] = in_box
    return components, count


def _components_in_box(labels: np.ndarray) -> tuple[np.ndarray, int, tuple[slice, ...]]:
    """The components in the enhancing voxels' box (a whole map costs several times more)."""
    enhancing = labels == ENHANCING
    spans = [np.flatnonzero(enhancing.any(axis=tuple(a for a in range(3) if a != axis))) for axis in range(3)]
    box = tuple(slice(int(span[0]), int(span[-1]) + 1) if span.size else slice(0, 0) for span in spans)
    components, count = ndimage.label(enhancing[box], structure=_CONNECTIVITY)
    return components.astype(np.int32, copy=False), int(count), box


def measurable_size_mm(slice_thickness_mm: float) -> float:
    """The smallest measurable diameter on slices this thick (RANO: 10 mm, or twice the
    slice thickness for slices thicker than 5 mm).

    >>> measurable_size_mm(1.0), measurable_size_mm(6.5)
    (10.0, 13.0)
    """
    return MEASURABLE_MM if slice_thickness_mm <= THICK_SLICE_MM else max(MEASURABLE_MM, 2 * slice_thickness_mm)


def measure(labels: np.ndarray, affine: np.ndarray) -> Measurement:
    """RANO measurements of a label map in the BraTS 2017-2020 scheme (0/1/2/4) on the grid
    given by ``affine`` (voxel to world, mm). Raises :class:`InvalidCaseError` for anything
    that is not such a label map."""
    from bratseg.data.geometry import geometry_problem, voxel_sizes
    from bratseg.data.labels import volumes_from_counts

    labels = np.asarray(labels)
    affine = np.asarray(affine, dtype=np.float64)
    if labels.ndim != 3:
        raise InvalidCaseError(None, f"a label map must be 3-D, got shape {labels.shape}")
    problem = geometry_problem(labels.shape, affine)
    if problem is not None:
        raise InvalidCaseError(None, problem)
    if labels.dtype != np.uint8:
        if not np.issubdtype(labels.dtype, np.integer) and not np.array_equal(labels, np.rint(labels)):
            raise InvalidCaseError(None, "label values are not integers: not a label map")
        if labels.min() < 0 or labels.max() > 255:
            raise InvalidCaseError(None, "label values outside 0/1/2/4 (BraTS 2017-2020 scheme)")
        labels = labels.astype(np.uint8)
    counts = np.bincount(labels.ravel(), minlength=5)  # the values' check and the volumes
    present = np.flatnonzero(counts)
    unexpected = sorted(set(present.tolist()) - {0, 1, 2, 4})
    if unexpected:
        raise InvalidCaseError(None, f"label values {unexpected} are not in the BraTS 2017-2020 scheme [0, 1, 2, 4]")

    axis = axial_axis_of(affine)
    _, to_mm, thickness, tilt = _slice_geometry(affine, axis)
    voxel_cm3 = abs(float(np.linalg.det(affine[:3, :3]))) / 1000.0
    min_size = measurable_size_mm(thickness)
    components, count, within = _components_in_box(labels)
    lesions = []
    for index, box in enumerate(ndimage.find_objects(components) if count else [], start=1):
        if box is None:
            continue
        mask = components[box] == index
        origin = tuple(b.start + w.start for b, w in zip(box, within))
        length, perpendicular, slice_index, longest, across, spanned = _measure_component(mask, axis, origin, to_mm)
        measurable = length >= min_size and perpendicular >= min_size and spanned >= MIN_SLICES
        volume = int(mask.sum()) * voxel_cm3
        product = length * perpendicular
        lesions.append(
            Lesion(
                length, perpendicular, product, volume, measurable, slice_index, False, longest, across, spanned, index
            )
        )
    lesions.sort(key=lambda lesion: (-lesion.product_mm2, -lesion.volume_cm3))
    targets = [i for i, lesion in enumerate(lesions) if lesion.measurable][:MAX_TARGETS]
    for i in targets:
        lesions[i] = replace(lesions[i], target=True)
    spd = float(sum(lesion.product_mm2 for lesion in lesions if lesion.target))
    notes = _notes(lesions, thickness, tilt, min_size)
    volumes = volumes_from_counts(counts, tuple(float(s) for s in voxel_sizes(affine)))
    return Measurement(spd, lesions, volumes, axis, thickness, notes)


def _notes(lesions: list[Lesion], thickness: float, tilt: float, min_size: float) -> list[str]:
    notes = []
    if thickness > THICK_SLICE_MM:
        notes.append(
            f"thick slices ({thickness:.1f} mm, more than {THICK_SLICE_MM:g} mm): a lesion is measurable only when "
            f"both diameters are at least {min_size:.1f} mm (twice the slice thickness, RANO)"
        )
    if tilt > 20:
        notes.append(f"the axial slices are {tilt:.0f} degrees oblique to the inferior-superior axis")
    if not lesions:
        notes.append("no enhancing tumour: no lesion to measure (SPD 0)")
    elif not any(lesion.measurable for lesion in lesions):
        notes.append(f"no measurable enhancing lesion (both diameters >= {min_size:g} mm on >= {MIN_SLICES} slices)")
    measurable = sum(lesion.measurable for lesion in lesions)
    if measurable > MAX_TARGETS:
        notes.append(f"{measurable} measurable lesions: the {MAX_TARGETS} largest are the targets")
    return notes


def measure_file(path: str | Path, scheme: str = "auto") -> Measurement:
    """RANO measurements of a label map file (NIfTI, any grid and orientation) in the BraTS
    2017-2020 (0/1/2/4) or 2023 (0/1/2/3) scheme; ``auto`` tells them apart from the file name
    or the values. Diameter ends are voxel coordinates of the file's own array."""
    from bratseg.data.io import load_volume
    from bratseg.data.label_schemes import SCHEME_CHOICES, to_internal_labels
    from bratseg.data.labels import to_brats2020

    if scheme not in SCHEME_CHOICES:
        raise InvalidCaseError(path, f"unknown label scheme {scheme!r}; choose one of {list(SCHEME_CHOICES)}")
    volume = load_volume(path, dtype=np.float32)
    low, high = float(volume.data.min()), float(volume.data.max())
    if low < 0 or high > ENHANCING:  # an image given for a label map, most likely
        raise InvalidCaseError(path, f"values from {low:g} to {high:g}: not a BraTS label map (0/1/2/4 or 0/1/2/3)")
    try:
        internal, _ = to_internal_labels(volume.data, scheme, volume.path)
    except InvalidCaseError as exc:  # its hint names the evaluate command's options
        raise InvalidCaseError(path, exc.problem.replace("--ref-scheme / --pred-scheme", "--scheme")) from None
    try:
        return measure(to_brats2020(internal), volume.affine)
    except InvalidCaseError as exc:
        raise InvalidCaseError(path, exc.problem) from None
