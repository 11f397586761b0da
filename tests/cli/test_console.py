"""The installed command's entry point: main(), then a direct exit that must still deliver
every line printed, the exit code and the files written."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from bratseg.measurement.rano import measure


def bratseg(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "bratseg", *args], capture_output=True, text=True, timeout=300)


def test_output_and_exit_code_survive_the_direct_exit(tmp_path: Path):
    labels = np.zeros((40, 40, 10), dtype=np.uint8)
    labels[10:30, 14:26, 3:7] = 4  # one enhancing block, measurable
    nib.save(nib.Nifti1Image(labels, np.eye(4)), tmp_path / "seg.nii.gz")
    done = bratseg("measure", str(tmp_path / "seg.nii.gz"), "--json")
    assert done.returncode == 0, done.stderr
    expected = measure(labels, np.eye(4)).spd_mm2
    assert expected > 100 and json.loads(done.stdout)["spd_mm2"] == pytest.approx(
        expected, abs=0.05
    )  # all of it, flushed


def test_an_error_keeps_its_message_and_exit_code(tmp_path: Path):
    done = bratseg("measure", str(tmp_path / "missing.nii.gz"))
    assert done.returncode == 2
    assert "bratseg measure: error:" in done.stderr and "missing.nii.gz" in done.stderr


def test_a_prediction_is_complete_when_the_command_exits(synthetic_case: Path, tmp_path: Path):
    out = tmp_path / "seg.nii.gz"
    done = bratseg("predict", str(synthetic_case.folder), "--output", str(out))
    assert done.returncode == 0, done.stderr
    assert nib.load(out).get_fdata().shape == nib.load(synthetic_case.images["flair"]).shape
    assert "whole tumour" in done.stdout
