"""``bratseg predict`` on real BraTS cases: every naming the data layer knows, explicit
files, folders of cases, and bad input."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

import bratseg
from bratseg.cli import main
from bratseg.synthetic import write_synthetic_case

BRATS2020_LABELS = {0, 1, 2, 4}
# What the predict path must not import: each costs start-up time and none is needed.
# Packages of training and serving that prediction does not need (SMP, which loads the
# model, is needed).
HEAVY_MODULES = ("monai", "gradio", "flask", "matplotlib", "pandas")


def _brain(folder: Path, names: tuple[str, ...] | None = None) -> tuple[np.ndarray, nib.Nifti1Image]:
    """Non-zero voxels of the case's images (all NIfTI files directly in ``folder`` but the
    label, or the given files), and the first image."""
    files = [Path(n) for n in names] if names else sorted(p for p in folder.glob("*.nii*") if "seg" not in p.name)
    first = nib.load(files[0])
    mask = np.zeros(first.shape[:3], dtype=bool)
    for f in files:
        mask |= np.asanyarray(nib.load(f).dataobj) != 0
    return mask, first


def _check_output(out: Path, like: nib.Nifti1Image, brain: np.ndarray) -> np.ndarray:
    img = nib.load(out)
    labels = np.asanyarray(img.dataobj)
    assert labels.shape == like.shape[:3]
    assert np.allclose(img.affine, like.affine)
    assert img.header.get_zooms()[:3] == like.header.get_zooms()[:3]
    assert set(np.unique(labels).tolist()) <= BRATS2020_LABELS
    assert not labels[~brain].any(), "voxels outside the brain are labelled"
    return labels


@pytest.fixture(scope="module")
def case_prediction(brats18_case: Path, tmp_path_factory) -> tuple[Path, str]:
    """``bratseg predict CASE --output OUT`` on a BraTS 2018 case folder, and its output."""
    out = tmp_path_factory.mktemp("cli") / "pred.nii.gz"
    capture = tmp_path_factory.mktemp("cli_log") / "stdout.txt"
    with open(capture, "w") as fh:
        old = sys.stdout
        sys.stdout = fh
        try:
            rc = main(["predict", str(brats18_case), "--output", str(out)])
        finally:
            sys.stdout = old
    assert rc == 0
    return out, capture.read_text()


@pytest.mark.slow
def test_case_folder(case_prediction, brats18_case):
    out, stdout = case_prediction
    brain, like = _brain(brats18_case)
    _check_output(out, like, brain)
    line = next(x for x in stdout.splitlines() if x.startswith(brats18_case.name))
    assert " s prediction" in line and "whole tumour" in line and "cm3" in line


@pytest.mark.slow
def test_python_api_equals_cli(case_prediction, brats18_case):
    out, _ = case_prediction
    labels = bratseg.from_pretrained().predict(brats18_case)
    assert np.array_equal(labels, np.asanyarray(nib.load(out).dataobj))


@pytest.mark.slow
def test_explicit_flair_and_t1ce_only(brats18_case, tmp_path, capsys):
    flair = next(brats18_case.glob("*_flair.nii.gz"))
    t1ce = next(brats18_case.glob("*_t1ce.nii.gz"))
    out = tmp_path / "two.nii.gz"
    assert main(["predict", "--flair", str(flair), "--t1ce", str(t1ce), "--output", str(out)]) == 0
    brain, like = _brain(brats18_case, (str(flair), str(t1ce)))
    _check_output(out, like, brain)
    assert "two:" in capsys.readouterr().out


@pytest.mark.slow
@pytest.mark.parametrize("fixture", ["brats2023_case", "tcga_case"])
def test_other_namings(fixture, request, tmp_path):
    """BraTS 2023 (-t2f/-t1c/-t1n/-t2w) and BraTS Toolkit (_fla/_t1c/..._bet) case folders.
    The TCGA folder also holds other algorithms' label maps in segmentation/."""
    folder: Path = request.getfixturevalue(fixture)
    out = tmp_path / "pred.nii.gz"
    assert main(["predict", str(folder), "--output", str(out)]) == 0
    images = [p for p in folder.iterdir() if p.is_file() and p.name.endswith((".nii", ".nii.gz"))]
    brain, like = _brain(folder, tuple(str(p) for p in images if "seg" not in p.name))
    _check_output(out, like, brain)


