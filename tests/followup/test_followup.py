"""Follow-up comparison (:mod:`bratseg.followup`) and ``bratseg followup``.

A real case against copies of its expert label scaled about the tumour's centre by a known
factor (diameters x s, so the SPD x s^2 and volumes x s^3), with the enhancing tumour removed,
or with a new distant lesion, given through ``--followup-seg``: the category and the
percentages must follow. The slow test is a test-retest: the same scans moved into a clinical
pose (rotation, shift, 5 mm slices, each sequence on its own grid) as the follow-up, segmented
on the native path, must come out as stable disease with a whole-tumour volume within a few
percent.
"""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
from scipy import ndimage

from bratseg.cli import main
from bratseg.followup import FILES, run_followup
from bratseg.measurement.rano import measure_file
from bratseg.measurement.response import CRITERIA, classify
from bratseg.reporting.followup_report import write_followup_report

pypdf = pytest.importorskip("pypdf")


def _seg(case: Path) -> Path:
    return case / f"{case.name}_seg.nii.gz"


def _scaled_copy(seg: Path, factor: float, out: Path) -> Path:
    """The label map scaled by ``factor`` about its tumour's centre (nearest neighbour)."""
    img = nib.load(str(seg))
    labels = np.asarray(img.dataobj).astype(np.uint8)
    centre = np.argwhere(labels > 0).mean(axis=0)
    # output voxel x samples input voxel centre + (x - centre) / factor
    scaled = ndimage.affine_transform(labels, np.eye(3) / factor, offset=centre - centre / factor, order=0)
    nib.save(nib.Nifti1Image(scaled.astype(np.uint8), img.affine, img.header), str(out))
    return out


def _edited_copy(seg: Path, out: Path, *, drop_enhancing: bool = False, new_lesion_mm: float = 0.0) -> Path:
    img = nib.load(str(seg))
    labels = np.asarray(img.dataobj).astype(np.uint8)
    if drop_enhancing:
        labels[labels == 4] = 1
    if new_lesion_mm:
        # A ball of enhancing tumour in the other hemisphere, far from every baseline lesion.
        tumour = np.argwhere(labels > 0).mean(axis=0)
        centre = np.array([2 * 120 - tumour[0], tumour[1], tumour[2]])
        grid = np.indices(labels.shape).transpose(1, 2, 3, 0)
        labels[np.linalg.norm(grid - centre, axis=-1) <= new_lesion_mm / 2] = 4
    nib.save(nib.Nifti1Image(labels, img.affine, img.header), str(out))
    return out


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"spd_percent": -55.0, "volumes_percent": {"enhancing tumour": -40.0}}, "partial response"),
        ({"spd_percent": -20.0, "volumes_percent": {"enhancing tumour": -70.0}}, "partial response"),
        ({"spd_percent": 30.0, "volumes_percent": {"enhancing tumour": 10.0}}, "progressive disease"),
        ({"spd_percent": 5.0, "volumes_percent": {"enhancing tumour": 45.0}}, "progressive disease"),
        ({"spd_percent": 24.0, "volumes_percent": {"enhancing tumour": -49.0}}, "stable disease"),
    ],
)
def test_categories_with_measurable_baseline(change, expected):
    response, reasons = classify(
        change,
        baseline_et_cm3=5.0,
        followup_et_cm3=4.0,
        baseline_measurable=True,
        followup_measurable=True,
        new_measurable=0,
    )
    assert response == expected and reasons


def test_categories_edge_cases():
    common = {"followup_measurable": True, "new_measurable": 0}
    change = {"spd_percent": -100.0, "volumes_percent": {"enhancing tumour": -100.0}}
    assert classify(change, baseline_et_cm3=5, followup_et_cm3=0, baseline_measurable=True, **common)[0] == (
        "complete response"
    )
    # A new measurable lesion is progression even while the old ones shrink.
    change = {"spd_percent": -60.0, "volumes_percent": {"enhancing tumour": -70.0}}
    assert (
        classify(change, baseline_et_cm3=5, followup_et_cm3=2, baseline_measurable=True, followup_measurable=True,
                 new_measurable=1)[0] == "progressive disease"
    )  # fmt: skip
    # Without measurable disease at baseline: no partial response, progression when one appears.
    no_spd = {"spd_percent": None, "volumes_percent": {"enhancing tumour": -80.0}}
    assert classify(no_spd, baseline_et_cm3=0.5, followup_et_cm3=0.1, baseline_measurable=False,
                    followup_measurable=False, new_measurable=0)[0] == "stable disease"  # fmt: skip
    assert classify(no_spd, baseline_et_cm3=0.5, followup_et_cm3=3.0, baseline_measurable=False,
                    followup_measurable=True, new_measurable=0)[0] == "progressive disease"  # fmt: skip
    empty = {"spd_percent": None, "volumes_percent": {"enhancing tumour": None}}
    assert classify(empty, baseline_et_cm3=0, followup_et_cm3=0, baseline_measurable=False,
                    followup_measurable=False, new_measurable=0)[0] == "stable disease"  # fmt: skip
    for words in ("clinical status", "corticosteroid", "non-enhancing", "confirmation scans"):
        assert words in CRITERIA


