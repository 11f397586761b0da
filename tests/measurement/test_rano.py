"""RANO measurements of one label map (:mod:`bratseg.measurement.rano`) and ``bratseg measure``.

Real expert labels are checked against an independent brute-force computation (every pair of
voxel corners for the longest diameter, the lesion's slice sampled densely along lines at
right angles to it for the perpendicular one); synthetic lesions of known shape give their
known figures; a reoriented, finer or rotated copy of the same label map gives the same ones.
"""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage

from bratseg.cli import main
from bratseg.data.io import load_volume
from bratseg.data.labels import region_volumes
from bratseg.measurement import measure, measure_file

CONTRACT_LESION_KEYS = {"longest_mm", "perpendicular_mm", "product_mm2", "volume_cm3", "measurable", "slice", "target"}


def _ellipse_labels(
    shape: tuple[int, int, int],
    spacing: tuple[float, float, float],
    lesions: list[tuple[tuple[float, float], float, float, float, tuple[int, int]]],
) -> np.ndarray:
    """Enhancing elliptic cylinders: (centre mm, semi-axis a, semi-axis b, angle deg, slices)."""
    labels = np.zeros(shape, np.uint8)
    x, y = np.meshgrid(np.arange(shape[0]) * spacing[0], np.arange(shape[1]) * spacing[1], indexing="ij")
    for (cx, cy), a, b, angle, (z0, z1) in lesions:
        c, s = np.cos(np.radians(angle)), np.sin(np.radians(angle))
        u, v = (x - cx) * c + (y - cy) * s, -(x - cx) * s + (y - cy) * c
        inside = (u / a) ** 2 + (v / b) ** 2 <= 1
        labels[:, :, z0:z1][inside] = 4
    return labels


def test_ellipse_of_known_axes_rotated_on_anisotropic_voxels():
    spacing = (0.6, 0.8, 1.0)
    labels = _ellipse_labels((100, 80, 8), spacing, [((30.0, 32.0), 15.0, 8.0, 30.0, (2, 6))])
    m = measure(labels, np.diag([*spacing, 1.0]))
    (lesion,) = m.lesions
    # Edge-to-edge on the voxels: within one voxel (0.8 mm) of the true axes 30 and 16 mm.
    assert lesion.longest_mm == pytest.approx(30.0, abs=0.8)
    assert lesion.perpendicular_mm == pytest.approx(16.0, abs=0.8)
    assert lesion.measurable and lesion.target and lesion.slices_spanned == 4
    assert m.spd_mm2 == pytest.approx(lesion.longest_mm * lesion.perpendicular_mm)
    assert lesion.volume_cm3 == pytest.approx(np.pi * 15 * 8 * 4 / 1000, rel=0.03)
    # The longest diameter runs along the ellipse's major axis (30 degrees), the other across it.
    ends = np.array([lesion.longest.start, lesion.longest.end])[:, :2] * spacing[:2]
    angle = np.degrees(np.arctan2(*(ends[1] - ends[0])[::-1])) % 180
    assert angle == pytest.approx(30.0, abs=5.0)  # the ends are voxel corners
    across = (np.array(lesion.perpendicular.end) - np.array(lesion.perpendicular.start))[:2] * spacing[:2]
    along = ends[1] - ends[0]
    assert abs(np.dot(across, along)) / (np.linalg.norm(across) * np.linalg.norm(along)) < 1e-9
    assert np.linalg.norm(across) == pytest.approx(lesion.perpendicular_mm)
    assert 2 <= lesion.slice < 6