@pytest.mark.slow
def test_folder_of_cases(brats18_dir, tmp_path, capsys):
    data = tmp_path / "data"
    data.mkdir()
    picked = ["Brats18_2013_11_1", "Brats18_TCIA10_637_1"]
    for name in picked:
        (data / name).symlink_to(brats18_dir / name, target_is_directory=True)
    out = tmp_path / "out"
    assert main(["predict", str(data), "--output", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == [*(f"{n}.nii.gz" for n in picked), "volumes.csv"]
    for name in picked:
        brain, like = _brain(brats18_dir / name)
        _check_output(out / f"{name}.nii.gz", like, brain)
    captured = capsys.readouterr()
    assert "2 cases: 2 written, 0 skipped (already predicted), 0 failed" in captured.out
    table = (out / "volumes.csv").read_text().splitlines()
    assert [row.split(",")[0] for row in table[1:]] == picked
    assert "predict" in captured.err  # the tqdm progress bar
    for name in picked:
        assert any(x.startswith(f"{name}:") and "cm3" in x for x in (captured.out + captured.err).splitlines())


def test_bad_case_in_a_folder_is_skipped(tmp_path, capsys):
    data = tmp_path / "data"
    write_synthetic_case(data / "SYNTHETIC_A", shape=(64, 64, 24))
    bad = write_synthetic_case(data / "SYNTHETIC_B", shape=(64, 64, 24), seed=1)
    bad.images["t1ce"].write_bytes(bad.images["t1ce"].read_bytes()[:500])  # truncated download
    nested = data / "site2" / "SYNTHETIC_C"
    write_synthetic_case(nested, shape=(64, 64, 24), seed=2)
    (nested / "SYNTHETIC_C_t1ce.nii.gz").unlink()  # a case with no T1ce: reported, not ignored
    out = tmp_path / "out"
    rc = main(["predict", str(data), "--output", str(out)])
    assert rc == 2
    assert sorted(p.name for p in out.iterdir()) == ["SYNTHETIC_A.nii.gz", "volumes.csv"]
    captured = capsys.readouterr()
    assert "SYNTHETIC_B: failed:" in captured.err and "SYNTHETIC_B_t1ce.nii.gz" in captured.err
    assert "SYNTHETIC_C: failed:" in captured.err and "T1CE" in captured.err
    assert "3 cases: 1 written, 0 skipped (already predicted), 2 failed" in captured.out
    last = captured.err.strip().splitlines()[-1]
    assert last.startswith("bratseg predict: error: 2 of 3 cases failed (SYNTHETIC_B, SYNTHETIC_C)")


def test_unexpected_error_in_one_case_does_not_stop_the_folder(tmp_path, capsys, monkeypatch):
    from bratseg.inference.predictor import Segmenter

    data = tmp_path / "data"
    for i, name in enumerate(("SYNTHETIC_OK", "SYNTHETIC_BOOM")):
        write_synthetic_case(data / name, shape=(48, 48, 16), seed=i)
    real = Segmenter.run_network

    def flaky(self, prepared):
        if prepared.volumes.case_id == "SYNTHETIC_BOOM":
            raise MemoryError("simulated")
        return real(self, prepared)

    monkeypatch.setattr(Segmenter, "run_network", flaky)
    rc = main(["predict", str(data), "--output", str(tmp_path / "out"), "--quiet"])
    assert rc == 2
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["SYNTHETIC_OK.nii.gz", "volumes.csv"]
    err = capsys.readouterr().err
    assert "SYNTHETIC_BOOM: failed: MemoryError: simulated" in err


@pytest.mark.parametrize(
    ("make_args", "message"),
    [
        (lambda d, o: [str(d / "absent"), "-o", o], "absent: does not exist"),
        (lambda d, o: [str(d / "A" / "A_flair.nii.gz"), "-o", o], "is a file"),
        (lambda d, o: [str(d / "empty"), "-o", o], "holds no case folders"),
        (lambda d, o: [str(d), "-o", o], "--output must be a folder"),
        (lambda d, o: ["--flair", str(d / "A" / "A_flair.nii.gz"), "-o", o], "--t1ce is required"),
        (lambda d, o: ["--flair", str(d / "A" / "A_flair.nii.gz"), "--t1ce", str(d / "x.nii.gz"), "-o", o], "x.nii"),
        (lambda d, o: [str(d / "A"), "--flair", str(d / "A" / "A_flair.nii.gz"), "-o", o], "not both"),
        (lambda d, o: ["-o", o], "give a case folder"),
        (lambda d, o: [str(d / "A"), "-o", o, "--model", str(d / "nomodel")], "model folder not found"),
        (lambda d, o: [str(d / "notnifti"), "-o", o], "A_flair.nii.gz: not a readable NIfTI file"),
    ],
)
def test_bad_input_is_one_line_and_exit_code_2(make_args, message, tmp_path, capsys):
    data = tmp_path / "data"
    write_synthetic_case(data / "A", shape=(48, 48, 16))
    write_synthetic_case(data / "B", shape=(48, 48, 16), seed=1)
    (tmp_path / "data" / "empty").mkdir()
    broken = data / "notnifti"
    broken.mkdir()
    (broken / "A_flair.nii.gz").write_text("plain text, not NIfTI")
    (broken / "A_t1ce.nii.gz").write_text("plain text, not NIfTI")
    rc = main(["predict", *make_args(data, str(tmp_path / "o.nii.gz"))])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2
    assert len(err) == 1 and err[0].startswith("bratseg predict: error: ")
    assert message in err[0]
    assert not (tmp_path / "o.nii.gz").exists()


def test_command_line_entry_point_works_offline_without_serving_packages(tmp_path):
    """The installed command, in a fresh process with the hub offline: it works, writes the
    output, and imports none of the training or serving packages (start-up time)."""
    case = write_synthetic_case(tmp_path / "SYNTHETIC_E", shape=(64, 64, 24))
    out = tmp_path / "e.nii.gz"
    probe = (
        "import sys; from bratseg.cli import main; rc = main(sys.argv[1:]); "
        f"heavy = [m for m in {HEAVY_MODULES!r} if m in sys.modules]; "
        "print('HEAVY', heavy); sys.exit(rc)"
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    run = subprocess.run(
        [sys.executable, "-c", probe, "predict", str(case.folder), "--output", str(out)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr
    assert "HEAVY []" in run.stdout
    assert out.is_file()


def test_entry_point_exit_code_for_bad_input(tmp_path):
    exe = Path(sys.executable).with_name("bratseg")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "bratseg"]
    run = subprocess.run(
        [*cmd, "predict", str(tmp_path / "nowhere"), "--output", str(tmp_path / "o.nii.gz")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 2
    assert run.stderr.strip() == "bratseg predict: error: nowhere: does not exist"


# --------------------------------------------------------------------------------------------
# Data loss: outputs that are inputs, upper-case suffixes, unwritable outputs, foreign files
# --------------------------------------------------------------------------------------------


def _one_error_line(capsys) -> str:
    captured = capsys.readouterr()
    err = captured.err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("bratseg predict: error: "), captured.err
    assert "loaded in" not in captured.out, "the model was loaded before the output was checked"
    return err[0]


@pytest.mark.parametrize("how", ["same path", "symbolic link", "hard link", "explicit file"])
def test_output_that_is_an_input_is_refused_and_the_scan_kept(how, tmp_path, capsys):
    case = write_synthetic_case(tmp_path / "data" / "P1", shape=(48, 48, 16))
    scan = case.images["flair"]
    args = ["predict", str(case.folder), "--output", str(scan)]
    if how == "symbolic link":
        (tmp_path / "link.nii.gz").symlink_to(scan)
        args[-1] = str(tmp_path / "link.nii.gz")
    elif how == "hard link":
        os.link(scan, tmp_path / "hard.nii.gz")
        args[-1] = str(tmp_path / "hard.nii.gz")
    elif how == "explicit file":
        scan = case.images["t1ce"]
        args = ["predict", "--flair", str(case.images["flair"]), "--t1ce", str(scan), "--output", str(scan)]
    before = scan.read_bytes()
    assert main([*args, "--overwrite"]) == 2
    assert "is the input" in _one_error_line(capsys)
    assert scan.read_bytes() == before


def test_upper_case_gzip_suffix_writes_gzip(tmp_path):
    case = write_synthetic_case(tmp_path / "SYNTHETIC_U", shape=(48, 48, 16))
    out = tmp_path / "seg.NII.GZ"
    assert main(["predict", str(case.folder), "--output", str(out), "--quiet"]) == 0
    assert out.read_bytes()[:2] == b"\x1f\x8b", "a .NII.GZ output must be gzip-compressed"
    assert nib.load(out).shape == (48, 48, 16)


@pytest.mark.parametrize(
    ("make_output", "message"),
    [
        (lambda t: t / "afile.txt" / "seg.nii.gz", "afile.txt is a file, not a folder"),
        (lambda t: Path("/sys/bratseg-no-such-dir/seg.nii.gz"), "/sys refuses new files (Permission denied)"),
        (lambda t: t / "adir", None),  # a folder for one case: written inside it (folder output)
    ],
)
def test_unwritable_output_is_found_before_the_model_loads(make_output, message, tmp_path, capsys):
    if message and message.startswith("/sys") and not Path("/sys").is_dir():
        pytest.skip("no /sys here (a folder that refuses new files even to root)")
    case = write_synthetic_case(tmp_path / "SYNTHETIC_W", shape=(48, 48, 16))
    (tmp_path / "afile.txt").write_text("not a folder")
    output = make_output(tmp_path)
    rc = main(["predict", str(case.folder), "--output", str(output), "--quiet"])
    if message is None:
        assert rc == 0 and (output / "SYNTHETIC_W.nii.gz").is_file()
        return
    assert rc == 2
    line = _one_error_line(capsys)
    assert "cannot be written" in line and message in line


def test_existing_foreign_file_is_replaced_only_with_overwrite(tmp_path, capsys):
    case = write_synthetic_case(tmp_path / "SYNTHETIC_F", shape=(48, 48, 16))
    out = tmp_path / "seg.nii.gz"
    out.write_bytes(b"someone else's file")
    assert main(["predict", str(case.folder), "--output", str(out), "--quiet"]) == 2
    assert "is not a label map written by bratseg predict" in _one_error_line(capsys)
    assert out.read_bytes() == b"someone else's file"
    assert main(["predict", str(case.folder), "--output", str(out), "--quiet", "--overwrite"]) == 0
    assert nib.load(out).shape == (48, 48, 16)


@pytest.mark.parametrize(
    ("device", "message"), [("cuda", "no CUDA GPU is available here"), ("gpu", "not a torch device")]
)
def test_unusable_device_is_one_line(device, message, tmp_path, capsys):
    import torch

    if device == "cuda" and torch.cuda.is_available():
        pytest.skip("a GPU is available here")
    case = write_synthetic_case(tmp_path / "SYNTHETIC_D", shape=(48, 48, 16))
    assert main(["predict", str(case.folder), "--output", str(tmp_path / "d.nii.gz"), "--device", device]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0]
    assert not (tmp_path / "d.nii.gz").exists()


def test_model_folders_tta_applies_without_the_option_and_is_recorded(tmp_path, capsys):
    """A model folder whose bratseg.json asks for flip TTA predicts with it unless the command
    says otherwise, and its label maps record the setting the model ran with; a rerun skips them."""
    import json
    import shutil

    from bratseg.inference.outputs import read_record
    from bratseg.inference.predictor import SHIPPED_MODEL

    model = tmp_path / "flips-model"
    shutil.copytree(SHIPPED_MODEL, model)
    meta = json.loads((model / "bratseg.json").read_text())
    (model / "bratseg.json").write_text(json.dumps({**meta, "tta": "flips"}))
    case = write_synthetic_case(tmp_path / "SYNTHETIC_T", shape=(48, 48, 16))
    out = tmp_path / "t.nii.gz"
    args = ["predict", str(case.folder), "--output", str(out), "--model", str(model), "--precision", "fp32"]
    assert main(args) == 0
    assert read_record(out).settings == {"tta": True, "precision": "fp32"}
    capsys.readouterr()
    assert main(args) == 0
    assert "skipped" in capsys.readouterr().out  # the same model and settings: already predicted
    shipped = tmp_path / "s.nii.gz"
    assert main(["predict", str(case.folder), "--output", str(shipped), "--precision", "fp32", "--quiet"]) == 0
    assert read_record(shipped).settings == {"tta": False, "precision": "fp32"}
