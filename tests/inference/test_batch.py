"""Batch prediction: the overlapped pipeline, volumes.csv, the summary, and resuming after a
SIGKILL without redoing finished cases."""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

import bratseg
from bratseg.cli import main
from bratseg.data.labels import region_volumes
from bratseg.inference.batch import Job, read_case, run_batch
from bratseg.inference.outputs import read_record
from bratseg.measurement.rano import measure
from bratseg.synthetic import write_synthetic_dataset

SHAPE = (64, 64, 24)


@pytest.fixture(scope="module")
def small_cases(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("batch") / "data"
    write_synthetic_dataset(root, 8, shape=SHAPE)
    return root


@pytest.fixture(scope="module")
def segmenter():
    return bratseg.from_pretrained()


def test_pipeline_keeps_order_bounds_memory_and_matches_segment(small_cases, segmenter, tmp_path):
    """Outcomes come in job order, at most max_in_flight cases are alive at once, and the
    overlapped stages give exactly what segment() gives."""
    folders = sorted(p for p in small_cases.iterdir())
    jobs = [Job(f.name, f, tmp_path / f"{f.name}.nii.gz") for f in folders]
    alive, peak, lock = [0], [0], threading.Lock()

    def counting_read(job):
        with lock:
            alive[0] += 1
            peak[0] = max(peak[0], alive[0])
        return read_case(job)

    def write(job, prediction):
        prediction.save(job.target)
        with lock:
            alive[0] -= 1

    outcomes = run_batch(jobs, segmenter, write, read=counting_read, max_in_flight=2, keep_predictions=True)
    assert [o.job.name for o in outcomes] == [f.name for f in folders]
    assert all(o.ok for o in outcomes) and peak[0] <= 2
    reference = segmenter.segment(folders[3])
    assert np.array_equal(outcomes[3].prediction.labels, reference.labels)
    assert np.array_equal(outcomes[3].prediction.probabilities, reference.probabilities)


class _ConcurrentNetworks:
    """A segmenter whose first two network calls must overlap (a barrier), recording how many
    run at once and the torch threads each sees."""

    def __init__(self, segmenter, expect_overlap: bool):
        self.segmenter, self.device = segmenter, segmenter.device
        self.barrier = threading.Barrier(2, timeout=60) if expect_overlap else None
        self.lock, self.running, self.most, self.calls, self.threads = threading.Lock(), 0, 0, 0, set()

    def prepare(self, volumes):
        return self.segmenter.prepare(volumes)

    def finish(self, prepared, network):
        return self.segmenter.finish(prepared, network)

    def run_network(self, prepared):
        with self.lock:
            self.running += 1
            self.most = max(self.most, self.running)
            self.threads.add(torch.get_num_threads())
            self.calls += 1
            first_two = self.calls <= 2
        try:
            if self.barrier is not None and first_two:
                self.barrier.wait()  # raises BrokenBarrierError unless a second worker comes
            return self.segmenter.run_network(prepared)
        finally:
            with self.lock:
                self.running -= 1


def test_two_network_workers_share_the_threads_and_change_nothing(small_cases, segmenter, tmp_path):
    """Two cases in the network at once, on one torch thread each, give the outcomes, in job
    order, that one worker gives; torch's thread count is restored afterwards; and there are
    never more workers than threads or cases."""
    folders = sorted(small_cases.iterdir())
    jobs = [Job(f.name, f, tmp_path / "one" / f"{f.name}.nii.gz") for f in folders]
    threads_before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        one = run_batch(jobs, segmenter, lambda j, p: None, network_workers=1, keep_predictions=True)
        two_workers = _ConcurrentNetworks(segmenter, expect_overlap=True)
        two = run_batch(jobs, two_workers, lambda j, p: None, network_workers=2, keep_predictions=True)
        assert torch.get_num_threads() == 2
        torch.set_num_threads(1)
        capped = _ConcurrentNetworks(segmenter, expect_overlap=False)
        run_batch(jobs[:3], capped, lambda j, p: None, network_workers=2)
        torch.set_num_threads(2)
        single = _ConcurrentNetworks(segmenter, expect_overlap=False)
        run_batch(jobs[:1], single, lambda j, p: None, network_workers=2)  # one case keeps both threads
    finally:
        torch.set_num_threads(threads_before)
    assert all(o.ok for o in two), [o.error for o in two if not o.ok]
    assert [o.job.name for o in two] == [f.name for f in folders]
    assert two_workers.most == 2 and two_workers.threads == {1}
    for a, b in zip(one, two):
        assert np.array_equal(a.prediction.labels, b.prediction.labels)
        assert np.array_equal(a.prediction.probabilities, b.prediction.probabilities)
    assert capped.most == 1 and capped.threads == {1}
    assert single.threads == {2}


def test_model_that_fails_to_load_stops_the_run(small_cases, tmp_path):
    jobs = [Job("x", next(small_cases.iterdir()), tmp_path / "x.nii.gz")]
    with pytest.raises(bratseg.ModelLoadError):
        run_batch(jobs, lambda: bratseg.from_pretrained(tmp_path / "no-model"), write=lambda j, p: None)
    assert not (tmp_path / "x.nii.gz").exists()


def test_volumes_table_and_rerun_skips_unless_settings_change(small_cases, tmp_path, capsys):
    data = tmp_path / "data"
    data.mkdir()
    for name in ("SYNTHETIC_000", "SYNTHETIC_001"):
        (data / name).symlink_to(small_cases / name, target_is_directory=True)
    out = tmp_path / "out"
    assert main(["predict", str(data), "--output", str(out)]) == 0
    with open(out / "volumes.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["case"] for r in rows] == ["SYNTHETIC_000", "SYNTHETIC_001"]
    for row in rows:
        labels_img = nib.load(out / f"{row['case']}.nii.gz")
        expected = region_volumes(np.asanyarray(labels_img.dataobj), labels_img.header.get_zooms()[:3])
        assert float(row["whole_tumour_cm3"]) == pytest.approx(expected["whole tumour"], abs=1e-3)
        assert float(row["edema_cm3"]) == pytest.approx(expected["edema"], abs=1e-3)
        assert float(row["seconds"]) > 0
        assert row["model"] == "brats18-unet-resnet18" and row["model_version"].startswith("sha256:")
        assert "warnings" in row
        # RANO: the SPD (and target count) of the label map written, on its own grid.
        rano = measure(np.asanyarray(labels_img.dataobj), labels_img.affine)
        assert float(row["spd_mm2"]) == pytest.approx(rano.spd_mm2, abs=0.05)
        assert int(row["target_lesions"]) == sum(lesion.target for lesion in rano.lesions)
        assert read_record(out / f"{row['case']}.nii.gz").spd_mm2 == pytest.approx(rano.spd_mm2, abs=1e-3)
    first = capsys.readouterr().out
    assert "2 cases: 2 written, 0 skipped (already predicted), 0 failed" in first

    stamps = {p.name: p.stat().st_mtime_ns for p in _label_maps(out)}
    assert main(["predict", str(data), "--output", str(out), "--quiet"]) == 0
    assert {p.name: p.stat().st_mtime_ns for p in _label_maps(out)} == stamps, "a finished case was redone"
    assert main(["predict", str(data), "--output", str(out)]) == 0
    assert "2 cases: 0 written, 2 skipped" in capsys.readouterr().out
    # Other settings make the earlier label maps stale: they are redone, not reused.
    assert main(["predict", str(data), "--output", str(out), "--precision", "fp32"]) == 0
    assert "2 cases: 2 written, 0 skipped" in capsys.readouterr().out
    assert read_record(out / "SYNTHETIC_000.nii.gz").settings["precision"] == "fp32"


def test_label_map_records_carry_the_rano_spd_into_the_table(tmp_path):
    """A label map with one 20 x 12 mm enhancing block on three 1.5 mm slices: its record (and
    so volumes.csv) holds the block's SPD (bratseg.measurement's), measured on the grid it is
    written on."""
    from bratseg.data.io import save_nifti
    from bratseg.inference.outputs import CaseRecord, attach_record, write_volumes_table

    labels = np.zeros((40, 40, 10), dtype=np.uint8)
    labels[10:30, 14:26, 4:7] = 4
    labels[5:8, 5:8, 2] = 4  # a small second lesion: not measurable, not summed
    affine = np.diag([1.0, 1.0, 1.5, 1.0])
    record = CaseRecord("BLOCK", {"whole tumour": 1.0}, 0.1, "m", "sha256:0", {})
    save_nifti(attach_record(nib.Nifti1Image(labels, affine), record), tmp_path / "BLOCK.nii.gz")
    stored = read_record(tmp_path / "BLOCK.nii.gz")
    expected = measure(labels, affine)
    assert expected.spd_mm2 > 200 and stored.spd_mm2 == pytest.approx(expected.spd_mm2, abs=1e-3)
    assert stored.target_lesions == 1 and record.spd_mm2 is None  # the caller's record is left alone
    with open(write_volumes_table(tmp_path / "volumes.csv", [stored]), newline="") as fh:
        row = next(csv.DictReader(fh))
    assert row["spd_mm2"] == f"{expected.spd_mm2:.1f}" and row["target_lesions"] == "1"


def _label_maps(folder: Path) -> list[Path]:
    """The label maps in ``folder`` (not the hidden temporary files of an atomic write)."""
    return sorted(p for p in folder.glob("*.nii.gz") if not p.name.startswith("."))


@pytest.mark.slow
def test_sigkill_midway_then_rerun_finishes_the_rest_and_redoes_nothing(small_cases, tmp_path):
    out = tmp_path / "out"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "bratseg", "predict", str(small_cases), "--output", str(out), "--quiet"]
    run = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 600
    while len(_label_maps(out)) < 2 and run.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    run.send_signal(signal.SIGKILL)
    run.wait()
    done = {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in _label_maps(out)}
    assert 2 <= len(done) < 8, f"kill came too late to test resuming ({len(done)} of 8 written)"
    for name in done:
        assert read_record(out / name) is not None, f"{name} was left incomplete"

    rerun = subprocess.run([*cmd[:-1]], env=env, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr
    summary = rerun.stdout.strip().splitlines()[-1]
    assert summary.startswith(f"8 cases: {8 - len(done)} written, {len(done)} skipped (already predicted), 0 failed")
    for name, stamp in done.items():
        path = out / name
        assert (path.stat().st_ino, path.stat().st_mtime_ns) == stamp, f"{name} was redone"
    assert [p.name for p in _label_maps(out)] == [f"SYNTHETIC_{i:03d}.nii.gz" for i in range(8)]
    assert not list(out.glob(".*.tmp*")), "a temporary file of the killed run was left behind"
    with open(out / "volumes.csv", newline="") as fh:
        assert [r["case"] for r in csv.DictReader(fh)] == [f"SYNTHETIC_{i:03d}" for i in range(8)]
