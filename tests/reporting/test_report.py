"""The PDF report and the key-slice panel (bratseg.reporting), on a real case and the shipped
model, read back with pypdf and Pillow; and the ``bratseg report`` command."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
from PIL import Image

from bratseg.cli import main
from bratseg.inference.confidence import assess
from bratseg.inference.predictor import SHIPPED_MODEL, Prediction
from bratseg.measurement.rano import measure
from bratseg.reporting.figures import (
    display_position,
    draw_target_lesions,
    key_slice_image,
    key_slice_panel,
    key_slices,
)
from bratseg.reporting.report import DISCLAIMER, write_report

pypdf = pytest.importorskip("pypdf")

WEIGHTS_SHA256 = hashlib.sha256((SHIPPED_MODEL / "model.safetensors").read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def prediction(brats18_case, one_torch_thread) -> Prediction:
    import bratseg

    return bratseg.from_pretrained().segment(brats18_case)


def _text(pdf_path) -> tuple[str, pypdf.PdfReader]:
    reader = pypdf.PdfReader(str(pdf_path))
    text = "\n".join(page.extract_text() for page in reader.pages)
    return " ".join(text.split()), reader  # one space between words, whatever the line breaks


def test_key_slices_are_the_largest_tumour_sections():
    labels = np.zeros((20, 22, 18), dtype=np.uint8)
    labels[5:9, 10:12, 3:6] = 2
    labels[6, 4:16, 12] = 4  # a thin streak: the widest axial section (12 voxels against 8)
    slices = key_slices(labels)
    counts = {"sagittal": (labels != 0).sum(axis=(1, 2)), "coronal": (labels != 0).sum(axis=(0, 2))}
    counts["axial"] = (labels != 0).sum(axis=(0, 1))
    assert set(slices) == {"axial", "coronal", "sagittal"}
    for axis, index in slices.items():
        assert counts[axis][index] == counts[axis].max()
    assert slices["axial"] == 12


def test_report_pdf_reads_back(prediction, tmp_path):
    path = write_report(prediction, tmp_path / "report.pdf")
    assert path == tmp_path / "report.pdf" and not list(tmp_path.glob(".*.tmp"))
    text, reader = _text(path)
    assert 1 <= len(reader.pages) <= 2
    assert "Brats18_2013_11_1" in text
    for name, volume in prediction.region_volumes().items():
        assert f"{name} {volume:.1f}" in text
    assert " ".join(DISCLAIMER.split()) in text and "not a medical device" in text
    assert WEIGHTS_SHA256 in text.replace(" ", "")
    assert "FLAIR, T1ce, T1, T2" in text
    assert "brain mask, z-score, 160x192 window" in text
    assert f"score {assess(prediction).score:.2f}" in text
    assert "bratseg U-Net (resnet18 encoder)" in text
    images = [image for page in reader.pages for image in page.images]
    assert images, "the key-slice panel is not embedded"
    panel = np.asarray(images[0].image.convert("RGB"))
    assert panel.shape[0] > 300 and panel.shape[1] > 600 and panel.std() > 20


def test_report_options_and_flag(prediction, tmp_path):
    low = assess(prediction, threshold=1.01)  # force the flag
    steps = ["native scans registered to the SRI24 atlas", "HD-BET skull stripping"]
    text, _ = _text(write_report(prediction, tmp_path / "r.pdf", preprocessing=steps, confidence=low))
    assert "low confidence: review carefully" in text
    assert all(step in text for step in steps) and "160x192" not in text
    no_probs = Prediction(prediction.labels, prediction.volumes, 0.0)
    text, _ = _text(write_report(no_probs, tmp_path / "n.pdf"))
    assert "not computed" in text and "score" not in text.split("Confidence", 1)[1].split("Key slices")[0]


def test_key_slice_panel_png(prediction, tmp_path):
    path = key_slice_panel(prediction, tmp_path / "panel.png")
    image = np.asarray(Image.open(path).convert("RGB"))
    assert image.shape == key_slice_image(prediction).shape
    assert image.shape[0] > 400 and image.shape[1] > 700  # two rows of three planes at scale 2
    assert image.std() > 30  # not blank
    # The label colours appear (edema green, necrotic core red) and so does the uncertainty.
    flat = image.reshape(-1, 3).astype(int)
    greenish = (flat[:, 1] - np.maximum(flat[:, 0], flat[:, 2])) > 60
    magenta = (flat[:, 0] > 150) & (flat[:, 2] > 150) & (flat[:, 1] < 100)
    assert greenish.sum() > 1000 and magenta.sum() > 500
    top_only = key_slice_image(prediction, uncertainty=False)
    assert top_only.shape[0] < image.shape[0] / 1.7


def test_cli_report_runs_the_model(brats18_case, tmp_path, capsys, one_torch_thread):
    out = tmp_path / "cli.pdf"
    assert main(["report", str(brats18_case), "--out", str(out), "--png", str(tmp_path / "p.png")]) == 0
    printed = capsys.readouterr().out
    assert f"report written to {out}; confidence 0." in printed
    text, reader = _text(out)
    assert "Brats18_2013_11_1" in text and WEIGHTS_SHA256 in text.replace(" ", "")
    assert len(reader.pages) == 2 and "RANO measurements: Brats18_2013_11_1" in text  # its enhancing rim
    assert (tmp_path / "p.png").stat().st_size > 10_000
    # The flag follows the shipped model's own threshold (its bratseg.json), not a constant.
    threshold = json.loads((SHIPPED_MODEL / "bratseg.json").read_text())["confidence_threshold"]
    assert f"cases below {threshold:.2f} are flagged" in text, text


@pytest.mark.slow
def test_cli_report_of_native_scans(native_dir, tmp_path, capsys):
    # Scans as scanned: the native pipeline runs and the report lists its steps, on the T1ce grid.
    out = tmp_path / "native.pdf"
    assert main(["report", str(native_dir), "--out", str(out)]) == 0
    assert f"report written to {out}; confidence 0." in capsys.readouterr().out
    text, reader = _text(out)
    assert 1 <= len(reader.pages) <= 2 and "TCGA-FG-6692" in text and "RANO: " in text
    for step in ("native preprocessing:", "skull-strip", "co-register", "back to the patient", "z-score"):
        assert step in text, (step, text)


def test_cli_report_of_a_given_label_map(prediction, brats18_case, tmp_path, capsys):
    seg = prediction.save(tmp_path / "pred.nii.gz")
    out = tmp_path / "seg.pdf"
    assert main(["report", str(brats18_case), "--seg", str(seg), "--out", str(out)]) == 0
    text, _ = _text(out)
    assert "not computed" in text  # the model was not run
    whole = prediction.region_volumes()["whole tumour"]
    assert f"whole tumour {whole:.1f}" in text


def test_cli_report_bad_input(prediction, brats18_case, tmp_path, capsys):
    seg = prediction.save(tmp_path / "pred.nii.gz")
    assert main(["report", str(seg), "--out", str(tmp_path / "x.pdf")]) == 2
    assert "a label map alone has no images" in capsys.readouterr().err
    import nibabel as nib

    nib.save(nib.Nifti1Image(np.zeros((10, 10, 10), np.uint8), np.eye(4)), tmp_path / "small.nii.gz")
    assert main(["report", str(brats18_case), "--seg", str(tmp_path / "small.nii.gz"), "--out", "x.pdf"]) == 2
    err = capsys.readouterr().err
    assert "small.nii.gz: label map of shape (10, 10, 10) does not match" in err
    assert main(["report", str(tmp_path / "nowhere"), "--out", str(tmp_path / "x.pdf")]) == 2
    assert not (tmp_path / "x.pdf").exists()


def test_panel_keeps_the_physical_aspect_of_anisotropic_scans():
    import nibabel as nib

    from bratseg.data.io import CaseVolumes

    shape = (40, 36, 10)
    image = np.zeros(shape, np.float32)
    image[4:36, 4:32, 1:9] = np.random.default_rng(0).uniform(1, 2, (32, 28, 8))
    labels = np.zeros(shape, np.uint8)
    labels[10:20, 10:20, 4:6] = 2

    def panel(z_mm: float) -> np.ndarray:
        affine = np.diag([-1.0, -1.0, z_mm, 1.0])
        header = nib.Nifti1Image(np.zeros(shape, np.float32), affine).header
        volumes = CaseVolumes("ANISO", {"flair": image, "t1ce": image}, affine, header)
        return key_slice_image(Prediction(labels, volumes, 0.0), scale=1)

    iso, aniso = panel(1.0), panel(5.5)
    # Slices cropped to the brain (plus 4 voxels): axial 40 x 36, coronal and sagittal 10
    # slices high. At 1 mm the axial slice sets the row height; at 5.5 mm the coronal and
    # sagittal slices are 55 mm high and set it: 19 pixels more, widths unchanged.
    assert aniso.shape[1] == iso.shape[1]
    assert aniso.shape[0] - iso.shape[0] == 55 - 36
    empty = np.zeros_like(labels)
    assert key_slices(empty, brain=image != 0) == {"axial": 4, "coronal": 17, "sagittal": 19}


# ----------------------------------------------------------------------------- RANO


def test_report_lists_the_rano_measurements(prediction, tmp_path):
    """Page 1 states the SPD; page 2 lists every lesion's figures and draws the targets."""
    rano = measure(prediction.labels, prediction.volumes.affine)
    targets = [lesion for lesion in rano.lesions if lesion.target]
    assert targets, "the real case's prediction has a measurable enhancing rim"
    text, reader = _text(write_report(prediction, tmp_path / "rano.pdf"))
    assert len(reader.pages) == 2
    first = " ".join(reader.pages[0].extract_text().split())
    assert f"RANO: SPD {rano.spd_mm2:.1f} mm² over {len(targets)} target lesion" in first
    second = " ".join(reader.pages[1].extract_text().split())
    assert f"(SPD) of the {len(targets)} target" in second and f"{rano.spd_mm2:.1f} mm²" in second
    for lesion in targets:
        row = (
            f"{lesion.longest_mm:.1f} {lesion.perpendicular_mm:.1f} {lesion.product_mm2:.1f} "
            f"{lesion.volume_cm3:.3f} yes yes {lesion.slice}"
        )
        assert row in second, (row, second)
        assert f"Target {targets.index(lesion) + 1}: axial slice {lesion.slice}" in second
    assert f"Enhancing tumour {rano.volumes_cm3['enhancing tumour']:.2f} cm³" in second
    assert len(reader.pages[1].images) >= len(targets)  # the target lesions' slices are drawn


