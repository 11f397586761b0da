"""``bratseg evaluate`` end to end on real label maps: pairing modes, report files, errors.

Inputs are the real files under ``../shared/data``; folders of differently named inputs are
made of symbolic links in a temporary folder, never copies.
"""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from bratseg.cli import main
from bratseg.evaluation import HD95_EMPTY, evaluate_files

REPORT_FILES = ("metrics.csv", "cases.csv", "missing.csv", "summary.csv", "summary.md", "boxplot.png")
# Whole-volume WT Dice published by the BraTS evaluation package for these pairs.
PUBLISHED_WT_DICE = {"BraTS-MET-00132-000": 0.7564775269473256, "BraTS-MET-00630-001": 0.9275450621985275}


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh))


def metric(rows: list[dict[str, str]], case: str, region: str, name: str) -> float:
    (row,) = [r for r in rows if r["case"] == case and r["region"] == region]
    return float(row[name])


def link(target: Path, link_path: Path) -> Path:
    link_path.parent.mkdir(parents=True, exist_ok=True)
    link_path.symlink_to(target.resolve())
    return link_path


@pytest.fixture(scope="module")
def metrics_dir(data_dir: Path) -> Path:
    folder = data_dir / "metrics"
    if not folder.is_dir():
        pytest.skip(f"{folder} not found")
    return folder


def test_pairs_in_folders_report(metrics_dir, tmp_path, capsys):
    # Two of the BraTS 2023 sample cases: 1 mm 240 x 240 x 155, and 0.86 x 0.86 x 1.5 mm 256 x 256 x 106.
    root = tmp_path / "pairs"
    for case in PUBLISHED_WT_DICE:
        link(metrics_dir / case, root / case)
    out = tmp_path / "report"
    assert main(["evaluate", "--pairs-in-folders", str(root), "--out", str(out)]) == 0
    captured = capsys.readouterr()
    for name in REPORT_FILES:
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name

    rows = read_csv(out / "metrics.csv")
    assert list(rows[0]) == [
        *("case", "region", "labels", "dice", "iou", "hd95", "sensitivity", "specificity", "ref_ml", "pred_ml")
    ]
    assert [(r["case"], r["region"], r["labels"]) for r in rows[:5]] == [
        ("BraTS-MET-00132-000", "WT", "1,2,4"),
        ("BraTS-MET-00132-000", "TC", "1,4"),
        ("BraTS-MET-00132-000", "ET", "4"),
        ("BraTS-MET-00132-000", "NCR", "1"),
        ("BraTS-MET-00132-000", "ED", "2"),
    ]
    assert len(rows) == 10
    for case, dice in PUBLISHED_WT_DICE.items():
        assert metric(rows, case, "WT", "dice") == pytest.approx(dice, abs=1e-6)
    # The prediction of 00132 has no necrosis (label 1) where the reference has 42 voxels.
    assert metric(rows, "BraTS-MET-00132-000", "NCR", "dice") == 0.0
    assert metric(rows, "BraTS-MET-00132-000", "NCR", "hd95") == HD95_EMPTY
    # The CSV holds what the Python API computes, HD95 in mm with the 1.5 mm slices.
    folder = metrics_dir / "BraTS-MET-00630-001"
    api = evaluate_files(folder / "BraTS-MET-00630-001.nii.gz", folder / "BraTS-MET-00630-001-seg.nii.gz")
    for region in ("WT", "TC", "ET", "NCR", "ED"):
        for name in ("dice", "iou", "hd95", "sensitivity", "specificity"):
            expected = api.metrics[region][name]
            assert metric(rows, "BraTS-MET-00630-001", region, name) == pytest.approx(expected, rel=1e-5), (
                region,
                name,
            )

    cases = read_csv(out / "cases.csv")
    assert [c["spacing_mm"] for c in cases] == ["1x1x1", "0.8594x0.8594x1.5"]
    assert [c["shape"] for c in cases] == ["240x240x155", "256x256x106"]
    assert {c["ref_scheme"] for c in cases} == {c["pred_scheme"] for c in cases} == {"brats2023"}
    assert read_csv(out / "missing.csv") == []

    summary = {(s["region"], s["metric"]): s for s in read_csv(out / "summary.csv")}
    wt = [metric(rows, case, "WT", "dice") for case in PUBLISHED_WT_DICE]
    assert int(summary[("WT", "dice")]["n"]) == 2
    assert float(summary[("WT", "dice")]["mean"]) == pytest.approx(np.mean(wt), rel=1e-5)
    assert float(summary[("WT", "dice")]["median"]) == pytest.approx(np.median(wt), rel=1e-5)
    assert float(summary[("WT", "dice")]["std"]) == pytest.approx(np.std(wt, ddof=1), rel=1e-4)
    hd = [metric(rows, case, "ET", "hd95") for case in PUBLISHED_WT_DICE]
    assert float(summary[("ET", "hd95")]["mean"]) == pytest.approx(np.mean(hd), rel=1e-5)

    markdown = (out / "summary.md").read_text()
    wt_cell = f"{np.mean(wt):.3f} ± {np.std(wt, ddof=1):.3f} ({np.median(wt):.3f})"
    assert f"| WT (1,2,4) | {wt_cell} |" in markdown
    assert "# Segmentation metrics: 2 cases" in markdown
    assert f"| WT (1,2,4) | {wt_cell} |" in captured.out  # the table is printed too
    assert "2 case(s) evaluated" in captured.out

    png = (out / "boxplot.png").read_bytes()
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    import matplotlib.image

    image = matplotlib.image.imread(out / "boxplot.png")
    assert image.shape[:2] == (450, 1100) and image.std() > 0.01  # 11 x 4.5 in at 100 dpi, not blank
    assert not list(out.glob(".*.tmp"))  # atomic writes leave no temporary files


