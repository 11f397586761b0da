"""``bratseg predict`` under torchrun: 2 gloo processes on this CPU share the cases, each case
is written exactly once, rank 0 merges volumes.csv, and a run that loses a rank completes on
a rerun."""

from __future__ import annotations

import csv
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bratseg.inference.outputs import read_record
from bratseg.inference.sharding import shard
from bratseg.synthetic import write_synthetic_dataset

N_CASES = 5
N_KILLED_RUN_CASES = 14


@pytest.mark.parametrize("world_size", [1, 2, 3, 7])
def test_shares_cover_every_case_once(world_size):
    cases = [f"case{i:02d}" for i in range(20)]
    shares = [shard(cases, r, world_size) for r in range(world_size)]
    assert sorted(c for s in shares for c in s) == cases
    assert max(map(len, shares)) - min(map(len, shares)) <= 1
    assert shares == [shard(cases, r, world_size) for r in range(world_size)]  # deterministic


@pytest.fixture(scope="module")
def cases(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("dist") / "data"
    write_synthetic_dataset(root, N_CASES, shape=(64, 64, 24))
    return root


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _torchrun(data: Path, out: Path) -> list[str]:
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nnodes=1",
        "--nproc-per-node=2",
        "--master-addr=127.0.0.1",
        f"--master-port={_free_port()}",
        "-m",
        "bratseg",
        "predict",
        str(data),
        "--output",
        str(out),
    ]


_ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


@pytest.mark.slow
def test_two_gloo_ranks_write_every_case_once_and_merge_the_table(cases, tmp_path):
    out = tmp_path / "out"
    run = subprocess.run(_torchrun(cases, out), env=_ENV, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    names = [f"SYNTHETIC_{i:03d}" for i in range(N_CASES)]
    written = [line for line in run.stdout.splitlines() if " s prediction, " in line]
    for i, name in enumerate(names):
        lines = [line for line in written if f"{name}:" in line]
        assert len(lines) == 1, f"{name} written {len(lines)} times"
        assert lines[0].startswith(f"rank {i % 2}: ")  # the round-robin share
        assert read_record(out / f"{name}.nii.gz").rank == i % 2
    with open(out / "volumes.csv", newline="") as fh:
        assert [r["case"] for r in csv.DictReader(fh)] == names
    summary = [line for line in run.stdout.splitlines() if line.startswith(f"{N_CASES} cases:")]
    assert len(summary) == 1, "rank 0 alone prints the summary"
    assert summary[0].startswith(f"{N_CASES} cases: {N_CASES} written, 0 skipped (already predicted), 0 failed by 2")


def _label_maps(folder: Path) -> list[Path]:
    """The label maps in ``folder`` (not the hidden temporary files of an atomic write)."""
    return sorted(p for p in folder.glob("*.nii.gz") if not p.name.startswith("."))


def _worker_pids(parent: int) -> dict[int, int]:
    """The processes torchrun started (its children), by the rank torchrun gave each."""
    children = Path(f"/proc/{parent}/task/{parent}/children").read_text().split()
    ranks = {}
    for pid in map(int, children):
        try:
            environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        except FileNotFoundError:  # already ended: the caller's assertion says so
            continue
        rank = next((v[5:] for v in environ if v.startswith(b"RANK=")), None)
        if rank is not None:
            ranks[int(rank)] = pid
    return ranks


@pytest.fixture(scope="module")
def many_cases(tmp_path_factory) -> Path:
    """Enough cases that each rank is still busy, seconds after the first label map, when
    the test kills one (5 left a loaded machine no time to do it)."""
    root = tmp_path_factory.mktemp("dist_many") / "data"
    write_synthetic_dataset(root, N_KILLED_RUN_CASES, shape=(64, 64, 24))
    return root


@pytest.mark.slow
def test_rank_killed_midway_then_rerun_completes(many_cases, tmp_path):
    out = tmp_path / "out"
    run = subprocess.Popen(_torchrun(many_cases, out), env=_ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 600
    while not _label_maps(out) and run.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    workers = _worker_pids(run.pid)
    assert sorted(workers) == [0, 1] and run.poll() is None, "the job ended before a rank could be killed"
    os.kill(workers[1], signal.SIGKILL)
    run.communicate(timeout=300)
    assert run.returncode != 0  # torchrun reports the lost rank
    before = {p.name: p.stat().st_mtime_ns for p in _label_maps(out)}
    n = N_KILLED_RUN_CASES
    assert len(before) < n

    rerun = subprocess.run(_torchrun(many_cases, out), env=_ENV, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stdout[-2000:] + rerun.stderr[-2000:]
    assert [p.name for p in _label_maps(out)] == [f"SYNTHETIC_{i:03d}.nii.gz" for i in range(n)]
    for name, stamp in before.items():
        assert (out / name).stat().st_mtime_ns == stamp, f"{name} was redone"
    assert f"{n} cases: {n - len(before)} written, {len(before)} skipped" in rerun.stdout
    with open(out / "volumes.csv", newline="") as fh:
        assert len(list(csv.DictReader(fh))) == n
