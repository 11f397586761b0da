"""Every refusal of the guards reaches the user the same way through every front end: the CLI
(exit code 2, one line, no traceback), the Python API (a typed error), the Flask API (4xx JSON
with the reason) and the Gradio demo (the reason in the error box).

The inputs are the real Brats18_2013_11_1 transformed by the test (``guard_inputs.py``: also a
label map given as T1ce, a negated FLAIR, and a T1ce of another patient, Brats18_TCIA10_637_1),
plus a small file with a rank-2 affine; the shipped model is loaded once for the module (the CLI runs
load their own). Refusals come before the network, so no prediction is run.
"""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from gradio_demo import demo_client
from guard_inputs import label_as, mirrored, negated, only, replaced, resampled, skull_on, two_patients, write_case

from bratseg.data.io import load_case
from bratseg.data.layout import case_from_folder
from bratseg.errors import (
    ImplausibleScanError,
    InconsistentModalitiesError,
    InvalidCaseError,
    UntrustworthyInputError,
)

REPO = Path(__file__).resolve().parents[2]

pytestmark = [
    pytest.mark.slow,
    pytest.mark.filterwarnings("ignore::pandas.errors.Pandas4Warning"),  # Gradio's queue, not ours
]

# case folder -> what the one-line message must say (a regular expression)
EXPECTED = {
    "SKULL_1": r"SKULL_1_flair\.nii\.gz: not BraTS-space input: the brain mask is \d+ cm3, more than any "
    r"skull-stripped brain.*--preprocess native",
    "TWO_MM_1": r"TWO_MM_1_flair\.nii\.gz: not BraTS-space input: voxel size 2 x 2 x 2 mm .*--preprocess native",
    "MIRRORED_1": r"MIRRORED_1_flair\.nii\.gz and MIRRORED_1_t1ce\.nii\.gz are mirrored left-right against each other",
    "SAME_1": r"SAME_1_t1ce\.nii\.gz and SAME_1_t1\.nii\.gz are the same image",
    "RANK2_1": r"RANK2_1_t1ce\.nii\.gz: the affine \(voxel-to-world matrix\) is singular \(rank 2 of 3\)",
    # Files that are no scan of their kind, and two patients (test_sequence_content.py): refused on
    # every path, not sent to the native preprocessing under auto.
    "LABEL_1": r"LABEL_1_t1ce\.nii\.gz: only 3 distinct intensities inside the brain \(1, 2, 4\): a label map",
    "INVERTED_1": r"INVERTED_1_flair\.nii\.gz: darker than its background \(0\) in 100% of the brain: inverted",
    "MIXED_1": r"MIXED_1_t1ce\.nii\.gz: does not come from the same head as MIXED_1_flair\.nii\.gz",
}
# The error each front end's Python API raises, where not UntrustworthyInputError.
ERRORS = {
    "RANK2_1": InvalidCaseError,
    "MIRRORED_1": InconsistentModalitiesError,
    "SAME_1": InconsistentModalitiesError,
    "LABEL_1": ImplausibleScanError,
    "INVERTED_1": ImplausibleScanError,
    "MIXED_1": InconsistentModalitiesError,
}


@pytest.fixture(scope="module")
def bad_root(tmp_path_factory, brats18_case: Path, data_dir: Path) -> Path:
    """One folder of case folders, each untrustworthy in one way (int16, like the originals)."""
    root = tmp_path_factory.mktemp("untrustworthy")
    real = load_case(case_from_folder(brats18_case))
    two = only(real, "flair", "t1ce")
    write_case(label_as(two, "t1ce"), root / "LABEL_1", np.int16)
    write_case(negated(two, "flair"), root / "INVERTED_1", np.int16)
    other = next(data_dir.glob("*/Brats18_TCIA10_637_1"), None)
    if other is None:
        pytest.skip(f"Brats18_TCIA10_637_1 not found in {data_dir}")
    second = load_case(case_from_folder(other), with_label=False)
    write_case(only(two_patients(real, second, ("t1ce",)), "flair", "t1ce"), root / "MIXED_1", np.int16)
    write_case(skull_on(two), root / "SKULL_1", np.int16)
    write_case(resampled(two, (2.0, 2.0, 2.0)), root / "TWO_MM_1", np.int16)
    write_case(mirrored(two, "t1ce"), root / "MIRRORED_1", np.int16)
    write_case(replaced(only(real, "flair", "t1ce", "t1"), "t1ce", "t1"), root / "SAME_1", np.int16)
    # A rank-2 affine (once an HTTP 500 in Flask and an IndexError in Gradio): small files suffice.
    rank2 = root / "RANK2_1"
    rank2.mkdir()
    data = np.zeros((32, 32, 16), np.int16)
    data[8:24, 8:24, 4:12] = 100
    nib.save(nib.Nifti1Image(data, np.eye(4)), str(rank2 / "RANK2_1_flair.nii.gz"))
    header = nib.Nifti1Image(data, np.eye(4)).header
    header["qform_code"], header["sform_code"] = 0, 2
    header["srow_x"], header["srow_y"], header["srow_z"] = [1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 0, 0]
    nib.save(nib.Nifti1Image(data, None, header), str(rank2 / "RANK2_1_t1ce.nii.gz"))
    return root


