"""Throughput of ``bratseg predict`` over a folder of real cases, against MONAI's SegResNet,
and where one CLI call spends its time.

Measures, in one run on the same machine (each measurement in a fresh process):

* **batch**: ``bratseg predict DATA --output OUT --quiet`` over ``--cases`` real cases (default
  20: ``brats18/`` then ``brats-extra/``, linked into a temporary folder), wall time per case
  including start-up, reading, preprocessing, the network, post-processing and writing;
  ``--runs`` runs (median); peak RSS of the command;
* **single call**: ``bratseg predict CASE --output OUT.nii.gz --quiet``, median of
  ``--cli-runs`` (network cache warm), one call with an empty network cache (a model's first
  load), and peak RSS;
* **server call**: the same single call with ``--server URL`` to a ``bratseg serve`` started by
  the script (warm: one call first), median of ``--cli-runs``;
* **SegResNet**: MONAI's BraTS-tutorial SegResNet (``blocks_down=[1, 2, 2, 4],
  blocks_up=[1, 1, 1], init_filters=16, in_channels=4, out_channels=3, dropout_prob=0.2``,
  random weights) with ``sliding_window_inference(roi_size=(240, 240, 160), sw_batch_size=1,
  overlap=0.5)`` on one real 240 x 240 x 155 case, network only, fp32 (the tutorial's CPU
  precision), same threads; median of ``--monai-runs``;
* **breakdown** of one case in one process: imports, model load (cached network and SMP +
  fx), reading (``load_case``: python-isal's igzip, the sequences in parallel threads; and
  nibabel's gzip one file after another, as before), preprocessing, network, post-processing,
  writing;
* **pipeline**: the same cases through :func:`bratseg.inference.batch.run_batch` in one
  process, overlapped (3 cases in flight) against one case at a time.

The low-priority training job of this machine (``bratseg train`` / ``bratseg cache``) is
paused with SIGSTOP while the script runs and always resumed (SIGCONT) at the end. Other
processes are accounted by ``machine_load.MachineLoad``; figures from a busy machine are
inflated.

Usage:
    python bench/bench_throughput.py [--cases 20] [--runs 3] [--cli-runs 5] [--monai-runs 3]
                                     [--threads N] [--no-monai] [--no-server] [--json OUT.json]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shlex
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench_predict import segresnet_tutorial
from machine_load import MachineLoad

REPO = Path(__file__).resolve().parent.parent
DATA = Path(os.environ.get("BRATSEG_DATA", REPO.parent / "shared" / "data"))
BACKGROUND_JOB = "bratseg (train|cache)"


def _bratseg() -> list[str]:
    exe = Path(sys.executable).with_name("bratseg")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "bratseg"]


def _pick_cases(n: int) -> list[Path]:
    found = [p for sub in ("brats18", "brats-extra") for p in sorted((DATA / sub).glob("*")) if p.is_dir()]
    return found[:n]


# --------------------------------------------------------------------------------------------
# Workers (fresh processes): print one JSON line.
# --------------------------------------------------------------------------------------------


def worker_command(cmd: list[str], env: dict) -> dict:
    """Run ``cmd``: its wall time and peak RSS (this worker runs nothing else)."""
    t = time.perf_counter()
    subprocess.run(cmd, check=True, env={**os.environ, **env}, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - t
    return {"wall_s": wall, "peak_rss_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024}


def worker_breakdown(case: Path, threads: int) -> dict:
    """One case, stage by stage, in this process."""
    marks: dict[str, float] = {}
    t = time.perf_counter()
    import numpy  # noqa: F401
    import torch

    marks["import torch, numpy"] = time.perf_counter() - t
    torch.set_num_threads(threads)
    t = time.perf_counter()
    from bratseg.inference.predictor import SHIPPED_MODEL, Segmenter

    marks["import bratseg predictor"] = time.perf_counter() - t
    t = time.perf_counter()
    seg = Segmenter.from_pretrained()
    marks["model load (cached network)"] = time.perf_counter() - t
    from bratseg.data.io import load_case
    from bratseg.data.layout import case_from_folder

    c = case_from_folder(case)
    t = time.perf_counter()
    volumes = load_case(c, with_label=False)
    marks["read 4 modalities (load_case: igzip, in threads, checks)"] = time.perf_counter() - t
    marks.update(_reader_variants(c))
    t = time.perf_counter()
    prepared = seg.prepare(volumes)
    marks["preprocess"] = time.perf_counter() - t
    t = time.perf_counter()
    network = seg.run_network(prepared)
    marks["network"] = time.perf_counter() - t
    t = time.perf_counter()
    prediction = seg.finish(prepared, network)
    marks["post-process"] = time.perf_counter() - t
    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        prediction.save(Path(tmp) / "seg.nii.gz")
        marks["write"] = time.perf_counter() - t
    # The SMP + fx load path, as every call paid before the network cache (imports included).
    t = time.perf_counter()
    import segmentation_models_pytorch as smp

    marks["before: import SMP (timm, torchvision, torch._dynamo)"] = time.perf_counter() - t
    t = time.perf_counter()
    model = smp.from_pretrained(str(SHIPPED_MODEL)).float().eval()
    marks["before: smp.from_pretrained"] = time.perf_counter() - t
    from torch.fx.experimental.optimization import fuse

    t = time.perf_counter()
    fuse(model)
    marks["before: fx BatchNorm folding"] = time.perf_counter() - t
    return {"marks": marks, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def _reader_variants(case) -> dict[str, float]:
    """Reading as before python-isal: nibabel's own loader (the standard library's gzip), the
    four files one after another, float32 as load_case makes them."""
    import nibabel as nib
    import numpy as np

    t = time.perf_counter()
    for path in case.images.values():
        np.asanyarray(nib.load(str(path)).dataobj).astype(np.float32)
    return {"before: read 4 modalities (nibabel gzip, one by one)": time.perf_counter() - t}


def worker_pipeline(data: Path, threads: int, max_in_flight: int, network_workers: int) -> dict:
    """The cases through run_batch in this process (model already loaded): seconds per case.
    ``network_workers`` 0: run_batch's default."""
    import torch

    torch.set_num_threads(threads)
    import bratseg
    from bratseg.inference.batch import Job, run_batch

    seg = bratseg.from_pretrained()
    with tempfile.TemporaryDirectory() as tmp:
        jobs = [Job(p.name, p, Path(tmp) / f"{p.name}.nii.gz") for p in sorted(data.iterdir())]
        t = time.perf_counter()
        outcomes = run_batch(
            jobs,
            seg,
            write=lambda job, pred: pred.save(job.target),
            max_in_flight=max_in_flight,
            network_workers=network_workers or None,
        )
        wall = time.perf_counter() - t
    assert all(o.ok for o in outcomes)
    return {"per_case_s": wall / len(jobs), "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def worker_monai(case: Path, runs: int, threads: int) -> dict:
    """SegResNet as in MONAI's BraTS tutorial, network only (random weights: speed only)."""
    import torch
    from monai.inferers import sliding_window_inference

    torch.set_num_threads(threads)
    model, raw = segresnet_tutorial(case)
    x = torch.from_numpy(raw)[None]
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        with torch.inference_mode():
            sliding_window_inference(inputs=x, roi_size=(240, 240, 160), sw_batch_size=1, predictor=model, overlap=0.5)
        times.append(time.perf_counter() - t)
    return {"times": times, "median_s": statistics.median(times)}


def _run_worker(*args: str) -> dict:
    out = subprocess.run([sys.executable, __file__, "--worker", *args], capture_output=True, text=True, cwd=REPO)
    if out.returncode != 0:
        last = (out.stderr.strip().splitlines() or ["no output"])[-1]
        return {"failed": f"exit {out.returncode}: {last[:200]}"}
    return json.loads(out.stdout.strip().splitlines()[-1])


# --------------------------------------------------------------------------------------------
# Driver
# --------------------------------------------------------------------------------------------


def _pause_background(sig: int) -> None:
    subprocess.run(["pkill", f"-{'STOP' if sig == signal.SIGSTOP else 'CONT'}", "-f", BACKGROUND_JOB], check=False)


def measure(args: argparse.Namespace) -> dict:
    cases = _pick_cases(args.cases)
    if len(cases) < args.cases:
        sys.exit(f"found {len(cases)} cases under {DATA}/brats18 and brats-extra, need {args.cases}")
    results: dict = {"cases": [c.name for c in cases]}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        data = tmp / "data"
        data.mkdir()
        for c in cases:
            (data / c.name).symlink_to(c, target_is_directory=True)
        threads = ["--threads", str(args.threads)]
        cache = {"BRATSEG_CACHE_DIR": str(tmp / "network-cache")}
        one = [*_bratseg(), "predict", str(cases[0]), "--quiet", *threads]
        cold = json.dumps([*one, "--output", str(tmp / "cold.nii.gz")])
        results["single_cold_cache"] = _run_worker("command", cold, json.dumps(cache))  # also fills the cache
        singles = []
        for i in range(args.cli_runs):
            cmd = [*one, "--output", str(tmp / f"single{i}.nii.gz")]
            singles.append(_run_worker("command", json.dumps(cmd), json.dumps(cache)))
        results["single"] = singles
        if not args.no_server:
            # No --threads: the server's to choose (the client refuses options that change the prediction).
            served = [*_bratseg(), "predict", str(cases[0]), "--quiet"]
            results["server_call"] = _server_calls(served, tmp, cache, args.cli_runs)
        batches = []
        for i in range(args.runs):
            cmd = [*_bratseg(), "predict", str(data), "--output", str(tmp / f"out{i}"), "--quiet", *threads]
            r = _run_worker("command", json.dumps(cmd), json.dumps(cache))
            r["per_case_s"] = r["wall_s"] / len(cases) if "wall_s" in r else None
            batches.append(r)
        results["batch"] = batches
        results["breakdown"] = _run_worker("breakdown", str(cases[0]), str(args.threads))
        results["pipeline_overlapped"] = _run_worker("pipeline", str(data), str(args.threads), "3", "0")
        results["pipeline_one_worker"] = _run_worker("pipeline", str(data), str(args.threads), "3", "1")
        results["pipeline_one_at_a_time"] = _run_worker("pipeline", str(data), str(args.threads), "1", "1")
    if not args.no_monai:
        results["segresnet"] = _run_worker("monai", str(cases[0]), str(args.monai_runs), str(args.threads))
    return results


def _server_calls(one: list[str], tmp: Path, cache: dict, runs: int) -> list[dict]:
    """``bratseg predict CASE --output OUT --server URL`` against a ``bratseg serve`` started
    here (its start-up not counted; one warm-up call first, as a running server has had)."""
    import socket
    import urllib.request

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    server = subprocess.Popen(
        [*_bratseg(), "serve", "--port", str(port), "--host", "127.0.0.1"],
        env={**os.environ, **cache},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        for _ in range(600):
            try:
                with urllib.request.urlopen(f"{url}/healthz", timeout=2) as answer:
                    if answer.status == 200:
                        break
            except OSError:
                pass
            time.sleep(0.5)
        calls = []
        for i in range(runs + 1):
            cmd = [*one, "--output", str(tmp / f"server{i}.nii.gz"), "--server", url]
            calls.append(_run_worker("command", json.dumps(cmd), json.dumps(cache)))
        return calls[1:]
    finally:
        server.terminate()
        server.wait(30)


def report(results: dict, load: MachineLoad, command: str, n: int) -> str:
    lines = [f"## Throughput ({n} real cases)", "", f"Command: `{command}`  ", load.report(), ""]
    batch = [b["per_case_s"] for b in results["batch"] if b.get("per_case_s")]
    single = [s["wall_s"] for s in results["single"] if "wall_s" in s]
    rss = max([b.get("peak_rss_mb", 0) for b in results["batch"]] or [0])
    if batch:
        lines.append(
            f"- batch `bratseg predict DATA --output OUT`: **{statistics.median(batch):.2f} s per case** "
            f"(median of {len(batch)} runs: {', '.join(f'{b:.2f}' for b in batch)}), peak RSS {rss:.0f} MB"
        )
    if single:
        rss1 = max(s.get("peak_rss_mb", 0) for s in results["single"])
        cold = results["single_cold_cache"].get("wall_s")
        lines.append(
            f"- single call `bratseg predict CASE --output OUT.nii.gz`: **{statistics.median(single):.2f} s** "
            f"median of {len(single)} (min {min(single):.2f}, max {max(single):.2f}); a model's first call "
            f"(empty network cache) {cold:.2f} s; peak RSS {rss1:.0f} MB"
        )
    served = [s["wall_s"] for s in results.get("server_call", []) if "wall_s" in s]
    if served:
        rss2 = max(s.get("peak_rss_mb", 0) for s in results["server_call"])
        lines.append(
            f"- single call to a running server `bratseg predict CASE --output OUT.nii.gz --server URL`: "
            f"**{statistics.median(served):.2f} s** median of {len(served)} (min {min(served):.2f}, max "
            f"{max(served):.2f}); peak RSS of the command {rss2:.0f} MB"
        )
    seg = results.get("segresnet", {})
    if "median_s" in seg and batch:
        ratio = seg["median_s"] / statistics.median(batch)
        lines.append(
            f"- MONAI SegResNet (tutorial config, network only): {seg['median_s']:.2f} s per case "
            f"(median of {len(seg['times'])}); bratseg end to end is **{ratio:.1f}x** faster"
        )
    for key, label in (
        ("pipeline_overlapped", "overlapped, 3 in flight, default network workers (2 on a 2-core CPU)"),
        ("pipeline_one_worker", "overlapped, 3 in flight, one network worker (before)"),
        ("pipeline_one_at_a_time", "one at a time"),
    ):
        r = results.get(key, {})
        if "per_case_s" in r:
            lines.append(
                f"- in-process run_batch, {label}: {r['per_case_s']:.2f} s per case, peak RSS {r['peak_rss_mb']:.0f} MB"
            )
    marks = results.get("breakdown", {}).get("marks", {})
    if marks:
        lines += ["", "| stage (one case, one process) | seconds |", "|---|---|"]
        lines += [f"| {k} | {v:.3f} |" for k, v in marks.items()]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", type=int, default=20)
    parser.add_argument("--runs", type=int, default=3, help="batch runs (median)")
    parser.add_argument("--cli-runs", type=int, default=5, help="single-case CLI calls (median)")
    parser.add_argument("--monai-runs", type=int, default=3)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--no-monai", action="store_true")
    parser.add_argument("--no-server", action="store_true", help="skip the calls to a running bratseg serve")
    parser.add_argument("--json", type=Path, help="write the raw results here")
    parser.add_argument("--worker", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        kind, *rest = args.worker
        if kind == "command":
            result = worker_command(json.loads(rest[0]), json.loads(rest[1]))
        elif kind == "breakdown":
            result = worker_breakdown(Path(rest[0]), int(rest[1]))
        elif kind == "pipeline":
            result = worker_pipeline(Path(rest[0]), int(rest[1]), int(rest[2]), int(rest[3]))
        else:
            result = worker_monai(Path(rest[0]), int(rest[1]), int(rest[2]))
        print(json.dumps(result))
        return

    command = "python " + " ".join(shlex.quote(a) for a in sys.argv)
    # SIGTERM must still resume the background job: turn it into SystemExit, which runs finally.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    _pause_background(signal.SIGSTOP)
    try:
        load = MachineLoad()
        results = measure(args)
        load.stop()
    finally:
        _pause_background(signal.SIGCONT)
    print(report(results, load, command, args.cases))
    if args.json:
        results.update(command=command, others_cpu_s=load.others_cpu_s, elapsed_s=load.elapsed_s)
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
