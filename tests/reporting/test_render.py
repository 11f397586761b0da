"""Rendering: orientation from the affine, region colours, slice choice, legend, PNG."""

from __future__ import annotations

import io

import nibabel as nib
import numpy as np
import pytest
from PIL import Image

from bratseg.data.io import CaseVolumes, load_case
from bratseg.data.labels import to_brats2020
from bratseg.data.layout import case_from_folder
from bratseg.reporting.render import (
    AXES,
    LABEL_COLOURS,
    REGION_COLOURS,
    best_slice,
    draw_legend,
    render_inputs,
    render_overlay,
    slice_count,
    to_png,
)
from bratseg.serving.legend import legend_html

SHAPE = (10, 12, 8)  # distinct sizes so a swapped axis shows


def _volumes(flair: np.ndarray, t1ce: np.ndarray, affine: np.ndarray, label=None) -> CaseVolumes:
    header = nib.Nifti1Header()
    header.set_data_shape(flair.shape)
    return CaseVolumes("T", {"flair": flair, "t1ce": t1ce}, affine, header, label)


@pytest.fixture(scope="module")
def ras_case():
    """Random images and labels stored in RAS voxel order (identity affine)."""
    rng = np.random.default_rng(0)
    flair = rng.uniform(1, 100, SHAPE).astype(np.float32)
    t1ce = rng.uniform(1, 100, SHAPE).astype(np.float32)
    labels = rng.choice(np.array([0, 0, 0, 1, 2, 4], dtype=np.uint8), SHAPE)
    return flair, t1ce, labels


def _stored(arr: np.ndarray, how: str) -> np.ndarray:
    if how == "ras":
        return arr
    if how == "lps":  # how BraTS files store voxels
        return arr[::-1, ::-1, :]
    return np.transpose(arr, (2, 0, 1))  # "zxy": voxel axis 0 is superior, 1 right, 2 anterior


def _affine(how: str) -> np.ndarray:
    if how == "ras":
        return np.eye(4)
    if how == "lps":
        return np.array([[-1, 0, 0, SHAPE[0] - 1], [0, -1, 0, SHAPE[1] - 1], [0, 0, 1, 0], [0, 0, 0, 1]], float)
    return np.array([[0, 1, 0, 0], [0, 0, 1, 0], [1, 0, 0, 0], [0, 0, 0, 1]], float)


def _index(axis: str, ras_index: int, how: str) -> int:
    """The voxel index, in storage ``how``, of RAS slice ``ras_index`` along ``axis``."""
    n = SHAPE[{"sagittal": 0, "coronal": 1, "axial": 2}[axis]]
    flipped = how == "lps" and axis in ("sagittal", "coronal")
    return n - 1 - ras_index if flipped else ras_index


@pytest.mark.parametrize("axis", AXES)
@pytest.mark.parametrize("how", ["lps", "zxy"])
def test_picture_depends_on_anatomy_not_on_voxel_storage(ras_case, axis: str, how: str):
    flair, t1ce, labels = ras_case
    reference = render_overlay(_volumes(flair, t1ce, np.eye(4)), labels, "whole tumour", axis, 3)
    vols = _volumes(_stored(flair, how), _stored(t1ce, how), _affine(how))
    image = render_overlay(vols, _stored(labels, how), "whole tumour", axis, _index(axis, 3, how))
    np.testing.assert_array_equal(image, reference)
    assert slice_count(vols.shape, axis, vols.affine) == SHAPE[{"sagittal": 0, "coronal": 1, "axial": 2}[axis]]


@pytest.mark.parametrize(
    ("axis", "voxel", "corner"),
    [
        # axial: anterior up, patient's right on the viewer's left
        ("axial", (SHAPE[0] - 1, SHAPE[1] - 1, 4), (0, 0)),
        ("axial", (0, 0, 4), (SHAPE[1] - 1, SHAPE[0] - 1)),
        # coronal: superior up, patient's right on the left
        ("coronal", (SHAPE[0] - 1, 5, SHAPE[2] - 1), (0, 0)),
        # sagittal: superior up, anterior on the left
        ("sagittal", (4, SHAPE[1] - 1, SHAPE[2] - 1), (0, 0)),
        ("sagittal", (4, 0, 0), (SHAPE[2] - 1, SHAPE[1] - 1)),
    ],
)
def test_radiological_orientation(axis: str, voxel: tuple[int, int, int], corner: tuple[int, int]):
    """A tumour voxel at a known RAS position lands in the expected corner of the picture."""
    flair = np.full(SHAPE, 50, dtype=np.float32)
    labels = np.zeros(SHAPE, dtype=np.uint8)
    labels[voxel] = 2
    vols = _volumes(flair, flair, np.eye(4))
    index = best_slice(labels, axis)
    assert index == voxel[{"sagittal": 0, "coronal": 1, "axial": 2}[axis]]
    image = render_overlay(vols, labels, "EDEMA", axis, index)
    coloured = np.argwhere(np.ptp(image.astype(int), axis=2) > 0)
    assert [tuple(p) for p in coloured] == [corner]


