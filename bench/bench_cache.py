"""Benchmark building the training slice cache: throughput (cases per second) and peak memory.

Runs ``bratseg cache DATA_DIR --out TMP --workers W`` as a subprocess (what a user runs,
start-up included) into a fresh temporary folder, ``--runs`` times, and reports the median wall
time, cases per second, and the memory of the whole process tree (the command, its fork
server and its worker processes), sampled from /proc every 100 ms:

* peak summed PSS at one moment: resident memory with pages shared between processes (the
  libraries a fork server shares with its workers) counted once: what the machine must hold;
* peak summed RSS at one moment: the same with shared pages counted in every process (an
  upper bound; what a naive ``ps`` sum shows);
* the largest single process's peak RSS (``ru_maxrss`` over the whole tree: the command runs
  under a child-subreaper wrapper that waits for every descendant, fork server included).

It also reports how much CPU other processes used meanwhile (/proc/stat minus this tree), so
a figure taken on a busy machine says so.

Usage:
    python bench/bench_cache.py [--data DIR] [--runs 3] [--workers 2]

``--data`` defaults to ``$BRATSEG_DATA/brats18`` (``../shared/data`` beside the checkout): 18
labelled BraTS 2018 cases. Targets: 18 cases in under 60 s, peak under 2 GB. Take figures on a
quiet machine (the script prints the load average before and after).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from machine_load import MachineLoad

REPO = Path(__file__).resolve().parent.parent
DATA = Path(os.environ.get("BRATSEG_DATA", REPO.parent / "shared" / "data"))


def _children_map() -> dict[int, list[int]]:
    kids: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat") as fh:
                # The command name (field 2) may hold spaces: the parent pid follows the ")".
                ppid = int(fh.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        kids.setdefault(ppid, []).append(int(entry.name))
    return kids


def _tree(root: int) -> list[int]:
    kids, out, stack = _children_map(), [], [root]
    while stack:
        pid = stack.pop()
        out.append(pid)
        stack.extend(kids.get(pid, []))
    return out


def _status_kb(pid: int) -> dict[str, int]:
    """VmRSS / VmHWM (this process's peak RSS) from /proc/PID/status, and Pss from
    smaps_rollup (resident memory with shared pages divided among their sharers)."""
    out = {}
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith(("VmRSS:", "VmHWM:")):
                out[line.split(":")[0]] = int(line.split()[1])
    try:
        with open(f"/proc/{pid}/smaps_rollup") as fh:
            for line in fh:
                if line.startswith("Pss:"):
                    out["Pss"] = int(line.split()[1])
                    break
    except OSError:
        pass
    return out


class TreeSampler(threading.Thread):
    """Samples a process tree every ``interval`` s: peak summed RSS and PSS, and each
    process's peak RSS (VmHWM)."""

    def __init__(self, root: int, interval: float = 0.1):
        super().__init__(daemon=True)
        self.root, self.interval = root, interval
        self.peak_rss_mb = self.peak_pss_mb = 0.0
        self.hwm_mb: dict[int, float] = {self.root: 0.0}
        self._done = threading.Event()

    def run(self) -> None:
        while not self._done.is_set():
            rss = pss = 0
            for pid in _tree(self.root):
                if pid == self.root:
                    continue  # the measuring wrapper, not part of the build
                try:
                    st = _status_kb(pid)
                except (OSError, IndexError, ValueError):
                    continue  # the process ended between listing and reading
                rss += st.get("VmRSS", 0)
                pss += st.get("Pss", st.get("VmRSS", 0))
                self.hwm_mb[pid] = max(self.hwm_mb.get(pid, 0.0), st.get("VmHWM", 0) / 1024)
            self.peak_rss_mb = max(self.peak_rss_mb, rss / 1024)
            self.peak_pss_mb = max(self.peak_pss_mb, pss / 1024)
            time.sleep(self.interval)

    def stop(self) -> None:
        self._done.set()
        self.join()


# Runs the command as a child subreaper: orphaned descendants (the fork server outlives the
# command that started it) are re-parented here and waited for, so this process's
# RUSAGE_CHILDREN covers the whole tree's CPU time and largest peak RSS.
_WRAPPER = """
import ctypes, json, os, resource, subprocess, sys
ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER
rc = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL).returncode
while True:
    try:
        os.wait()
    except ChildProcessError:
        break
r = resource.getrusage(resource.RUSAGE_CHILDREN)
print(json.dumps({"cpu_s": r.ru_utime + r.ru_stime, "maxrss_mb": r.ru_maxrss / 1024}))
sys.exit(rc)
"""


def _one_build(data: Path, workers: int) -> dict:
    exe = Path(sys.executable).with_name("bratseg")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "bratseg"]
    with tempfile.TemporaryDirectory(prefix="bench_cache_") as tmp:
        args = [*cmd, "cache", str(data), "--out", f"{tmp}/cache", "--workers", str(workers)]
        t0 = time.perf_counter()
        proc = subprocess.Popen(
            [sys.executable, "-c", _WRAPPER, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        sampler = TreeSampler(proc.pid)
        sampler.start()
        out, err = proc.communicate()
        wall = time.perf_counter() - t0
        sampler.stop()
        if proc.returncode != 0:
            sys.exit(f"bratseg cache failed (exit {proc.returncode}):\n{err[-2000:]}")
        usage = json.loads(out.strip().splitlines()[-1])
        split = json.loads((Path(tmp) / "cache" / "split.json").read_text())
        n_cases = len(split["train"]) + len(split["val"])
        cache_mb = sum(f.stat().st_size for f in (Path(tmp) / "cache").glob("*.npy")) / 2**20
    return {
        "wall_s": wall,
        "cases": n_cases,
        "tree_peak_rss_mb": sampler.peak_rss_mb,
        "tree_peak_pss_mb": sampler.peak_pss_mb,
        "largest_process_peak_rss_mb": usage["maxrss_mb"],
        "processes": len(sampler.hwm_mb) - 1,  # less the wrapper
        "tree_cpu_s": usage["cpu_s"],
        "cache_mb": cache_mb,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DATA / "brats18")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--json", type=Path, help="write the raw results here")
    args = parser.parse_args()
    if not args.data.is_dir():
        sys.exit(f"data folder {args.data} not found (set BRATSEG_DATA or pass --data)")

    command = "python " + " ".join(shlex.quote(a) for a in sys.argv)
    load = MachineLoad()
    results = []
    for i in range(args.runs):
        r = _one_build(args.data, args.workers)
        results.append(r)
        print(
            f"  run {i + 1}: {r['wall_s']:.1f} s, peak PSS {r['tree_peak_pss_mb']:.0f} MB, "
            f"RSS {r['tree_peak_rss_mb']:.0f} MB",
            file=sys.stderr,
        )
    load.stop()

    walls = [r["wall_s"] for r in results]
    median = statistics.median(walls)
    cases = results[0]["cases"]
    print(f"\n## Cache build benchmark ({args.data}, {args.workers} workers)\n")
    print(f"Command: `{command}`  ")
    print(load.report() + "\n")
    print(
        "| cases | runs | median wall (s) | min / max (s) | cases/s | peak PSS, process tree (MB) | "
        "peak RSS, process tree (MB) | peak RSS, largest process (MB) | processes | cache size (MB) |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    print(
        f"| {cases} | {len(results)} | {median:.1f} | {min(walls):.1f} / {max(walls):.1f} | {cases / median:.2f} | "
        f"{max(r['tree_peak_pss_mb'] for r in results):.0f} | {max(r['tree_peak_rss_mb'] for r in results):.0f} | "
        f"{max(r['largest_process_peak_rss_mb'] for r in results):.0f} | {results[0]['processes']} | "
        f"{results[0]['cache_mb']:.0f} |"
    )
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "command": command,
                    "load": [load.load_before, load.load_after],
                    "others_cpu_s": load.others_cpu_s,
                    "runs": results,
                }
            )
        )


if __name__ == "__main__":
    main()
