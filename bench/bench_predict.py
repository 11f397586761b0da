"""Benchmark whole-volume prediction on one real 240 x 240 x 155 case.

Measures, each configuration in a fresh Python process (so peak memory is that
configuration's own, and every first call is as cold as in a real CLI call):

* bratseg: ``Segmenter.segment`` time (``Prediction.seconds``: preprocessing + network +
  postprocessing; reading the files is not included), first call and median of the warm calls;
  import time and model-load time; peak RSS.
* variants kept or rejected while optimising (``--variants``): fp32, the SMP model without
  BatchNorm folding, flip TTA, other batch sizes, torch.compile, ONNX Runtime.
* other model folders with the shipped defaults (``--compare DIR ...``), timed in the same run
  as the shipped model, so that their ratio does not depend on the machine's day.
* MONAI's SegResNet in the configuration of MONAI's BraTS tutorial
  (``3d_segmentation/brats_segmentation_3d``): ``SegResNet(blocks_down=[1, 2, 2, 4],
  blocks_up=[1, 1, 1], init_filters=16, in_channels=4, out_channels=3, dropout_prob=0.2)``,
  random weights, ``sliding_window_inference(roi_size=(240, 240, 160), sw_batch_size=1,
  overlap=0.5)`` over the whole volume, channel-wise z-score on non-zero voxels and sigmoid >
  0.5 as in the tutorial; fp32 as the tutorial runs on CPU, and bf16 autocast for a
  like-for-like comparison with ours. Same thread count as ours.
* the whole CLI call: ``bratseg predict CASE --output OUT --quiet`` as a subprocess, wall
  time median, and its peak RSS.

Usage:
    python bench/bench_predict.py [--case CASE_DIR] [--runs 5] [--cli-runs 5] [--threads N]
                                  [--variants] [--no-monai] [--compare MODEL_DIR ...] [--json OUT.json]

The case defaults to ``$BRATSEG_DATA/brats18/Brats18_2013_11_1`` (``../shared/data`` beside the
checkout). Take figures on a quiet machine: the script prints the load average before and
after, and warns when another process is busy.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from machine_load import MachineLoad

REPO = Path(__file__).resolve().parent.parent
DATA = Path(os.environ.get("BRATSEG_DATA", REPO.parent / "shared" / "data"))
DEFAULT_CASE = DATA / "brats18" / "Brats18_2013_11_1"


# --------------------------------------------------------------------------------------------
# Workers: one configuration, in its own process; print one JSON line.
# --------------------------------------------------------------------------------------------


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def worker_bratseg(case: Path, runs: int, threads: int, variant: str, model_dir: Path | None = None) -> dict:
    t0 = time.perf_counter()
    import torch

    from bratseg.inference import predictor

    t_import = time.perf_counter() - t0
    torch.set_num_threads(threads)
    kwargs: dict = {}
    if variant.startswith("bs"):
        kwargs["batch_size"] = int(variant[2:])
    if variant == "fp32":
        kwargs["precision"] = "fp32"
    if variant == "tta":
        kwargs["flip_tta"] = True
    t1 = time.perf_counter()
    if variant in ("smp", "smp-fp32"):
        # SMP's model as loaded, BatchNorm as separate layers (no fx folding).
        import segmentation_models_pytorch as smp

        from bratseg.preprocessing.config import PreprocessingConfig

        model = smp.from_pretrained(str(predictor.SHIPPED_MODEL))
        prep = PreprocessingConfig.from_json(predictor.SHIPPED_MODEL / "preprocessing.json")
        if variant == "smp-fp32":
            kwargs["precision"] = "fp32"
        seg = predictor.Segmenter(model, prep, batch_size=32, **kwargs)
    else:
        seg = predictor.Segmenter.from_pretrained(model_dir, **kwargs)
    if variant == "compile":
        seg.model = torch.compile(seg.model, dynamic=False)
    if variant == "onnxruntime":
        _use_onnxruntime(seg, threads)
    t_load = time.perf_counter() - t1

    from bratseg.data.io import load_case
    from bratseg.data.layout import case_from_folder

    t2 = time.perf_counter()
    volumes = load_case(case_from_folder(case), with_label=False)
    t_read = time.perf_counter() - t2
    times = [seg.segment(volumes).seconds for _ in range(runs)]
    return {
        "import_s": t_import,
        "load_s": t_load,
        "read_s": t_read,
        "first_s": times[0],
        "warm_median_s": statistics.median(times[1:]) if runs > 1 else times[0],
        "times": times,
        "precision": seg.precision,
        "batch_size": seg.batch_size,
        "peak_rss_mb": _peak_rss_mb(),
    }


def _use_onnxruntime(seg, threads: int) -> None:
    """Swap the network for an ONNX Runtime session (fp32: ORT's CPU provider has no bf16
    convolutions on x86), exported from the loaded, BatchNorm-folded model."""
    import io

    import onnxruntime as ort
    import torch

    buf = io.BytesIO()
    example = torch.zeros(seg.batch_size, 4, *seg.preprocessing.crop_size)
    torch.onnx.export(
        seg.model, (example,), buf, input_names=["x"], output_names=["y"], dynamo=False, dynamic_axes={"x": {0: "n"}}
    )
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    session = ort.InferenceSession(buf.getvalue(), options, providers=["CPUExecutionProvider"])
    seg.precision = "fp32 (ORT)"
    seg._forward = lambda x: torch.from_numpy(session.run(None, {"x": x.contiguous().numpy()})[0])


def segresnet_tutorial(case: Path):
    """MONAI's BraTS-tutorial SegResNet (random weights, seed 0: only speed is measured) and
    the case's four modalities stacked ``[4, X, Y, Z]`` in bratseg's order, as it takes them.
    Shared by this script and ``bench_throughput.py``, so both measure the same peer."""
    import numpy as np
    import torch
    from monai.networks.nets import SegResNet

    from bratseg.data.io import load_case
    from bratseg.data.layout import MODALITIES, case_from_folder

    torch.manual_seed(0)
    model = SegResNet(
        blocks_down=[1, 2, 2, 4], blocks_up=[1, 1, 1], init_filters=16, in_channels=4, out_channels=3, dropout_prob=0.2
    ).eval()
    volumes = load_case(case_from_folder(case), with_label=False)
    return model, np.stack([volumes.images[m] for m in MODALITIES])


def worker_monai(case: Path, runs: int, threads: int, variant: str) -> dict:
    """SegResNet as in MONAI's BraTS tutorial (random weights: only speed is measured)."""
    import torch
    from monai.inferers import sliding_window_inference

    torch.set_num_threads(threads)
    model, raw = segresnet_tutorial(case)  # raw: [4, 240, 240, 155]

    def predict() -> float:
        t = time.perf_counter()
        x = torch.from_numpy(raw).clone()
        for c in range(x.shape[0]):  # NormalizeIntensityd(nonzero=True, channel_wise=True)
            nz = x[c] != 0
            vals = x[c][nz]
            x[c][nz] = (vals - vals.mean()) / vals.std()
        ctx = torch.autocast("cpu", dtype=torch.bfloat16) if variant == "bf16" else torch.autocast("cpu", enabled=False)
        with torch.inference_mode(), ctx:
            out = sliding_window_inference(
                inputs=x[None], roi_size=(240, 240, 160), sw_batch_size=1, predictor=model, overlap=0.5
            )
            _ = (torch.sigmoid(out.float()) > 0.5)[0].numpy()
        return time.perf_counter() - t

    times = [predict() for _ in range(runs)]
    return {
        "first_s": times[0],
        "warm_median_s": statistics.median(times[1:]) if runs > 1 else times[0],
        "times": times,
        "precision": "bf16" if variant == "bf16" else "fp32",
        "peak_rss_mb": _peak_rss_mb(),
    }