def test_two_lesions_a_small_one_a_flat_one_and_only_three_targets():
    lesions = [
        ((30.0, 30.0), 12.0, 10.0, 0.0, (2, 8)),  # 24 x 20 mm
        ((80.0, 30.0), 9.0, 6.0, 90.0, (2, 8)),  # 18 x 12 mm
        ((30.0, 80.0), 4.0, 4.0, 0.0, (2, 8)),  # 8 mm across: under 10 mm, not measurable
        ((80.0, 80.0), 7.0, 7.0, 0.0, (4, 5)),  # 14 mm but on one slice only: not measurable
        ((130.0, 30.0), 6.5, 6.0, 0.0, (2, 8)),  # 13 x 12 mm: measurable, third target
        ((130.0, 80.0), 6.0, 5.5, 0.0, (2, 8)),  # 12 x 11 mm: measurable, fourth: not a target
    ]
    labels = _ellipse_labels((160, 110, 10), (1.0, 1.0, 1.0), lesions)
    m = measure(labels, np.eye(4))
    assert len(m.lesions) == 6
    figures = [(round(les.longest_mm), round(les.perpendicular_mm)) for les in m.lesions]
    expected_sizes = {(24, 20), (18, 12), (8, 8), (14, 14), (13, 12), (12, 11)}
    for got, want in zip(sorted(figures), sorted(expected_sizes)):
        assert abs(got[0] - want[0]) <= 1 and abs(got[1] - want[1]) <= 1
    products = [les.product_mm2 for les in m.lesions]
    assert products == sorted(products, reverse=True)  # largest first
    targets = [les for les in m.lesions if les.target]
    assert len(targets) == 3 and all(les.measurable for les in targets)
    assert m.spd_mm2 == pytest.approx(sum(les.product_mm2 for les in targets))
    not_measurable = [les for les in m.lesions if not les.measurable]
    assert len(not_measurable) == 2
    assert {les.slices_spanned for les in not_measurable} == {6, 1}
    assert any("3 largest are the targets" in note for note in m.notes)


def test_thick_slices_need_twice_their_thickness():
    # A 12 mm disc on two 6.5 mm slices: >= 10 mm, but RANO asks 13 mm on slices over 5 mm.
    labels = _ellipse_labels((60, 60, 8), (1.0, 1.0, 6.5), [((30.0, 30.0), 5.5, 5.5, 0.0, (3, 5))])
    m = measure(labels, np.diag([1.0, 1.0, 6.5, 1.0]))
    (lesion,) = m.lesions
    assert 10 <= lesion.perpendicular_mm <= lesion.longest_mm < 13 and lesion.slices_spanned == 2
    assert not lesion.measurable and m.spd_mm2 == 0
    # The same disc on 5 mm slices is measurable.
    assert measure(labels, np.diag([1.0, 1.0, 5.0, 1.0])).lesions[0].measurable
    assert m.slice_thickness_mm == pytest.approx(6.5)
    assert any("thick slices" in note for note in m.notes)


def test_no_enhancing_tumour_and_bad_maps():
    labels = np.zeros((20, 20, 20), np.uint8)
    labels[5:10, 5:10, 5:10] = 2
    m = measure(labels, np.eye(4))
    assert m.lesions == [] and m.spd_mm2 == 0 and m.volumes_cm3["whole tumour"] == pytest.approx(0.125)
    assert m.to_json()["lesions"] == [] and "no enhancing tumour" in m.notes[0]
    with pytest.raises(Exception, match="not in the BraTS 2017-2020 scheme"):
        measure(labels + 3, np.eye(4))