def test_shrunk_copy_through_the_cli_is_a_partial_response(brats18_case: Path, tmp_path: Path, capsys):
    seg = _seg(brats18_case)
    factor = 0.6  # SPD x 0.36 (-64 %), volumes x 0.216 (-78 %)
    shrunk = _scaled_copy(seg, factor, tmp_path / "shrunk.nii.gz")
    out = tmp_path / "out"
    args = ["followup", str(brats18_case), str(brats18_case), "--out", str(out)]
    assert main([*args, "--baseline-seg", str(seg), "--followup-seg", str(shrunk)]) == 0
    printed = capsys.readouterr().out
    assert "response (imaging only): partial response" in printed
    data = json.loads((out / FILES["json"]).read_text())
    assert {"baseline", "followup", "change", "response", "criteria"} <= data.keys()
    assert {"volumes_cm3", "spd_mm2", "lesions"} <= data["baseline"].keys()
    assert data["response"] == "partial response" and data["criteria"] == CRITERIA
    # The percentages are those of the two maps measured on their own, and near the scaling's.
    baseline, followup = measure_file(seg), measure_file(shrunk)
    assert data["baseline"]["spd_mm2"] == pytest.approx(baseline.spd_mm2, abs=0.05)
    assert data["followup"]["spd_mm2"] == pytest.approx(followup.spd_mm2, abs=0.05)
    # The follow-up SPD compared is the baseline target's, found again: the shrunk target and the
    # small fragments beside it (RANO sums a split lesion's parts), so at least the target's own.
    tracked = data["change"]["followup_spd_of_baseline_targets_mm2"]
    assert followup.lesions[0].product_mm2 - 0.05 <= tracked <= followup.lesions[0].product_mm2 * 1.1
    assert data["change"]["spd_percent"] == pytest.approx(100 * (tracked / baseline.spd_mm2 - 1), abs=0.05)
    assert data["change"]["spd_percent"] == pytest.approx(100 * (factor**2 - 1), abs=5)
    for region in ("whole tumour", "enhancing tumour"):
        assert data["change"]["volumes_percent"][region] == pytest.approx(100 * (factor**3 - 1), abs=4)
    # Label maps given: no confidence, so nothing flagged; the same scans need no registration.
    assert data["confidence"] == {"baseline": None, "followup": None} and not data["flagged"]
    assert data["registration"]["rotation_deg"] == 0 and data["registration"]["translation_mm"] == 0
    # Every file is there; the difference map has resolved tumour and (almost) nothing new.
    for name in FILES.values():
        assert (out / name).is_file(), name
    difference = np.asarray(nib.load(str(out / FILES["difference"])).dataobj)
    assert (difference == 2).sum() > 10 * (difference == 1).sum()
    on_baseline = np.asarray(nib.load(str(out / FILES["followup_seg_on_baseline"])).dataobj)
    assert np.array_equal(on_baseline, np.asarray(nib.load(str(shrunk)).dataobj))  # identity: the map itself
    text = "".join(page.extract_text() for page in pypdf.PdfReader(str(out / FILES["report"])).pages)
    for words in ("partial response", "Research use only", "confirmation scans", "Target 1", "Matched axial slices"):
        assert words in text, words


def test_grown_copy_new_lesion_and_complete_response(brats18_case: Path, tmp_path: Path):
    seg = _seg(brats18_case)
    factor = 1.2  # SPD x 1.44, volumes x 1.728
    grown = _scaled_copy(seg, factor, tmp_path / "grown.nii.gz")
    result = run_followup(None, brats18_case, brats18_case, tmp_path / "grown", baseline_seg=seg,
                          followup_seg=grown, report=None)  # fmt: skip
    assert result.response == "progressive disease"
    assert result.change["spd_percent"] == pytest.approx(100 * (factor**2 - 1), abs=6)
    assert result.change["volumes_percent"]["enhancing tumour"] == pytest.approx(100 * (factor**3 - 1), abs=6)
    assert result.new_measurable_lesions == 0  # grown, not new
    assert not (tmp_path / "grown" / FILES["report"]).exists()

    with_new = _edited_copy(seg, tmp_path / "new.nii.gz", new_lesion_mm=16.0)
    result = run_followup(None, brats18_case, brats18_case, tmp_path / "new", baseline_seg=seg,
                          followup_seg=with_new, report=None)  # fmt: skip
    assert result.new_measurable_lesions == 1 and result.response == "progressive disease"
    assert result.change["spd_percent"] < 25  # the new lesion alone makes it progression
    assert any("new measurable" in reason for reason in result.reasons)

    gone = _edited_copy(seg, tmp_path / "gone.nii.gz", drop_enhancing=True)
    result = run_followup(None, brats18_case, brats18_case, tmp_path / "gone", baseline_seg=seg,
                          followup_seg=gone, report=None)  # fmt: skip
    assert result.response == "complete response"
    assert result.change["volumes_percent"]["enhancing tumour"] == -100.0
    assert result.change["volumes_percent"]["whole tumour"] == 0.0


