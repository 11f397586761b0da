"""Compare model choices by training each on the same slice cache.

For each configuration (encoder, input size, modality dropout) this trains with
``bratseg.training`` for a fixed budget and reports the validation Dice per region (on the
cached slices of the split's validation cases) with all four modalities and with FLAIR + T1ce
alone, plus the CPU inference speed of the architecture (bf16, 2 threads).

    python bench/compare_configs.py --cache CACHE_DIR --out OUT_DIR [--epochs 30] [--only NAME ...]
    python bench/compare_configs.py --cpu-speed-only      # architecture speed on this CPU

Results go to OUT_DIR/results.json and a Markdown table on stdout. BENCHMARKS.md's first
table also has a 4-class softmax configuration: that output kind is no longer trained.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import time
from pathlib import Path

import numpy as np
import torch

CONFIGS: dict[str, dict] = {
    "resnet18-160x192-regions": {},
    "resnet34-160x192-regions": {"encoder": "resnet34"},
    "efficientnet-b0-160x192-regions": {"encoder": "efficientnet-b0"},
    "mobilenet_v2-160x192-regions": {"encoder": "mobilenet_v2"},
    "resnet18-128x128-regions": {"resize": [128, 128]},
    "resnet18-160x192-regions-no-dropout": {"modality_dropout": 0.0},
}


def resized_cache(cache: Path, out: Path, size: tuple[int, int]) -> Path:
    """A copy of ``cache`` with slices resized in-plane, as `bratseg cache --resize` makes it."""
    from bratseg.preprocessing.config import PreprocessingConfig
    from bratseg.preprocessing.crop import resize_slices

    if (out / "manifest.csv").exists():
        return out
    out.mkdir(parents=True, exist_ok=True)
    images = np.load(cache / "images.npy", mmap_mode="r")
    labels = np.load(cache / "labels.npy", mmap_mode="r")
    img_out = np.lib.format.open_memmap(out / "images.npy", "w+", np.float16, (len(images), images.shape[1], *size))
    lab_out = np.lib.format.open_memmap(out / "labels.npy", "w+", np.uint8, (len(images), *size))
    for lo in range(0, len(images), 256):
        x = torch.from_numpy(np.asarray(images[lo : lo + 256], dtype=np.float32))
        y = torch.from_numpy(np.asarray(labels[lo : lo + 256])[:, None])
        img_out[lo : lo + 256] = resize_slices(x, size).numpy()
        lab_out[lo : lo + 256] = resize_slices(y, size, nearest=True)[:, 0].numpy()
    img_out.flush()
    lab_out.flush()
    for name in ("manifest.csv", "split.json"):
        shutil.copy(cache / name, out / name)
    prep = PreprocessingConfig.from_json(cache / "preprocessing.json")
    prep.resize = size
    prep.to_json(out / "preprocessing.json")
    return out


def evaluate(run_dir: Path, cache: Path, device: torch.device) -> dict:
    """Validation Dice (mean over cases) with all modalities and with FLAIR + T1ce only."""
    from safetensors.torch import load_file

    from bratseg.model.unet import build_unet
    from bratseg.training.config import TrainConfig
    from bratseg.training.dataset import SliceDataset
    from bratseg.training.distributed import DistributedContext
    from bratseg.training.epoch import validate
    from bratseg.training.losses import RegionDiceBCELoss

    cfg = TrainConfig.from_json(run_dir / "train_config.json")
    model = build_unet(encoder_name=cfg.encoder, in_channels=4, classes=3)
    model.load_state_dict(load_file(str(run_dir / "best.safetensors")))
    model.to(device, memory_format=torch.channels_last)
    split = json.loads((cache / "split.json").read_text())
    ctx = DistributedContext()
    out = {}
    for name, dropout in (("all4", 0.0), ("flair_t1ce", 1.0)):
        ds = SliceDataset(cache, split["val"], augment=False, modality_dropout=dropout)
        _, dice = validate(model, ds, sorted(set(ds.case_of)), RegionDiceBCELoss(), cfg, ctx)
        out[name] = {k: round(float(dice[:, i].mean()), 4) for i, k in enumerate(("WT", "TC", "ET"))}
    return out


def cpu_speed(encoder: str, size: tuple[int, int], classes: int, repeats: int = 5) -> float:
    """Median slices per second of bf16 inference on 2 threads, batch 32."""
    from bratseg.model.unet import build_unet

    torch.set_num_threads(2)
    model = build_unet(encoder_name=encoder, in_channels=4, classes=classes).eval()
    model = model.to(memory_format=torch.channels_last)
    x = torch.randn(32, 4, *size).contiguous(memory_format=torch.channels_last)
    times = []
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        model(x)
        for _ in range(repeats):
            t0 = time.perf_counter()
            model(x)
            times.append(time.perf_counter() - t0)
    return round(32 / statistics.median(times), 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cache", type=Path)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--num-workers", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--only", nargs="*")
    parser.add_argument("--cpu-speed-only", action="store_true")
    args = parser.parse_args()
    names = args.only or list(CONFIGS)
    if args.cpu_speed_only:
        print("| configuration | CPU bf16 slices/s (2 threads, median of 5) |\n|---|---|")
        for name in names:
            c = CONFIGS[name]
            speed = cpu_speed(c.get("encoder", "resnet18"), tuple(c.get("resize", (160, 192))), 3)
            print(f"| {name} | {speed} |", flush=True)
        return

    from bratseg.training.config import TrainConfig
    from bratseg.training.trainer import train

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    args.out.mkdir(parents=True, exist_ok=True)
    results = {}
    for name in names:
        c = dict(CONFIGS[name])
        cache = args.cache
        if "resize" in c:
            cache = resized_cache(args.cache, args.out / f"cache-{c['resize'][0]}", tuple(c.pop("resize")))
        cfg = TrainConfig(
            epochs=args.epochs, patience=args.epochs, num_workers=args.num_workers, batch_size=args.batch_size, **c
        )
        run_dir = args.out / name
        shutil.rmtree(run_dir, ignore_errors=True)
        t0 = time.perf_counter()
        train(cache, run_dir, cfg)
        seconds = time.perf_counter() - t0
        best = max(
            (json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()),
            key=lambda h: h["val_mean_dice"],
        )
        results[name] = {
            "train_seconds": round(seconds, 1),
            "best_epoch": best["epoch"],
            **evaluate(run_dir, cache, device),
        }
        print(name, json.dumps(results[name]), flush=True)
        (args.out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    print("\n| configuration | best epoch | WT | TC | ET | WT (FLAIR+T1ce) | TC (FLAIR+T1ce) | ET (FLAIR+T1ce) |")
    print("|---|---|---|---|---|---|---|---|")
    for name, r in results.items():
        a, f = r["all4"], r["flair_t1ce"]
        print(f"| {name} | {r['best_epoch']} | {a['WT']} | {a['TC']} | {a['ET']} | {f['WT']} | {f['TC']} | {f['ET']} |")


if __name__ == "__main__":
    main()