def test_folders_of_cases_and_predictions_match_by_case_id(brats18_dir, tcga_case, tmp_path, capsys):
    # REF: the BraTS 2018 folder of 18 case folders. PRED: one case's own label map as the
    # prediction (a perfect score) and a prediction for a case REF does not have.
    case = "Brats18_2013_11_1"
    preds = tmp_path / "preds"
    link(brats18_dir / case / f"{case}_seg.nii.gz", preds / f"{case}.nii.gz")
    link(tcga_case / "segmentation" / "isen-20.nii.gz", preds / "TCGA-DU-7294.nii.gz")
    out = tmp_path / "report"
    assert main(["evaluate", "--pred", str(preds), "--ref", str(brats18_dir), "--out", str(out)]) == 0
    err = capsys.readouterr().err

    rows = read_csv(out / "metrics.csv")
    assert {r["case"] for r in rows} == {case}
    for r in rows:  # every structure, present or both empty: Dice 1, HD95 0
        assert (float(r["dice"]), float(r["hd95"]), float(r["sensitivity"])) == (1.0, 0.0, 1.0), r["region"]
    missing = read_csv(out / "missing.csv")
    no_pred = sorted(m["case"] for m in missing if m["missing"] == "prediction")
    assert len(no_pred) == 17 and case not in no_pred and "Brats18_TCIA13_623_1" in no_pred
    assert [m["case"] for m in missing if m["missing"] == "reference"] == ["TCGA-DU-7294"]
    assert "TCGA-DU-7294: no reference for prediction TCGA-DU-7294.nii.gz" in err
    assert "Brats18_TCIA13_623_1: no prediction" in err
    assert "TCGA-DU-7294: no reference" in (out / "summary.md").read_text()


def test_folder_of_label_files_and_single_files(tcga_case, tmp_path):
    seg = tcga_case / "segmentation"
    refs, preds = tmp_path / "refs", tmp_path / "preds"
    link(seg / "consensus-mav.nii.gz", refs / "TCGA-DU-7294_seg.nii.gz")
    link(seg / "isen-20.nii.gz", preds / "TCGA-DU-7294.nii.gz")
    assert main(["evaluate", "--pred", str(preds), "--ref", str(refs), "--out", str(tmp_path / "a")]) == 0
    rows = read_csv(tmp_path / "a" / "metrics.csv")
    assert metric(rows, "TCGA-DU-7294", "WT", "dice") > 0.8
    # Two single files pair whatever their names, with the same numbers.
    single = ["--pred", str(seg / "isen-20.nii.gz"), "--ref", str(seg / "consensus-mav.nii.gz")]
    assert main(["evaluate", *single, "--out", str(tmp_path / "b")]) == 0
    rows_b = read_csv(tmp_path / "b" / "metrics.csv")
    assert [r["case"] for r in rows_b] == ["consensus-mav"] * 5
    assert [r["dice"] for r in rows_b] == [r["dice"] for r in rows]
    assert [r["hd95"] for r in rows_b] == [r["hd95"] for r in rows]


