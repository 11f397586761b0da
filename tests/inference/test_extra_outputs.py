"""``bratseg predict --uncertainty --figures``: the per-case extras beside the label maps, the
confidence in the per-case line and in volumes.csv, on a real BraTS case."""

from __future__ import annotations

import contextlib
import csv
import io
import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from PIL import Image

from bratseg.cli import main
from bratseg.inference.extra_outputs import uncertainty_path
from bratseg.inference.predictor import SHIPPED_MODEL


def test_uncertainty_path_keeps_the_suffix() -> None:
    assert uncertainty_path(Path("out/seg.nii.gz")) == Path("out/seg_uncertainty.nii.gz")
    assert uncertainty_path(Path("SEG.NII")) == Path("SEG_uncertainty.NII")


@pytest.fixture(scope="module")
def batch_run(brats18_case: Path, tmp_path_factory) -> tuple[Path, Path, str]:
    """A folder holding one real case, predicted with both extras."""
    root = tmp_path_factory.mktemp("extras")
    (root / "cases").mkdir()
    (root / "cases" / brats18_case.name).symlink_to(brats18_case)
    out, figures = root / "pred", root / "figures"
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        rc = main(["predict", str(root / "cases"), "--output", str(out), "--uncertainty", "--figures", str(figures)])
    assert rc == 0
    return out, figures, printed.getvalue()


def test_uncertainty_map_beside_the_label_map(batch_run, brats18_case: Path) -> None:
    out, _, _ = batch_run
    labels = nib.load(out / f"{brats18_case.name}.nii.gz")
    img = nib.load(uncertainty_path(out / f"{brats18_case.name}.nii.gz"))
    data = np.asanyarray(img.dataobj)
    assert data.shape == labels.shape and data.dtype == np.float32
    assert np.allclose(img.affine, labels.affine)
    assert 0.0 <= data.min() and data.max() <= 1.0
    tumour = np.asanyarray(labels.dataobj) > 0
    assert data.max() > 0.5, "the tumour border must be uncertain somewhere"
    far = np.ones_like(tumour)
    far[tumour.any(axis=(1, 2))] = False  # whole sagittal planes that hold no tumour
    assert data[far].max() == 0.0 or data[far].mean() < 0.01


def test_key_slice_figure(batch_run, brats18_case: Path) -> None:
    _, figures, _ = batch_run
    with Image.open(figures / f"{brats18_case.name}.png") as png:
        pixels = np.asarray(png.convert("RGB"))
    assert pixels.shape[0] > 100 and pixels.shape[1] > 300
    assert len(np.unique(pixels.reshape(-1, 3), axis=0)) > 50, "the panel is blank"


def test_confidence_in_the_line_and_the_table(batch_run, brats18_case: Path) -> None:
    out, _, printed = batch_run
    assert "confidence 0." in printed
    with open(out / "volumes.csv", newline="") as fh:
        (row,) = list(csv.DictReader(fh))
    score = float(row["confidence"])
    assert 0.0 <= score <= 1.0
    threshold = json.loads((SHIPPED_MODEL / "bratseg.json").read_text())["confidence_threshold"]
    assert row["low_confidence"] == str(score < threshold).lower()


def test_the_flag_follows_the_models_own_threshold(brats18_case: Path, tmp_path: Path) -> None:
    # The same model with a threshold above any score: the case must be flagged, in the
    # printed line and in volumes.csv, with the threshold of the folder that predicted.
    model = tmp_path / "strict"
    shutil.copytree(SHIPPED_MODEL, model)
    meta = json.loads((model / "bratseg.json").read_text())
    (model / "bratseg.json").write_text(json.dumps({**meta, "confidence_threshold": 0.999}))
    (tmp_path / "cases").mkdir()
    (tmp_path / "cases" / brats18_case.name).symlink_to(brats18_case)
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        rc = main(["predict", str(tmp_path / "cases"), "--output", str(tmp_path / "pred"), "--model", str(model)])
    assert rc == 0
    assert "low confidence: review carefully" in printed.getvalue()
    with open(tmp_path / "pred" / "volumes.csv", newline="") as fh:
        (row,) = list(csv.DictReader(fh))
    assert row["low_confidence"] == "true" and float(row["confidence"]) < 0.999


def test_rerun_adds_a_missing_extra(batch_run, brats18_case: Path, tmp_path: Path) -> None:
    out, _, _ = batch_run
    cases = out.parent / "cases"
    assert main(["predict", str(cases), "--output", str(out), "--quiet"]) == 0  # done: skipped
    figures = tmp_path / "more_figures"
    assert main(["predict", str(cases), "--output", str(out), "--quiet", "--figures", str(figures)]) == 0
    assert (figures / f"{brats18_case.name}.png").is_file(), "a case predicted without the figure must be redone"
