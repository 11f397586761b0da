"""The slice cache (bratseg.preprocessing.cache) and the ``bratseg cache`` command: arrays,
manifest and split of a parallel build, resuming a build killed half way, refusing to mix
preprocessing configs, bad input reported as one line, and a build on real BraTS 2018 cases."""

from __future__ import annotations

import csv
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from bratseg.data.io import load_case
from bratseg.data.labels import labels_to_regions
from bratseg.data.layout import Case, find_cases
from bratseg.errors import CacheError
from bratseg.preprocessing.cache import MANIFEST_FIELDS, build_cache, fold_split, read_manifest, split_cases
from bratseg.preprocessing.config import PreprocessingConfig
from bratseg.preprocessing.context import with_context
from bratseg.preprocessing.pipeline import prepare_case
from bratseg.preprocessing.slices import select_slices
from bratseg.synthetic import write_synthetic_case

# The synthetic cases are 96 x 96 x 48; a window of their size keeps the arrays small.
CONFIG = PreprocessingConfig(crop_size=(96, 96))
SMALL = (32, 32, 16)


def _bratseg() -> list[str]:
    """The installed ``bratseg`` command of this interpreter's environment."""
    script = Path(sys.executable).with_name("bratseg")
    return [str(script)] if script.exists() else [sys.executable, "-m", "bratseg"]


def _arrays(cache: Path) -> tuple[np.ndarray, np.ndarray]:
    return np.load(cache / "images.npy", mmap_mode="r"), np.load(cache / "labels.npy", mmap_mode="r")


@pytest.fixture(scope="module")
def built(synthetic_root: Path, tmp_path_factory) -> Path:
    """The cache of the four synthetic cases, built with two worker processes."""
    return build_cache(synthetic_root, tmp_path_factory.mktemp("cache") / "c", CONFIG, workers=2, progress=False)


# --- a parallel build ---------------------------------------------------------------------


def test_arrays_have_documented_shapes_and_dtypes(built: Path, synthetic_root: Path) -> None:
    images, labels = _arrays(built)
    rows = read_manifest(built)
    n = len(rows)
    assert n > 0
    assert isinstance(images, np.memmap) and isinstance(labels, np.memmap)
    assert images.dtype == np.float16 and images.shape == (n, 4, 96, 96)
    assert labels.dtype == np.uint8 and labels.shape == (n, 96, 96)
    assert set(np.unique(labels).tolist()) == {0, 1, 2, 3}
    assert np.isfinite(images).all()
    case_ids = sorted(p.name for p in synthetic_root.iterdir())
    assert sorted(p.name for p in (built / "parts").iterdir()) == [f"{c}.npz" for c in case_ids]
    assert PreprocessingConfig.from_json(built / "preprocessing.json") == CONFIG
    assert not list(built.glob(".*"))  # no temp file left


def test_manifest_rows_match_arrays(built: Path) -> None:
    _, labels = _arrays(built)
    with open(built / "manifest.csv", newline="") as fh:
        assert next(csv.reader(fh)) == MANIFEST_FIELDS
    rows = read_manifest(built)
    assert [r["index"] for r in rows] == list(range(len(labels)))
    regions = labels_to_regions(np.asarray(labels)).sum(axis=(2, 3))  # [3, N]
    assert [r["WT"] for r in rows] == regions[0].tolist()
    assert [r["TC"] for r in rows] == regions[1].tolist()
    assert [r["ET"] for r in rows] == regions[2].tolist()
    cases = [r["case"] for r in rows]
    assert cases == sorted(cases)  # one block per case, in case order
    for case in set(cases):
        slices = [r["slice"] for r in rows if r["case"] == case]
        assert slices == sorted(set(slices))


def test_cached_slices_are_the_pipeline_output(built: Path, synthetic_root: Path) -> None:
    images, labels = _arrays(built)
    rows = read_manifest(built)
    for case in find_cases(synthetic_root):
        idx = [r["index"] for r in rows if r["case"] == case.case_id]
        vols = load_case(case)
        prep = prepare_case(vols, CONFIG)
        keep = select_slices(
            prep.brain, prep.label, CONFIG.min_brain_fraction, CONFIG.tumour_free_fraction, case.case_id
        )
        assert [rows[i]["slice"] for i in idx] == keep.tolist()
        np.testing.assert_array_equal(images[idx], np.moveaxis(prep.image[..., keep], 3, 0).astype(np.float16))
        np.testing.assert_array_equal(labels[idx], np.moveaxis(prep.label[..., keep], 2, 0))
        assert [rows[i]["brain_voxels"] for i in idx] == prep.brain[..., keep].sum(axis=(0, 1)).tolist()
        # every slice with tumour in the source label map is cached
        tumour = np.flatnonzero(vols.label.any(axis=(0, 1)))
        assert set(tumour.tolist()) <= set(keep.tolist())
        assert len(keep) < vols.shape[2]  # and some slices were left out