def test_pairs_csv_with_relative_paths(tcga_case, tmp_path):
    seg = tcga_case / "segmentation"
    table = tmp_path / "lists" / "pairs.csv"
    table.parent.mkdir()
    consensus = os.path.relpath(seg / "consensus-mav.nii.gz", table.parent)
    table.write_text(
        "case,pred,ref\n"
        f"isen,{os.path.relpath(seg / 'isen-20.nii.gz', table.parent)},{consensus}\n"
        f"hnfnet,{os.path.relpath(seg / 'hnfnetv1-20.nii.gz', table.parent)},{consensus}\n"
    )
    out = tmp_path / "report"
    assert main(["evaluate", "--pairs", str(table), "--out", str(out)]) == 0
    rows = read_csv(out / "metrics.csv")
    assert [r["case"] for r in rows if r["region"] == "WT"] == ["isen", "hnfnet"]
    assert metric(rows, "isen", "WT", "dice") > 0.8 and metric(rows, "hnfnet", "WT", "dice") > 0.8
    assert metric(rows, "isen", "ET", "dice") == 1.0  # both without enhancing tumour
    assert metric(rows, "hnfnet", "ET", "dice") == 0.0  # 352 enhancing voxels, none in the reference
    assert metric(rows, "hnfnet", "ET", "hd95") == HD95_EMPTY
    summary = {(s["region"], s["metric"]): s for s in read_csv(out / "summary.csv")}
    assert float(summary[("ET", "dice")]["mean"]) == 0.5


def test_errors_are_reported_with_exit_code_2(metrics_dir, tcga_case, tmp_path, capsys):
    seg = tcga_case / "segmentation"
    out = str(tmp_path / "report")
    shifted = metrics_dir / "BraTS-MET-00630-001" / "BraTS-MET-00630-001.nii.gz"

    assert main(["evaluate", "--pred", str(shifted), "--ref", str(seg / "consensus-mav.nii.gz"), "--out", out]) == 2
    err = capsys.readouterr().err
    assert "bratseg evaluate: error: BraTS-MET-00630-001.nii.gz: shape (256, 256, 106) differs" in err
    assert "consensus-mav.nii.gz" in err

    preds, refs = tmp_path / "preds", tmp_path / "refs"
    link(seg / "isen-20.nii.gz", preds / "some-other-case.nii.gz")
    link(seg / "consensus-mav.nii.gz", refs / "TCGA-DU-7294_seg.nii.gz")
    assert main(["evaluate", "--pred", str(preds), "--ref", str(refs), "--out", out]) == 2
    err = capsys.readouterr().err
    assert "no prediction in preds matches a reference in refs by case id" in err
    assert "predictions some-other-case, references TCGA-DU-7294" in err

    assert main(["evaluate", "--pred", str(preds), "--ref", str(metrics_dir), "--out", out]) == 2
    assert "metrics: holds neither case folders nor label maps" in capsys.readouterr().err

    hnf = str(seg / "hnfnetv1-20.nii.gz")
    assert main(["evaluate", "--pred", hnf, "--ref", hnf, "--ref-scheme", "brats2023", "--out", out]) == 2
    assert "hnfnetv1-20.nii.gz: label values [4] are not in the brats2023 scheme" in capsys.readouterr().err

    assert main(["evaluate", "--pred", hnf, "--pairs-in-folders", str(metrics_dir), "--out", out]) == 2
    assert "give either --pred and --ref, or --pairs" in capsys.readouterr().err
    assert main(["evaluate", "--pred", hnf, "--out", out]) == 2
    assert "--pred and --ref go together" in capsys.readouterr().err
    assert not Path(out).exists()  # nothing written on failure


@pytest.mark.slow  # a fresh interpreter imports torch and MONAI: seconds, more on a busy machine
def test_command_line_entry_point(tcga_case, tmp_path):
    seg = tcga_case / "segmentation"
    out = tmp_path / "report"
    command = [sys.executable, "-m", "bratseg", "evaluate", "--pred", str(seg / "scan-20.nii.gz")]
    command += ["--ref", str(seg / "consensus-mav.nii.gz"), "--pred-scheme", "brats2020", "--out", str(out)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "| WT (1,2,4) |" in done.stdout and "1 case(s) evaluated" in done.stdout
    rows = read_csv(out / "metrics.csv")
    assert metric(rows, "consensus-mav", "WT", "dice") > 0.8
    assert read_csv(out / "cases.csv")[0]["pred_scheme"] == "brats2020"