def _brute_force_diameters(slice_mask: np.ndarray, longest_only: bool = False) -> tuple[float, float]:
    """On a slice of 1 mm voxels (holes filled): the longest distance between two voxel
    corners (every pair compared), and the longest chord at right angles to it, found by
    sampling lines across the slice every 0.08 mm and points on them every 0.08 mm."""
    filled = ndimage.binary_fill_holes(slice_mask)
    centres = np.argwhere(filled).astype(float)
    offsets = np.array([[-0.5, -0.5], [-0.5, 0.5], [0.5, -0.5], [0.5, 0.5]])
    corners = np.unique((centres[:, None] + offsets).reshape(-1, 2), axis=0)
    longest, pair = 0.0, (0, 0)
    for start in range(0, len(corners), 1000):
        d = np.linalg.norm(corners[start : start + 1000, None] - corners[None], axis=-1)
        i, j = np.unravel_index(int(np.argmax(d)), d.shape)
        if d[i, j] > longest:
            longest, pair = float(d[i, j]), (start + i, j)
    if longest_only:
        return longest, longest
    u = (corners[pair[1]] - corners[pair[0]]) / longest
    v = np.array([-u[1], u[0]])
    step = 0.08
    s = np.arange((corners @ u).min(), (corners @ u).max() + step, step)
    t = np.arange((corners @ v).min(), (corners @ v).max() + step, step)
    index = np.rint(s[:, None, None] * u + t[None, :, None] * v).astype(int)  # lines of constant s
    valid = (index >= 0).all(-1) & (index[..., 0] < filled.shape[0]) & (index[..., 1] < filled.shape[1])
    inside = np.zeros(index.shape[:2], bool)
    inside[valid] = filled[index[valid][:, 0], index[valid][:, 1]]
    first = np.argmax(inside, axis=1)
    last = inside.shape[1] - 1 - np.argmax(inside[:, ::-1], axis=1)
    extent = np.where(inside.any(axis=1), t[last] - t[first], 0.0)
    return longest, float(extent.max())


@pytest.mark.parametrize("case_name", ["Brats18_2013_11_1", "Brats18_TCIA10_628_1"])
def test_expert_labels_against_brute_force(brats18_dir: Path, case_name: str):
    path = brats18_dir / case_name / f"{case_name}_seg.nii.gz"
    if not path.exists():
        pytest.skip(f"{path} not found")
    m = measure_file(path)
    volume = load_volume(path, dtype=np.float32)
    labels = volume.data.astype(np.uint8)
    assert m.axial_axis == 2 and m.slice_thickness_mm == pytest.approx(1.0)
    assert m.volumes_cm3 == region_volumes(labels, (1.0, 1.0, 1.0))
    components, count = ndimage.label(labels == 4, structure=np.ones((3, 3, 3)))
    assert len(m.lesions) == count
    assert sum(les.volume_cm3 for les in m.lesions) == pytest.approx(m.volumes_cm3["enhancing tumour"], abs=1e-6)
    lesion = m.lesions[0]
    # The largest lesion is the component holding the longest diameter's slice.
    start = np.array(lesion.longest.start)
    assert start[2] == lesion.slice
    on_slice = components[:, :, lesion.slice]
    ids = [i for i in np.unique(on_slice) if i and (components == i).sum() * 1e-3 == pytest.approx(lesion.volume_cm3)]
    assert ids, "no component of the lesion's volume on its slice"
    mask = on_slice == ids[0]
    longest, perpendicular = _brute_force_diameters(mask)
    assert lesion.longest_mm == pytest.approx(longest, abs=1e-6)
    assert lesion.perpendicular_mm == pytest.approx(perpendicular, abs=0.2)
    # No other slice of the lesion has a larger product (its longest squared bounds it).
    component = components == ids[0]
    for z in np.flatnonzero(component.any(axis=(0, 1))):
        extent = np.ptp(np.argwhere(component[:, :, z]), axis=0) + 1.0
        if float(extent @ extent) <= lesion.product_mm2:
            continue  # even the bounding box's diagonal squared is below the product
        other_longest, _ = _brute_force_diameters(component[:, :, z], longest_only=True)
        if other_longest**2 <= lesion.product_mm2:
            continue  # the perpendicular is never the longer one: this slice cannot beat the product
        other_longest, other_perpendicular = _brute_force_diameters(component[:, :, z])
        assert other_longest * other_perpendicular <= lesion.product_mm2 + 0.2 * other_longest
    assert m.to_json()["lesions"][0].keys() >= CONTRACT_LESION_KEYS


