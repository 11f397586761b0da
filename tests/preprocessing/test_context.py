"""2.5-D input (bratseg.preprocessing.context): neighbour slices as channels."""

from __future__ import annotations

import doctest
import json
from pathlib import Path

import numpy as np

import bratseg.preprocessing.context as context
from bratseg.preprocessing.config import PreprocessingConfig
from bratseg.preprocessing.context import channels_of, with_context


def test_doctests() -> None:
    assert doctest.testmod(context).failed == 0


def test_neighbours_in_modality_major_order() -> None:
    rng = np.random.default_rng(0)
    image = rng.normal(size=(2, 5, 6, 7)).astype(np.float32)
    out = with_context(image, 2)
    assert out.shape == (10, 5, 6, 7) and out.dtype == np.float32
    for c in range(2):
        for j, offset in enumerate(range(-2, 3)):
            for z in range(7):
                expected = image[c, :, :, min(max(z + offset, 0), 6)]
                np.testing.assert_array_equal(out[c * 5 + j, :, :, z], expected)
    # The centre channel of each modality is the slice itself.
    np.testing.assert_array_equal(out[[2, 7]], image)


def test_zero_context_is_the_image_itself() -> None:
    image = np.zeros((4, 3, 3, 3), dtype=np.float32)
    assert with_context(image, 0) is image


def test_config_channels_and_round_trip(tmp_path: Path) -> None:
    config = PreprocessingConfig(modalities=["flair", "t1ce"], context_slices=1)
    assert config.channels == ["flair"] * 3 + ["t1ce"] * 3 == channels_of(["flair", "t1ce"], 1)
    config.to_json(tmp_path / "p.json")
    assert PreprocessingConfig.from_json(tmp_path / "p.json").context_slices == 1
    # Model folders written before 2.5-D existed read as plain 2-D.
    data = json.loads((tmp_path / "p.json").read_text())
    del data["context_slices"]
    (tmp_path / "old.json").write_text(json.dumps(data))
    assert PreprocessingConfig.from_json(tmp_path / "old.json").channels == ["flair", "t1ce"]