def test_context_cache_holds_the_neighbours_of_the_whole_volume(synthetic_root: Path, tmp_path: Path) -> None:
    # A 2.5-D cache keeps only some slices, so each kept slice's neighbours must come from the
    # full volume, exactly as the predictor builds them (with_context) at inference.
    config = PreprocessingConfig(crop_size=(96, 96), context_slices=1)
    cache = build_cache(synthetic_root, tmp_path / "c", config, workers=1, progress=False)
    images, _ = _arrays(cache)
    assert images.shape[1] == len(config.channels) == 12
    rows = read_manifest(cache)
    case = find_cases(synthetic_root)[0]
    idx = [r["index"] for r in rows if r["case"] == case.case_id]
    slices = [r["slice"] for r in rows if r["case"] == case.case_id]
    prep = prepare_case(load_case(case), config)
    full = with_context(prep.image, 1)
    np.testing.assert_array_equal(images[idx], np.moveaxis(full[..., slices], 3, 0).astype(np.float16))
    # channel 0 of a kept slice z is FLAIR at z - 1, a slice the cache itself may have left out
    z = slices[len(slices) // 2]
    np.testing.assert_array_equal(images[idx[len(slices) // 2], 0], prep.image[0, ..., z - 1].astype(np.float16))


def test_split_is_case_level_and_deterministic(built: Path, synthetic_root: Path) -> None:
    split = json.loads((built / "split.json").read_text())
    case_ids = sorted(p.name for p in synthetic_root.iterdir())
    assert not set(split["train"]) & set(split["val"])
    assert sorted(split["train"] + split["val"]) == case_ids
    assert len(split["val"]) == 1 and split["seed"] == 0  # round(4 * 0.2)
    assert split == split_cases(case_ids, 0.2, 0)
    assert split_cases(case_ids[::-1], 0.2, 0) == split  # the order found does not matter
    manifest_cases = {r["case"] for r in read_manifest(built)}
    assert manifest_cases == set(case_ids)


def test_folds_partition_the_cases_deterministically() -> None:
    ids = [f"C{i:02d}" for i in range(18)]
    folds = [fold_split(ids, 5, f, seed=0) for f in range(5)]
    vals = [f["val"] for f in folds]
    assert sorted(sum(vals, [])) == ids  # every case validates exactly once
    assert sorted(len(v) for v in vals) == [3, 3, 4, 4, 4]
    for f in folds:
        assert not set(f["train"]) & set(f["val"]) and sorted(f["train"] + f["val"]) == ids
    assert fold_split(ids[::-1], 5, 2, seed=0) == folds[2]  # the order given does not matter
    assert fold_split(ids, 5, 2, seed=1)["val"] != vals[2]  # the seed does
    with pytest.raises(ValueError, match="fold 5 is not one of 0..4"):
        fold_split(ids, 5, 5, seed=0)
    with pytest.raises(ValueError, match="3 cases cannot make 5 folds"):
        fold_split(ids[:3], 5, 0, seed=0)


def test_split_cases_sizes_and_seeds() -> None:
    ids = [f"C{i:02d}" for i in range(10)]
    splits = [split_cases(ids, 0.2, seed) for seed in range(8)]
    for s in splits:
        assert len(s["val"]) == 2 and len(s["train"]) == 8
        assert sorted(s["train"] + s["val"]) == ids
    assert len({tuple(s["val"]) for s in splits}) > 1  # the seed matters
    assert split_cases(["ONLY"], 0.2, 0) == {"train": ["ONLY"], "val": [], "seed": 0}
    assert len(split_cases(ids[:3], 0.01, 0)["val"]) == 1  # at least one validation case


def test_other_preprocessing_config_refuses_to_mix(built: Path, synthetic_root: Path) -> None:
    before = {p.name: p.stat().st_mtime_ns for p in built.iterdir() if p.is_file()}
    other = PreprocessingConfig(crop_size=(96, 96), resize=(64, 64))
    with pytest.raises(CacheError, match=r"preprocessing.json: the cache was started with another preprocessing"):
        build_cache(synthetic_root, built, other, workers=1, progress=False)
    assert {p.name: p.stat().st_mtime_ns for p in built.iterdir() if p.is_file()} == before
    assert PreprocessingConfig.from_json(built / "preprocessing.json") == CONFIG


# --- resume after a kill -------------------------------------------------------------------


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_killed_build_resumes_without_redoing_parts(synthetic_root: Path, synthetic_case: Case, tmp_path: Path) -> None:
    # Small cases, and one full-size case second in line: a worker is still busy with it
    # when the first part appears, so the kill lands half way however loaded the machine is.
    data = tmp_path / "data"
    data.mkdir()
    for folder in sorted(synthetic_root.iterdir()):
        (data / folder.name).symlink_to(folder, target_is_directory=True)
    (data / "SYNTHETIC_000_FULL").symlink_to(synthetic_case.folder, target_is_directory=True)
    n_cases = len(find_cases(data))
    assert n_cases == 5
    CONFIG.to_json(tmp_path / "preprocessing.json")
    out = tmp_path / "cache"
    cmd = [*_bratseg(), "cache", str(data), "--out", str(out), "--config", str(tmp_path / "preprocessing.json")]
    cmd += ["--workers", "2"]
    log = tmp_path / "killed.log"
    with open(log, "wb") as fh:
        # A session of its own, so the kill reaches the worker processes too, as a killed job's would.
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 240
        while not list((out / "parts").glob("*.npz")):
            assert proc.poll() is None, f"bratseg cache ended before writing a part:\n{log.read_text()}"
            assert time.monotonic() < deadline, "no part written in 240 s"
            time.sleep(0.02)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    finished = {p.name: (p.stat().st_mtime_ns, _digest(p)) for p in (out / "parts").glob("*.npz")}
    assert 0 < len(finished) < n_cases, f"kill landed too late to test resuming: {sorted(finished)}"
    assert not (out / "images.npy").exists()

    rerun = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    for name, (mtime, digest) in finished.items():
        part = out / "parts" / name
        assert (part.stat().st_mtime_ns, _digest(part)) == (mtime, digest), f"{name} was redone"
    assert len(list((out / "parts").glob("*.npz"))) == n_cases
    assert not [p.name for p in (out / "parts").iterdir() if p.name.startswith(".")]  # temp files cleaned

    reference = build_cache(data, tmp_path / "reference", CONFIG, workers=1, progress=False)
    for name in ("images.npy", "labels.npy"):
        np.testing.assert_array_equal(np.load(out / name), np.load(reference / name))
    for name in ("manifest.csv", "split.json", "preprocessing.json"):
        assert (out / name).read_text() == (reference / name).read_text()


def test_stale_temp_files_are_removed(tmp_path: Path) -> None:
    write_synthetic_case(tmp_path / "data" / "SYNTHETIC_000", SMALL)
    out = tmp_path / "cache"
    (out / "parts").mkdir(parents=True)
    stale = [
        out / "parts" / ".SYNTHETIC_000.npz.k2j4.tmp",
        out / ".images.npy.x8a1.tmp",
        out / ".images.npy.x8a1.tmp.labels",
    ]
    for path in stale:
        path.write_bytes(b"half a file")
    keep = out / "notes.txt"
    keep.write_text("mine")
    build_cache(tmp_path / "data", out, PreprocessingConfig(crop_size=(32, 32)), workers=1, progress=False)
    assert not any(p.exists() for p in stale)
    assert keep.read_text() == "mine"


# --- which cases ---------------------------------------------------------------------------


def test_unlabelled_cases_are_left_out(tmp_path: Path) -> None:
    data = tmp_path / "data"
    write_synthetic_case(data / "SYNTHETIC_000", SMALL)
    write_synthetic_case(data / "VALIDATION_001", SMALL, seed=1, with_label=False)
    cfg = PreprocessingConfig(crop_size=(32, 32))
    out = build_cache(data, tmp_path / "cache", cfg, workers=1, progress=False)
    assert {r["case"] for r in read_manifest(out)} == {"SYNTHETIC_000"}
    (data / "SYNTHETIC_000" / "SYNTHETIC_000_seg.nii.gz").unlink()
    with pytest.raises(CacheError, match="no labelled cases found"):
        build_cache(data, tmp_path / "cache2", cfg, workers=1, progress=False)
    assert not (tmp_path / "cache2").exists()  # nothing written for unusable input


def test_two_case_folders_of_one_name_are_refused(tmp_path: Path) -> None:
    write_synthetic_case(tmp_path / "data" / "site_a" / "CASE_1", SMALL)
    write_synthetic_case(tmp_path / "data" / "site_b" / "CASE_1", SMALL, seed=1)
    with pytest.raises(CacheError, match="two case folders are named CASE_1"):
        build_cache(tmp_path / "data", tmp_path / "cache", PreprocessingConfig(crop_size=(32, 32)), workers=1)


def test_read_manifest_of_missing_cache(tmp_path: Path) -> None:
    with pytest.raises(CacheError, match="manifest.csv: missing"):
        read_manifest(tmp_path)


# --- the command line ----------------------------------------------------------------------


def test_cli_bad_folder_one_line_error(tmp_path: Path) -> None:
    case = write_synthetic_case(tmp_path / "data" / "NOT1CE", SMALL)
    case.images["t1ce"].unlink()
    result = subprocess.run(
        [*_bratseg(), "cache", str(tmp_path / "data"), "--out", str(tmp_path / "cache")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert result.stderr == "bratseg cache: error: NOT1CE: no T1CE image found (required: FLAIR and T1ce)\n"
    assert not (tmp_path / "cache").exists()


def test_cli_error_in_worker_is_one_line(tmp_path: Path) -> None:
    """A bad file met by a worker process reaches the user as the same typed error."""
    data = tmp_path / "data"
    write_synthetic_case(data / "GOOD", SMALL)
    bad = write_synthetic_case(data / "BAD", SMALL, seed=1).images["flair"]
    bad.write_bytes(bad.read_bytes()[:200])
    cfg = tmp_path / "p.json"
    PreprocessingConfig(crop_size=(32, 32)).to_json(cfg)
    result = subprocess.run(
        [*_bratseg(), "cache", str(data), "--out", str(tmp_path / "cache"), "--config", str(cfg), "--workers", "2"],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert [line for line in lines if "error" in line.lower()] == [lines[-1]]  # the progress bar comes first
    assert lines[-1].startswith("bratseg cache: error: BAD_flair.nii.gz: truncated"), lines[-1]


# --- real data -----------------------------------------------------------------------------


def test_real_brats18_cases_through_symlinks(brats18_dir: Path, brats18_case: Path, tmp_path: Path) -> None:
    """Two real cases, picked by a folder of symlinks (the scans stay where they are)."""
    other = next(p for p in sorted(brats18_dir.iterdir()) if p.is_dir() and p != brats18_case)
    picked = tmp_path / "picked"
    picked.mkdir()
    for folder in (brats18_case, other):
        (picked / folder.name).symlink_to(folder, target_is_directory=True)
    assert [c.case_id for c in find_cases(picked)] == sorted([brats18_case.name, other.name])

    out = build_cache(picked, tmp_path / "cache", workers=1, progress=False)  # default 160 x 192 window
    images, labels = _arrays(out)
    rows = read_manifest(out)
    assert images.shape == (len(rows), 4, 160, 192) and labels.shape == (len(rows), 160, 192)
    for folder in (brats18_case, other):
        seg = np.asanyarray(nib.load(str(folder / f"{folder.name}_seg.nii.gz")).dataobj)
        mine = [r for r in rows if r["case"] == folder.name]
        cached = {r["slice"]: r for r in mine}
        tumour = np.flatnonzero(seg.any(axis=(0, 1)))
        assert set(tumour.tolist()) <= set(cached)  # every tumour slice
        # The window holds the whole brain, so per-slice tumour volumes are those of the file.
        for z, row in cached.items():
            assert row["WT"] == int((seg[:, :, z] > 0).sum())
            assert row["ET"] == int((seg[:, :, z] == 4).sum())
        assert 0 < len(mine) - len(tumour) < 155 - len(tumour)  # some tumour-free slices, not all
    split = json.loads((out / "split.json").read_text())
    assert sorted(split["train"] + split["val"]) == sorted([brats18_case.name, other.name])
    assert len(split["val"]) == 1
