"""``bratseg predict`` on the raw TCGA-FG-6692 scans: the native path end to end through the
CLI (labels and uncertainty on the T1ce's grid), and ``--preprocess none`` refusing them."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np

from bratseg.cli import main


def test_none_refuses_raw_input(native_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "seg.nii.gz"
    proc = subprocess.run(
        [sys.executable, "-m", "bratseg", "predict", str(native_dir), "--output", str(out), "--preprocess", "none"],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert not out.exists()


def test_native_case_with_uncertainty(native_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "seg.nii.gz"
    keep = tmp_path / "work"
    args = ["predict", str(native_dir), "--output", str(out), "--uncertainty", "--keep-intermediate", str(keep)]
    assert main(args) == 0
    t1ce = nib.load(next(native_dir.glob("*_t1c.nii.gz")))
    labels = nib.load(out)
    assert labels.shape == t1ce.shape and np.allclose(labels.affine, t1ce.affine)
    assert set(np.unique(np.asanyarray(labels.dataobj)).tolist()) <= {0, 1, 2, 4}
    assert (np.asanyarray(labels.dataobj) > 0).sum() > 0, "the tumour of this case is missed entirely"
    uncertainty = nib.load(tmp_path / "seg_uncertainty.nii.gz")
    assert uncertainty.shape == t1ce.shape and np.allclose(uncertainty.affine, t1ce.affine)
    data = np.asanyarray(uncertainty.dataobj)
    assert 0.0 <= data.min() and 0.0 < data.max() <= 1.0
    assert any(keep.rglob("*.nii.gz")), "--keep-intermediate wrote nothing"
