"""Running each batch of slices on the brain's box (:mod:`bratseg.inference.brain_box`)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import bratseg
from bratseg.data.io import load_case
from bratseg.data.labels import REGIONS, to_internal
from bratseg.data.layout import case_from_folder
from bratseg.inference.brain_box import brain_box


def _mask(x: slice, y: slice, shape=(160, 192, 3)) -> np.ndarray:
    mask = np.zeros(shape, dtype=bool)
    mask[x, y, 1] = True
    return mask


@pytest.mark.parametrize("margin", [0, 8, 16])
def test_box_holds_the_brain_and_its_margin_in_sides_the_unet_takes(margin):
    box = brain_box(_mask(slice(37, 101), slice(20, 151)), margin=margin)
    for side, (lo, hi), size in zip(box, ((37, 101), (20, 151)), (160, 192)):
        assert (side.stop - side.start) % 32 == 0
        assert side.start <= max(lo - margin, 0) and side.stop >= min(hi + margin, size)
        assert 0 <= side.start and side.stop <= size


def test_box_is_the_union_over_the_slices():
    mask = _mask(slice(10, 20), slice(10, 20))
    mask[140:150, 170:180, 2] = True  # another slice's brain, far away
    box = brain_box(mask, margin=0)
    assert box[0].start <= 10 and box[0].stop >= 150
    assert box[1].start <= 10 and box[1].stop >= 180


def test_box_too_large_for_the_window_is_the_whole_window():
    assert brain_box(_mask(slice(2, 158), slice(0, 192)), margin=8) == (slice(0, 160), slice(0, 192))


def test_window_whose_side_is_no_multiple_of_32_is_kept_whole_where_the_box_fills_it():
    box = brain_box(_mask(slice(0, 100), slice(0, 10), shape=(100, 96, 3)), margin=0)
    assert box[0] == slice(0, 100)


def test_no_brain_gives_no_box():
    assert brain_box(np.zeros((160, 192, 4), dtype=bool)) is None


def test_two_dimensional_mask_is_refused():
    with pytest.raises(ValueError, match=r"\[X, Y, n\]"):
        brain_box(np.ones((160, 192), dtype=bool))


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    total = int(a.sum()) + int(b.sum())
    return 1.0 if total == 0 else 2.0 * int((a & b).sum()) / total


def test_real_case_runs_smaller_inputs_and_agrees_with_the_whole_window(brats18_case, monkeypatch):
    """On a real case the network sees boxes smaller than the window, nothing outside the
    box is called tumour, and the label map agrees with the whole window's (the margin keeps
    the zero padding away from the tissue; BENCHMARKS.md "Brain box")."""
    segmenter = bratseg.from_pretrained()
    volumes = load_case(case_from_folder(brats18_case))
    prepared = segmenter.prepare(volumes)
    window = tuple(prepared.slices.shape[2:])

    segmenter.brain_box_margin = None
    whole = segmenter.finish(prepared, segmenter.run_network(prepared))

    shapes: list[tuple[int, int]] = []
    forward = segmenter._forward

    def spy(x: torch.Tensor) -> torch.Tensor:
        shapes.append(tuple(x.shape[2:]))
        return forward(x)

    monkeypatch.setattr(segmenter, "_forward", spy)
    segmenter.brain_box_margin = 8
    network = segmenter.run_network(prepared)
    boxed = segmenter.finish(prepared, network)

    assert shapes and all(h % 32 == 0 and w % 32 == 0 for h, w in shapes)
    assert sum(h * w for h, w in shapes) < 0.9 * len(shapes) * window[0] * window[1]
    for batch in segmenter._batches(np.arange(len(prepared.slice_index))):
        box = brain_box(prepared.prepared.brain[..., prepared.slice_index[batch]], margin=8)
        outside = network.region_probabilities[batch].clone()
        outside[:, :, box[0], box[1]] = 0
        assert not outside.any()
    a, b = to_internal(whole.labels, "brats2020"), to_internal(boxed.labels, "brats2020")
    for name in ("WT", "TC", "ET"):
        assert _dice(np.isin(a, REGIONS[name]), np.isin(b, REGIONS[name])) > 0.99, name


@pytest.mark.parametrize("margin", [-1, 2.5, "8", True])
def test_segmenter_refuses_a_margin_that_is_no_voxel_count(margin):
    with pytest.raises(ValueError, match="brain_box_margin must be None or a number of voxels"):
        bratseg.from_pretrained(brain_box_margin=margin)


def test_segmenter_takes_a_numpy_integer_margin():
    assert bratseg.from_pretrained(brain_box_margin=np.int64(4)).brain_box_margin == 4