def test_brats_axial_slice_is_the_transposed_voxel_slice(brats18_case):
    """Real BraTS (LPS-stored) case with its expert labels: colours exactly where the labels
    are in ``data[:, :, z].T``, each label in its own colour blended over the grey FLAIR."""
    vols = load_case(case_from_folder(brats18_case))
    labels = to_brats2020(vols.label)
    z = best_slice(labels, "axial", affine=vols.affine)
    assert z == int(np.argmax((labels != 0).sum(axis=(0, 1))))
    grey = render_overlay(vols, labels, "all_the_tumor", "axial", z, alpha=0.0)
    image = render_overlay(vols, labels, "all_the_tumor", "axial", z)
    assert image.shape == (240, 240, 3) and image.dtype == np.uint8
    shown = labels[:, :, z].T
    assert set(np.unique(shown)) == {0, 1, 2, 4}
    np.testing.assert_array_equal(image[shown == 0], grey[shown == 0])
    for value, colour in LABEL_COLOURS.items():
        expected = np.round(0.45 * grey[shown == value].astype(np.float32) + 0.55 * np.array(colour, np.float32))
        np.testing.assert_allclose(image[shown == value], expected, atol=1)
    # The grey base is FLAIR: brighter voxels are brighter pixels.
    flair = vols.images["flair"][:, :, z].T
    assert np.corrcoef(flair[shown == 0].ravel(), grey[shown == 0][:, 0].astype(float))[0, 1] > 0.95


def test_single_region_is_drawn_in_its_colour_only_where_it_is(ras_case):
    flair, t1ce, labels = ras_case
    vols = _volumes(flair, t1ce, np.eye(4))
    for region, values in [("ENHANCING", (4,)), ("tumour core", (1, 4)), ("NECROTIC/CORE", (1,))]:
        image = render_overlay(vols, labels, region, "axial", 2)
        grey = render_overlay(vols, labels, region, "axial", 2, alpha=0.0)
        inside = np.isin(labels[:, :, 2][::-1, ::-1].T, values)
        np.testing.assert_array_equal(image[~inside], grey[~inside])
        name = {"ENHANCING": "enhancing tumour", "NECROTIC/CORE": "necrotic core"}.get(region, region)
        expected = np.round(0.45 * grey[inside].astype(np.float32) + 0.55 * np.array(REGION_COLOURS[name]))
        np.testing.assert_allclose(image[inside], expected, atol=1)


def test_best_slice_follows_the_region_and_falls_back_to_the_brain():
    labels = np.zeros((6, 6, 10), dtype=np.uint8)
    labels[1:5, 1:5, 2] = 2  # lots of edema on slice 2
    labels[2, 2, 7] = 4  # a little enhancing tumour on slice 7
    assert best_slice(labels) == 2
    assert best_slice(labels, region="ENHANCING") == 7
    assert best_slice(labels, "sagittal", region="edema") in range(1, 5)
    empty = np.zeros_like(labels)
    assert best_slice(empty) == 5  # middle of the volume
    brain = np.zeros(labels.shape, bool)
    brain[:, :, 6:10] = True
    assert best_slice(empty, brain=brain) == 7  # middle of the brain
    with pytest.raises(KeyError):
        best_slice(labels, region="tumor-ish")


def test_bad_arguments_are_refused(ras_case):
    flair, t1ce, labels = ras_case
    vols = _volumes(flair, t1ce, np.eye(4))
    with pytest.raises(KeyError, match="unknown region"):
        render_overlay(vols, labels, "the bad part")
    with pytest.raises(ValueError, match="unknown axis"):
        render_overlay(vols, labels, "EDEMA", axis="oblique")
    with pytest.raises(ValueError, match="out of range 0..7"):
        render_overlay(vols, labels, "EDEMA", "axial", 8)
    with pytest.raises(ValueError, match="t2"):
        render_overlay(vols, labels, "EDEMA", base="t2")
    with pytest.raises(ValueError, match="do not match"):
        render_overlay(vols, labels[:5], "EDEMA")


def test_default_index_is_the_regions_best_slice(ras_case):
    flair, t1ce, _ = ras_case
    labels = np.zeros(SHAPE, dtype=np.uint8)
    labels[3:6, 3:6, 6] = 4
    vols = _volumes(flair, t1ce, np.eye(4))
    np.testing.assert_array_equal(
        render_overlay(vols, labels, "enhancing tumour"), render_overlay(vols, labels, "enhancing tumour", "axial", 6)
    )


