"""Server benchmarks behind BENCHMARKS.md: memory per request under the decoded-bytes bound,
and /healthz latency under a burst of predictions.

Each scenario starts a fresh ``bratseg serve`` (waitress, the shipped model) on a free port
and talks to it over HTTP, as users do:

* ``memory``: the server's resident memory (sampled from /proc every 20 ms) while it answers
  the worst upload the bound accepts, one and ``--max-concurrent`` at once: FLAIR and T1ce
  (the fewest images, so the most voxels each) in float64 (the most bytes per voxel), each
  half the per-case bound, a real BraTS case embedded at the centre of the grid (so that
  the input checks pass and the whole prediction runs). For comparison: a real BraTS case,
  and the issue's 744 kB gzip of two 400 x 400 x 399 float64 volumes (now refused from the
  headers). Reported: idle RSS after the model load, peak RSS, and the peak above idle.
* ``burst``: ``--requests`` predictions of real BraTS cases posted at once, /healthz and a
  static file polled every 100 ms meanwhile; their latencies (median, 95th percentile, max)
  and how many predictions got 200 or 503.

Medians over ``--runs`` fresh servers. The low-priority background jobs (``bratseg train`` /
``cache``) are paused while it runs and resumed however it ends::

    .venv/bin/python bench/bench_server.py memory --runs 3
    .venv/bin/python bench/bench_server.py burst --runs 3
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import nibabel as nib
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine_load import MachineLoad  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
DATA = Path(os.environ.get("BRATSEG_DATA", REPO.parent / "shared" / "data"))
CASE = DATA / "brats18" / "Brats18_2013_11_1"
BACKGROUND_JOBS = "bratseg (train|cache)"


# ------------------------------------------------------------------------------- helpers


@contextlib.contextmanager
def background_jobs_paused():
    """SIGSTOP the background training and caching jobs; SIGCONT them however this ends."""
    subprocess.run(["pkill", "-STOP", "-f", BACKGROUND_JOBS], check=False)
    previous = signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    try:
        yield
    finally:
        subprocess.run(["pkill", "-CONT", "-f", BACKGROUND_JOBS], check=False)
        signal.signal(signal.SIGTERM, previous)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """A ``bratseg serve`` subprocess, with its resident memory sampled from /proc."""

    def __init__(self, *args: str, log: Path):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._log = open(log, "wb")
        cmd = [sys.executable, "-m", "bratseg", "serve", "--port", str(self.port), *args]
        self.process = subprocess.Popen(cmd, cwd=REPO, stdout=self._log, stderr=subprocess.STDOUT)
        self.peak_kb = 0
        self._sampling = threading.Event()

    def wait_ready(self, timeout: float = 300) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"bratseg serve exited with {self.process.returncode}")
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"{self.url}/healthz", timeout=5).status_code == 200:
                    return
            time.sleep(0.5)
        raise TimeoutError("bratseg serve did not become ready")

    def rss_kb(self) -> int:
        with open(f"/proc/{self.process.pid}/status") as fh:
            return next(int(line.split()[1]) for line in fh if line.startswith("VmRSS:"))

    @contextlib.contextmanager
    def sampling(self):
        """Track the peak RSS while the block runs."""
        self.peak_kb = self.rss_kb()
        self._sampling.set()

        def sample() -> None:
            while self._sampling.is_set():
                self.peak_kb = max(self.peak_kb, self.rss_kb())
                time.sleep(0.02)

        thread = threading.Thread(target=sample, daemon=True)
        thread.start()
        try:
            yield
        finally:
            self._sampling.clear()
            thread.join(5)

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)
        self._log.close()


def embedded_case(folder: Path, shape: tuple[int, int, int], dtype, modalities=("flair", "t1ce")) -> dict[str, Path]:
    """The real case at the centre of a ``shape`` grid of zeros, stored as ``dtype``."""
    files = {}
    for modality in modalities:
        img = nib.load(next(CASE.glob(f"*_{modality}.nii.gz")))
        data = np.asarray(img.dataobj)
        big = np.zeros(shape, dtype=dtype)
        start = [(b - s) // 2 for b, s in zip(shape, data.shape)]
        big[tuple(slice(o, o + s) for o, s in zip(start, data.shape))] = data
        shift = np.eye(4)
        shift[:3, 3] = [-o for o in start]
        path = folder / f"BIG_{modality}.nii.gz"
        nib.save(nib.Nifti1Image(big, img.affine @ shift), str(path))
        files[modality] = path
    return files


def worst_case_shape(max_case_bytes: int, images: int = 2, bytes_per_voxel: int = 8) -> tuple[int, int, int]:
    """The largest near-cubic grid whose ``images`` images fit the per-case bound."""
    voxels = max_case_bytes // (images * bytes_per_voxel)
    side = int(round(voxels ** (1 / 3)))
    depth = voxels // (side * side)
    return side, side, depth


def post(url: str, files: dict[str, Path]) -> httpx.Response:
    upload = {m: (p.name, p.read_bytes()) for m, p in files.items()}
    return httpx.post(f"{url}/api/predict", files=upload, timeout=900)


# ------------------------------------------------------------------------------- memory


def memory_scenario(files: dict[str, Path], at_once: int, max_concurrent: int, log: Path) -> dict:
    server = Server("--max-concurrent", str(max_concurrent), "--threads", str(max_concurrent + 4), log=log)
    try:
        server.wait_ready()
        time.sleep(2)  # let the load settle
        idle = server.rss_kb()
        with server.sampling(), ThreadPoolExecutor(at_once) as pool:
            answers = list(pool.map(lambda _: post(server.url, files), range(at_once)))
        return {
            "idle_mb": idle / 1024,
            "peak_mb": server.peak_kb / 1024,
            "extra_mb": (server.peak_kb - idle) / 1024,
            "statuses": [a.status_code for a in answers],
            "error": next((a.json().get("error") for a in answers if a.status_code != 200), None),
        }
    finally:
        server.stop()


def bench_memory(args: argparse.Namespace) -> None:
    from bratseg.serving.uploads import DEFAULT_MAX_CASE_BYTES

    with tempfile.TemporaryDirectory(prefix="bench-server-") as tmp:
        tmp = Path(tmp)
        shape = worst_case_shape(DEFAULT_MAX_CASE_BYTES)
        (tmp / "worst").mkdir()
        (tmp / "issue").mkdir()
        worst = embedded_case(tmp / "worst", shape, np.float64)
        issue = embedded_case(tmp / "issue", (400, 400, 399), np.float64)
        real = {m: next(CASE.glob(f"*_{m}.nii.gz")) for m in ("flair", "t1ce", "t1", "t2")}
        decoded = 2 * np.prod(shape) * 8 / 1e6
        scenarios = [
            ("BraTS case, 4 x int16 240x240x155", real, 1),
            (f"worst accepted: 2 x float64 {'x'.join(map(str, shape))} ({decoded:.0f} MB decoded)", worst, 1),
            (f"worst accepted, {args.max_concurrent} at once", worst, args.max_concurrent),
            ("issue's upload: 2 x float64 400x400x399 (1021 MB decoded)", issue, 1),
        ]
        gz = sum(p.stat().st_size for p in issue.values()) / 1e3
        print(f"bound: {DEFAULT_MAX_CASE_BYTES / 1e6:.0f} MB decoded per case; --max-concurrent {args.max_concurrent}")
        print(f"the issue's upload is {gz:.0f} kB of gzip here\n")
        print("| upload | answers | idle RSS (MB) | peak RSS (MB) | peak above idle (MB) |")
        print("|---|---|---|---|---|")
        load = MachineLoad()
        for name, files, at_once in scenarios:
            runs = [memory_scenario(files, at_once, args.max_concurrent, tmp / "serve.log") for _ in range(args.runs)]
            statuses = " ".join(str(s) for s in runs[0]["statuses"])
            med = {k: statistics.median(r[k] for r in runs) for k in ("idle_mb", "peak_mb", "extra_mb")}
            print(f"| {name} | {statuses} | {med['idle_mb']:.0f} | {med['peak_mb']:.0f} | {med['extra_mb']:.0f} |")
            if runs[0]["error"]:
                print(f"|  | {runs[0]['error'][:150]} | | | |")
        print(f"\nMedians over {args.runs} fresh servers.")
        print(load.stop().report())


# -------------------------------------------------------------------------------- burst


def burst_once(args: argparse.Namespace, cases: list[dict[str, Path]], log: Path) -> dict:
    server = Server("--max-concurrent", str(args.max_concurrent), "--threads", str(args.threads), log=log)
    latencies: dict[str, list[float]] = {"/healthz": [], "/static/style.css": []}
    done = threading.Event()

    def probe() -> None:
        with httpx.Client(timeout=60) as client:
            while not done.is_set():
                for route, seen in latencies.items():
                    t0 = time.perf_counter()
                    client.get(server.url + route).raise_for_status()
                    seen.append(time.perf_counter() - t0)
                time.sleep(0.1)

    try:
        server.wait_ready()
        prober = threading.Thread(target=probe)
        prober.start()
        t0 = time.perf_counter()
        with ThreadPoolExecutor(args.requests) as pool:
            answers = list(pool.map(lambda i: post(server.url, cases[i % len(cases)]), range(args.requests)))
        wall = time.perf_counter() - t0
        done.set()
        prober.join(60)
    finally:
        done.set()
        server.stop()
    statuses = [a.status_code for a in answers]
    health = sorted(latencies["/healthz"])
    static = sorted(latencies["/static/style.css"])
    return {
        "ok": statuses.count(200),
        "busy": statuses.count(503),
        "retry_after": sorted({a.headers.get("Retry-After") for a in answers if a.status_code == 503}),
        "wall_s": wall,
        "health_median": statistics.median(health),
        "health_p95": health[int(0.95 * (len(health) - 1))],
        "health_max": health[-1],
        "static_max": static[-1],
        "probes": len(health),
    }


def bench_burst(args: argparse.Namespace) -> None:
    folders = sorted(p for p in (DATA / "brats18").iterdir() if p.is_dir())[: args.requests]
    cases = [{m: next(f.glob(f"*_{m}.nii.gz")) for m in ("flair", "t1ce")} for f in folders]
    from bratseg.serving.server import serve_plan

    threads, queue = serve_plan(args.threads, args.max_concurrent)
    print(
        f"{args.requests} predictions at once (real BraTS cases, FLAIR + T1ce); bratseg serve --threads "
        f"{args.threads} --max-concurrent {args.max_concurrent}: {threads} threads, {queue} may wait\n"
    )
    load = MachineLoad()
    with tempfile.TemporaryDirectory(prefix="bench-server-") as tmp:
        runs = [burst_once(args, cases, Path(tmp) / "serve.log") for _ in range(args.runs)]
    print("| run | 200 | 503 (Retry-After s) | burst wall (s) | /healthz median / p95 / max (ms) | static max (ms) |")
    print("|---|---|---|---|---|---|")
    for i, r in enumerate(runs, 1):
        print(
            f"| {i} | {r['ok']} | {r['busy']} ({', '.join(r['retry_after'])}) | {r['wall_s']:.0f} | "
            f"{1000 * r['health_median']:.0f} / {1000 * r['health_p95']:.0f} / {1000 * r['health_max']:.0f} "
            f"({r['probes']} probes) | {1000 * r['static_max']:.0f} |"
        )
    med = {k: statistics.median(r[k] for r in runs) for k in ("health_median", "health_p95", "health_max")}
    print(
        f"\nMedian over {args.runs} runs: /healthz median {1000 * med['health_median']:.0f} ms, p95 "
        f"{1000 * med['health_p95']:.0f} ms, max {1000 * med['health_max']:.0f} ms."
    )
    print(load.stop().report())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("what", choices=("memory", "burst", "all"))
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--max-concurrent", type=int, default=2)
    parser.add_argument("--threads", type=int, default=4, help="waitress threads for the burst (bratseg's default)")
    parser.add_argument("--requests", type=int, default=12)
    args = parser.parse_args(argv)
    if not CASE.is_dir():
        print(f"bench_server.py: real data not found at {CASE} (set BRATSEG_DATA)", file=sys.stderr)
        return 2
    with background_jobs_paused():
        if args.what in ("memory", "all"):
            bench_memory(args)
        if args.what in ("burst", "all"):
            bench_burst(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