def test_target_lesion_diameters_are_drawn_where_they_were_measured(prediction):
    from matplotlib.figure import Figure

    rano = measure(prediction.labels, prediction.volumes.affine)
    targets = [lesion for lesion in rano.lesions if lesion.target]
    figure = Figure()
    assert draw_target_lesions(figure, (0, 0, 1, 1), prediction.volumes, prediction.labels, rano) == len(targets)
    assert len(figure.axes) == len(targets)
    shape, affine = prediction.labels.shape, prediction.volumes.affine
    for axes, lesion in zip(figure.axes, targets):
        assert len(axes.lines) == 2 and len(axes.images) == 1
        for line, diameter in zip(axes.lines, (lesion.longest, lesion.perpendicular)):
            (r0, c0), (r1, c1) = (display_position(p, "axial", shape, affine) for p in (diameter.start, diameter.end))
            np.testing.assert_allclose(line.get_xdata(), [c0, c1])
            np.testing.assert_allclose(line.get_ydata(), [r0, r1])


@pytest.mark.parametrize(
    "affine",
    [
        np.diag([-1.0, -1.0, 1.0, 1.0]),  # BraTS (LPS)
        np.diag([1.0, 1.0, 2.0, 1.0]),  # RAS
        np.array([[0, 0, -1.0, 0], [0.9, 0, 0, 0], [0, -5.0, 0, 0], [0, 0, 0, 1]]),  # axial = voxel axis 1
    ],
    ids=["lps", "ras", "permuted"],
)
def test_display_position_is_where_the_picture_shows_the_voxel(affine):
    """A lone labelled voxel: display_position gives the pixel render_overlay paints it at."""
    import nibabel as nib

    from bratseg.data.io import CaseVolumes
    from bratseg.reporting.render import orientation, render_overlay, voxel_axis

    shape = (12, 9, 7)
    labels = np.zeros(shape, np.uint8)
    voxel = (3, 5, 2)
    labels[voxel] = 4
    volumes = CaseVolumes("P", {"flair": np.ones(shape, np.float32)}, affine, nib.Nifti1Image(labels, affine).header)
    axial = voxel_axis("axial", orientation(affine))
    picture = render_overlay(volumes, labels, "whole tumour", "axial", voxel[axial])
    painted = np.argwhere(np.abs(picture.astype(int) - picture[0, 0].astype(int)).sum(axis=2) > 0)
    assert painted.tolist() == [list(display_position(voxel, "axial", shape, affine))]