def _files(bad_root: Path, name: str) -> dict[str, Path]:
    return {p.name[len(name) + 1 :].split(".")[0]: p for p in sorted((bad_root / name).iterdir())}


@pytest.fixture(scope="module")
def segmenter():
    import bratseg

    return bratseg.from_pretrained()


# --- command line -------------------------------------------------------------------------------


def _cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    return subprocess.run(
        [sys.executable, "-m", "bratseg", "predict", *args, "--quiet"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_cli_single_case_refusal_is_one_line_and_exit_code_2(bad_root: Path, tmp_path: Path) -> None:
    """On the fast path (``--preprocess none``); under ``auto`` a case refused for not being in
    BraTS space goes through the native preprocessing instead."""
    out = tmp_path / "seg.nii.gz"
    result = _cli(str(bad_root / "SKULL_1"), "--output", str(out), "--preprocess", "none")
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert re.search(EXPECTED["SKULL_1"], lines[0]), lines[0]
    assert lines[0].startswith("bratseg predict: error: ")
    assert "Traceback" not in result.stderr + result.stdout
    assert not out.exists()


def test_cli_folder_reports_each_refusal_on_its_line(bad_root: Path, tmp_path: Path) -> None:
    """Under the default ``--preprocess auto``: modalities that contradict each other and a broken
    affine are refused on every path."""
    everywhere = ("MIRRORED_1", "SAME_1", "RANK2_1", "LABEL_1", "INVERTED_1", "MIXED_1")
    folder = tmp_path / "cases"
    folder.mkdir()
    for name in everywhere:
        (folder / name).symlink_to(bad_root / name, target_is_directory=True)
    result = _cli(str(folder), "--output", str(tmp_path / "preds"))
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    lines = result.stderr.splitlines()
    for name in everywhere:
        pattern = EXPECTED[name]
        mine = [line for line in lines if line.startswith(f"{name}: ")]
        assert len(mine) == 1 and re.search(pattern, mine[0]), (name, result.stderr)
    assert not list((tmp_path / "preds").glob("*.nii.gz")), "a refused case was written"


# --- Python API ---------------------------------------------------------------------------------


def test_python_api_raises_the_typed_error(segmenter, bad_root: Path) -> None:
    for name, pattern in EXPECTED.items():
        error = ERRORS.get(name, UntrustworthyInputError)
        with pytest.raises(error) as info:
            segmenter.segment(bad_root / name)
        assert re.search(pattern, str(info.value)), str(info.value)


# --- Flask API ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def flask_client(segmenter):
    from bratseg.serving.flask_app import create_app
    from bratseg.serving.service import InferenceService

    app = create_app(InferenceService(segmenter=segmenter, max_concurrent=1), max_upload_bytes=200 * 1024 * 1024)
    return app.test_client()


@pytest.mark.parametrize("name", list(EXPECTED))
def test_flask_answers_4xx_json_with_the_reason(flask_client, bad_root: Path, name: str) -> None:
    # The fast path's refusals: under the default preprocess=auto, input refused for not being in
    # BraTS space goes through the native pipeline instead (tests/serving/test_web_prediction.py).
    files = {m: (io.BytesIO(p.read_bytes()), p.name) for m, p in _files(bad_root, name).items()}
    files["preprocess"] = "none"
    res = flask_client.post("/api/predict", data=files, content_type="multipart/form-data")
    assert 400 <= res.status_code < 500, res.get_data(as_text=True)
    error = res.get_json()["error"]
    assert re.search(EXPECTED[name], error), error
    assert "\n" not in error and "Traceback" not in error


# --- Gradio demo --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def gradio_client(segmenter, tmp_path_factory):
    with demo_client(segmenter, tmp_path_factory.mktemp("gradio")) as client:
        yield client


@pytest.mark.parametrize("name", list(EXPECTED))
def test_gradio_shows_the_reason(gradio_client, bad_root: Path, name: str) -> None:
    from gradio_client import handle_file
    from gradio_client.exceptions import AppError

    files = _files(bad_root, name)
    upload = [handle_file(files[m]) if m in files else None for m in ("flair", "t1ce", "t1", "t2")]
    job = gradio_client.submit(*upload, None, "whole tumour", "axial", "none", api_name="/segment")
    with pytest.raises(AppError) as info:
        job.result(timeout=300)
    text = str(info.value)
    assert re.search(EXPECTED[name], text), text
    assert "Traceback" not in text and 'File "' not in text