def test_bad_input_is_one_line_and_exit_2(brats18_case: Path, tmp_path: Path, capsys):
    seg = _seg(brats18_case)
    a_file = tmp_path / "file.txt"
    a_file.write_text("x")
    cases = [
        (["followup", str(brats18_case), str(tmp_path / "missing"), "--out", str(tmp_path / "o1")], "missing"),
        (
            [
                "followup",
                str(brats18_case),
                str(brats18_case),
                "--out",
                str(a_file),
                "--baseline-seg",
                str(seg),
                "--followup-seg",
                str(seg),
            ],
            "file.txt",
        ),  # fmt: skip
        (
            [
                "followup",
                str(brats18_case),
                str(brats18_case),
                "--out",
                str(tmp_path / "o2"),
                "--baseline-seg",
                str(seg),
                "--followup-seg",
                str(tmp_path / "nope.nii.gz"),
            ],
            "nope.nii.gz",
        ),  # fmt: skip
    ]
    for args, name in cases:
        assert main(args) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and name in err[0] and err[0].startswith("bratseg followup: error:"), err


def _clinical_pose(case: Path, out: Path) -> Path:
    """The case's four sequences moved as the native tests move them: T1ce and T1 rotated
    (6, -4, 8 degrees) and shifted (5, -7, 4 mm) onto a 0.94 x 0.94 x 5 mm grid, FLAIR and T2
    another way onto a 1 x 0.9 x 5 mm grid."""
    from bratseg.data.io import load_case
    from bratseg.data.layout import case_from_folder
    from bratseg.native.space import BRATS_AFFINE, to_sitk

    poses = {"t1ce": ((6.0, -4.0, 8.0), (5.0, -7.0, 4.0)), "other": ((-5.0, 3.0, -6.0), (-6.0, 4.0, -8.0))}
    grids = {"t1ce": ((256, 256, 32), (0.9375, 0.9375, 5.0)), "other": ((232, 256, 30), (1.0, 0.9, 5.0))}
    volumes = load_case(case_from_folder(case), with_label=False)
    out.mkdir(parents=True)
    for modality, data in volumes.images.items():
        image = to_sitk(data, BRATS_AFFINE)
        centre = np.array(image.TransformContinuousIndexToPhysicalPoint((119.5, 119.5, 77.0)))
        which = "t1ce" if modality in ("t1ce", "t1") else "other"
        (angles, shift), (size, spacing) = poses[which], grids[which]
        pose = sitk.Euler3DTransform()
        pose.SetCenter(tuple(centre))
        pose.SetRotation(*np.radians(angles))
        pose.SetTranslation(shift)
        grid = sitk.Image(size, sitk.sitkFloat32)
        grid.SetSpacing(spacing)
        grid.SetOrigin(tuple(centre - (np.array(size) - 1) / 2 * np.array(spacing)))
        moved = sitk.Resample(image, grid, pose, sitk.sitkLinear, 0.0, sitk.sitkFloat32)
        sitk.WriteImage(moved, str(out / f"posed_{modality}.nii.gz"))
    return out


@pytest.mark.slow
def test_test_retest_in_a_clinical_pose_is_stable(brats18_case: Path, tmp_path: Path, one_torch_thread):
    posed = _clinical_pose(brats18_case, tmp_path / "posed")
    result = run_followup(None, brats18_case, posed, tmp_path / "out", report=write_followup_report)
    data = json.loads((tmp_path / "out" / FILES["json"]).read_text())
    assert data["baseline"]["path"] == "fast" and data["followup"]["path"] == "native"
    print("test-retest", result.change, result.registration, result.confidence)
    # Measured on Brats18_2013_11_1 (shipped model): WT +3.1 %, SPD of the baseline target -2.2 %,
    # ET -26 % (5 mm slices lose much of this case's thin enhancing rim; see the native known-pose
    # test), registration 10.7 degrees.
    assert abs(result.change["volumes_percent"]["whole tumour"]) < 6
    assert result.response == "stable disease"
    # The registration recovers the pose's rotation (10.8 degrees in all).
    assert result.registration["rotation_deg"] == pytest.approx(10.8, abs=1.5)
    assert all(c is not None and "score" in c for c in result.confidence.values())