def test_inputs_are_grey_side_by_side_with_captions(ras_case):
    flair, t1ce, _ = ras_case
    vols = _volumes(flair, t1ce, np.eye(4))
    image = render_inputs(vols, "coronal", 4)
    assert image.shape == (SHAPE[2], 2 * SHAPE[0] + 4, 3) and image.dtype == np.uint8
    assert (image[..., 0] == image[..., 1]).all() and (image[..., 1] == image[..., 2]).all()
    plain = render_inputs(vols, "coronal", 4, captions=False)
    grey_flair = render_overlay(vols, np.zeros(SHAPE, np.uint8), "EDEMA", "coronal", 4)
    np.testing.assert_array_equal(plain[:, : SHAPE[0]], grey_flair)
    assert not np.array_equal(plain[:, SHAPE[0] + 4 :], grey_flair)  # the second panel is T1ce
    big = _volumes(np.tile(flair, (10, 10, 1)), np.tile(t1ce, (10, 10, 1)), np.eye(4))
    captioned = render_inputs(big, "axial", 2)
    assert not np.array_equal(captioned, render_inputs(big, "axial", 2, captions=False))


def test_legend_names_the_colours_drawn():
    html_all = legend_html("all_the_tumor")
    for name in ("necrotic core", "edema", "enhancing tumour"):
        assert name in html_all
    for colour in LABEL_COLOURS.values():
        assert f"rgb{colour}" in html_all
    assert "tumour core" in legend_html("TC") and f"rgb{REGION_COLOURS['tumour core']}" in legend_html("TC")
    image = np.zeros((240, 240, 3), np.uint8)
    keyed = draw_legend(image, "whole tumour")
    assert keyed.shape[0] > 240 and keyed.shape[1] == 240
    strip = keyed[240:].reshape(-1, 3)
    for colour in LABEL_COLOURS.values():
        assert (strip == colour).all(axis=1).sum() >= 50  # a visible swatch of each colour


def test_overlay_with_legend_keeps_the_slice_on_top(ras_case):
    flair, t1ce, labels = ras_case
    vols = _volumes(np.tile(flair, (20, 20, 1)), np.tile(t1ce, (20, 20, 1)), np.eye(4))
    tiled = np.tile(labels, (20, 20, 1))
    plain = render_overlay(vols, tiled, "EDEMA", "axial", 1)
    keyed = render_overlay(vols, tiled, "EDEMA", "axial", 1, legend=True)
    np.testing.assert_array_equal(keyed[: plain.shape[0]], plain)


def test_png_round_trip():
    image = np.random.default_rng(1).integers(0, 256, (30, 40, 3), dtype=np.uint8)
    png = to_png(image)
    assert png.startswith(b"\x89PNG")
    np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(png))), image)
    with pytest.raises(ValueError):
        to_png(image.astype(np.float32))


@pytest.mark.parametrize(
    "affine",
    [
        np.zeros((4, 4)),
        np.diag([1.0, 1.0, 0.0, 1.0]),
        np.array([[1, 0, 0, 0], [0, 1, 0, 0], [1, 1, 0, 0], [0, 0, 0, 1.0]]),
    ],
    ids=["singular", "rank 2", "rank 2 oblique"],
)
def test_degenerate_affines_still_draw_every_view(ras_case, affine):
    """A singular or rank-2 affine (refused by the loader, but a caller may still hold one)
    leaves a voxel axis without a world axis: the picture falls back to the stored order
    instead of failing with an IndexError."""
    flair, t1ce, labels = ras_case
    vols = _volumes(flair, t1ce, affine)
    for axis in AXES:
        n = slice_count(SHAPE, axis, affine)
        assert n in SHAPE
        image = render_overlay(vols, labels, "whole tumour", axis, n - 1)
        assert image.dtype == np.uint8 and image.ndim == 3
        assert 0 <= best_slice(labels, axis, affine=affine) < n
    assert {slice_count(SHAPE, axis, affine) for axis in AXES} == set(SHAPE)  # each voxel axis once
    assert render_inputs(vols, "axial").shape[0] == SHAPE[1]


def test_a_volume_with_one_slice_renders_its_only_slice(ras_case):
    flair, t1ce, labels = (a[:, :, 3:4] for a in ras_case)
    vols = _volumes(flair, t1ce, np.eye(4))
    assert slice_count(flair.shape, "axial") == 1
    assert best_slice(labels, "axial") == 0
    assert render_overlay(vols, labels, "edema", "axial", 0).shape == (SHAPE[1], SHAPE[0], 3)
    with pytest.raises(ValueError, match="out of range 0..0"):
        render_overlay(vols, labels, "edema", "axial", 1)