def worker_import(threads: int) -> dict:
    """Cold start of the predict path: import + model load, nothing else."""
    t0 = time.perf_counter()
    from bratseg.cli.predict import run_predict  # noqa: F401  (what `bratseg predict` imports)
    from bratseg.inference.predictor import Segmenter

    t1 = time.perf_counter()
    Segmenter.from_pretrained(threads=threads)
    t2 = time.perf_counter()
    heavy = [
        m
        for m in ("segmentation_models_pytorch", "timm", "torchvision", "monai", "gradio", "flask")
        if m in sys.modules
    ]
    return {"import_s": t1 - t0, "load_s": t2 - t1, "heavy_modules": heavy, "peak_rss_mb": _peak_rss_mb()}


def worker_cli(case: Path, threads: int) -> dict:
    """One ``bratseg predict`` call as a child process: wall time and the child's peak RSS."""
    exe = Path(sys.executable).with_name("bratseg")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "bratseg"]
    with tempfile.TemporaryDirectory() as tmp:
        args = [*cmd, "predict", str(case), "--output", f"{tmp}/pred.nii.gz", "--quiet", "--threads", str(threads)]
        t = time.perf_counter()
        subprocess.run(args, check=True)
        wall = time.perf_counter() - t
    return {"wall_s": wall, "peak_rss_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024}


def _run_worker(kind: str, *args: str) -> dict:
    cmd = [sys.executable, __file__, "--worker", kind, *args]
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
    if out.returncode != 0:
        # A variant that cannot run here (e.g. torch.compile without a C++ compiler) is a
        # result too: report it instead of losing the others.
        last = (out.stderr.strip().splitlines() or ["no output"])[-1]
        return {"failed": f"exit {out.returncode}: {last[:160]}"}
    return json.loads(out.stdout.strip().splitlines()[-1])


# --------------------------------------------------------------------------------------------
# Driver
# --------------------------------------------------------------------------------------------


def _busy_processes() -> list[str]:
    """Other processes using CPU now (a rough check that the machine is quiet)."""
    try:
        out = subprocess.run(["ps", "-eo", "pid,pcpu,args", "--sort=-pcpu"], capture_output=True, text=True).stdout
    except OSError:
        return []
    busy = []
    for line in out.splitlines()[1:6]:
        pid, pcpu, args = line.split(None, 2)
        if int(pid) != os.getpid() and float(pcpu) > 20:
            busy.append(f"{pid} {pcpu}% {args[:80]}")
    return busy


def _fmt(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--case", type=Path, default=DEFAULT_CASE)
    parser.add_argument("--runs", type=int, default=5, help="segment() calls per configuration (first is cold)")
    parser.add_argument("--monai-runs", type=int, default=3)
    parser.add_argument("--cli-runs", type=int, default=5)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--variants", action="store_true", help="also the variants kept or rejected")
    parser.add_argument("--no-monai", action="store_true")
    parser.add_argument(
        "--compare", type=Path, nargs="+", default=[], help="also time these model folders, in the same run"
    )
    parser.add_argument("--json", type=Path, help="write the raw results here")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--model-dir", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--variant", default="default", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.worker:
        if args.worker == "bratseg":
            result = worker_bratseg(args.case, args.runs, args.threads, args.variant, args.model_dir)
        elif args.worker == "monai":
            result = worker_monai(args.case, args.monai_runs, args.threads, args.variant)
        elif args.worker == "import":
            result = worker_import(args.threads)
        else:
            result = worker_cli(args.case, args.threads)
        print(json.dumps(result))
        return

    if not args.case.is_dir():
        sys.exit(f"case folder {args.case} not found (set BRATSEG_DATA or pass --case)")
    command = "python " + " ".join(shlex.quote(a) for a in sys.argv)
    busy = _busy_processes()
    load = MachineLoad()
    common = ["--case", str(args.case), "--threads", str(args.threads)]
    rows: list[tuple[str, dict]] = []

    def bratseg(variant: str, label: str, model_dir: Path | None = None) -> None:
        model = [] if model_dir is None else ["--model-dir", str(model_dir)]
        r = _run_worker("bratseg", *common, "--runs", str(args.runs), "--variant", variant, *model)
        rows.append((label, r))
        print(f"  {label}: {r.get('failed') or _fmt(r['warm_median_s']) + ' s warm median'}", file=sys.stderr)

    # A throw-away run first, so that the first configuration measured does not also pay for
    # cold file caches (scans, weights, Python bytecode) in its first call.
    _run_worker("bratseg", *common, "--runs", "2", "--variant", "default")
    bratseg("default", "bratseg (shipped defaults)")
    for model_dir in args.compare:
        bratseg("default", f"bratseg, model {model_dir}", model_dir)
    if args.variants:
        bratseg("fp32", "bratseg fp32")
        bratseg("smp", "SMP model, BatchNorm not folded, batch 32, bf16")
        bratseg("smp-fp32", "SMP model, BatchNorm not folded, fp32, batch 32")
        for bs in (4, 16, 32):
            bratseg(f"bs{bs}", f"bratseg batch {bs}")
        bratseg("tta", "bratseg + flip TTA")
        bratseg("compile", "bratseg + torch.compile")
        bratseg("onnxruntime", "bratseg network in ONNX Runtime")
    monai_rows = []
    if not args.no_monai:
        for variant in ("fp32", "bf16"):
            r = _run_worker("monai", *common, "--monai-runs", str(args.monai_runs), "--variant", variant)
            monai_rows.append((f"MONAI SegResNet tutorial, {variant}", r))
            print(f"  MONAI {variant}: median {r['warm_median_s']:.2f} s", file=sys.stderr)
    imports = [_run_worker("import", *common) for _ in range(3)]
    cli = [_run_worker("cli", *common) for _ in range(args.cli_runs)]
    load.stop()

    ours = rows[0][1]
    print(f"\n## Prediction benchmark ({args.case.name}, {args.threads} threads)\n")
    print(f"Command: `{command}`  ")
    print(load.report())
    if busy:
        print(f"WARNING: other busy processes at start, figures inflated: {'; '.join(busy)}")
    print()
    print("| configuration | precision | first call (s) | median of warm calls (s) | peak RSS (MB) |")
    print("|---|---|---|---|---|")
    for label, r in rows + monai_rows:
        if "failed" in r:
            print(f"| {label} | - | failed: {r['failed']} | - | - |")
            continue
        print(
            f"| {label} | {r['precision']} | {_fmt(r['first_s'])} | {_fmt(r['warm_median_s'])} | "
            f"{r['peak_rss_mb']:.0f} |"
        )
    print(f"\nruns per configuration: {args.runs} bratseg (first cold, median of the rest), {args.monai_runs} MONAI")
    for label, r in monai_rows:
        if "failed" in r or "failed" in ours:
            continue
        print(
            f"speed-up over {label}: {r['warm_median_s'] / ours['warm_median_s']:.1f}x warm, "
            f"{r['first_s'] / ours['first_s']:.1f}x first call"
        )
    print(
        f"\nimport + model load (fresh process, median of 3): import "
        f"{statistics.median(i['import_s'] for i in imports):.2f} s, load "
        f"{statistics.median(i['load_s'] for i in imports):.2f} s; "
        f"heavy modules imported: {imports[0]['heavy_modules']}"
    )
    walls = [c["wall_s"] for c in cli]
    print(
        f"whole CLI call `bratseg predict CASE --output OUT --quiet` (median of {len(cli)}): "
        f"{statistics.median(walls):.2f} s (min {min(walls):.2f}, max {max(walls):.2f}); "
        f"peak RSS {max(c['peak_rss_mb'] for c in cli):.0f} MB"
    )
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "command": command,
                    "load_before": load.load_before,
                    "load_after": load.load_after,
                    "busy": busy,
                    "others_cpu_s": load.others_cpu_s,
                    "elapsed_s": load.elapsed_s,
                    "bratseg": dict(rows),
                    "monai": dict(monai_rows),
                    "imports": imports,
                    "cli": cli,
                },
                indent=2,
            )
        )


if __name__ == "__main__":
    main()