def test_same_figures_on_a_reoriented_finer_and_rotated_copy(brats18_case: Path, tmp_path: Path):
    path = brats18_case / f"{brats18_case.name}_seg.nii.gz"
    img = nib.load(str(path))
    labels = np.asarray(img.dataobj).astype(np.uint8)
    box = tuple(slice(max(int(i.min()) - 2, 0), int(i.max()) + 3) for i in np.nonzero(labels == 4))
    labels = labels[box]  # the tumour's box keeps the test fast
    reference = measure(labels, np.eye(4))
    figures = [(les.longest_mm, les.perpendicular_mm, les.volume_cm3) for les in reference.lesions[:5]]

    # Axes permuted and flipped (the S-I axis becomes the first array axis), written to disk.
    permuted = np.flip(np.transpose(labels, (2, 0, 1)), axis=1)
    affine = np.zeros((4, 4))
    affine[2, 0] = 1.0
    affine[0, 1] = -1.0
    affine[0, 3] = labels.shape[0] - 1
    affine[1, 2] = 1.0
    affine[3, 3] = 1.0
    nib.save(nib.Nifti1Image(permuted, affine), str(tmp_path / "permuted.nii.gz"))
    moved = measure_file(tmp_path / "permuted.nii.gz")
    assert moved.axial_axis == 0
    moved_figures = [(les.longest_mm, les.perpendicular_mm, les.volume_cm3) for les in moved.lesions[:5]]
    assert np.allclose(moved_figures, figures)
    # The same lesion's slice, counted along the new axis.
    assert moved.lesions[0].slice == reference.lesions[0].slice
    # Every voxel split in 2 x 2 in-plane (a 0.5 mm grid): the same squares, the same figures.
    finer = labels.repeat(2, 0).repeat(2, 1)
    m_finer = measure(finer, np.diag([0.5, 0.5, 1.0, 1.0]))
    finer_figures = [(les.longest_mm, les.perpendicular_mm, les.volume_cm3) for les in m_finer.lesions[:5]]
    assert np.allclose(finer_figures, figures)
    assert m_finer.volumes_cm3 == pytest.approx(reference.volumes_cm3, abs=2e-3)
    # The world rotated 15 degrees about the S-I axis and shifted: distances do not change.
    c, s = np.cos(np.radians(15)), np.sin(np.radians(15))
    rotated = np.array([[c, -s, 0, 10.0], [s, c, 0, -4.0], [0, 0, 1, 7.0], [0, 0, 0, 1]])
    m_rot = measure(labels, rotated)
    assert np.allclose([(les.longest_mm, les.perpendicular_mm) for les in m_rot.lesions[:5]], [f[:2] for f in figures])


def test_brats2023_scheme_multiple_metastases(data_dir: Path):
    path = data_dir / "metrics" / "BraTS-MET-00132-000" / "BraTS-MET-00132-000-seg.nii.gz"
    if not path.exists():
        pytest.skip(f"{path} not found")
    m = measure_file(path)
    seg = np.asarray(nib.load(str(path)).dataobj)
    _, count = ndimage.label(seg == 3, structure=np.ones((3, 3, 3)))  # ET is 3 in the 2023 scheme
    assert len(m.lesions) == count > 3
    assert sum(les.target for les in m.lesions) == 3
    assert m.spd_mm2 == pytest.approx(sum(les.product_mm2 for les in m.lesions[:3] if les.measurable))


def test_measure_cli(brats18_case: Path, tmp_path: Path, capsys):
    path = brats18_case / f"{brats18_case.name}_seg.nii.gz"
    assert main(["measure", str(path), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert {"spd_mm2", "lesions", "volumes_cm3"} <= out.keys()
    assert CONTRACT_LESION_KEYS <= out["lesions"][0].keys()
    assert out["volumes_cm3"].keys() == region_volumes(np.zeros((4, 4, 4), np.uint8), (1, 1, 1)).keys()
    assert main(["measure", str(path)]) == 0
    table = capsys.readouterr().out
    assert f"SPD {out['spd_mm2']:.1f} mm2" in table and "longest mm" in table
    # Bad input: an image instead of a label map, a missing file -> exit 2, one line naming the file.
    for bad in (brats18_case / f"{brats18_case.name}_flair.nii.gz", tmp_path / "missing.nii.gz"):
        assert main(["measure", str(bad)]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and bad.name in err
