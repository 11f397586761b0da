"""Training throughput (slices per second) of a training config on this machine.

Runs the real training step (the config's model, loss, AdamW, autocast, data loader with
augmentation and modality dropout over the memory-mapped cache) for a few batches, several
times, and prints the median.

    python bench/bench_train.py --cache cache/brats18 --config training/brats18_cpu.json [--steps 20 --repeats 3]
    python bench/bench_train.py --cache cache/brats27 --config training/cv27_screen_light.json \
        --patch-size 128 128 --no-channels-last   # patch training; memory format as a switch
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from bratseg.model.unet import build_unet, unet_kwargs
from bratseg.preprocessing.config import PreprocessingConfig
from bratseg.training.config import TrainConfig
from bratseg.training.dataset import SliceDataset, seed_worker
from bratseg.training.epoch import autocast
from bratseg.training.losses import RegionDiceBCELoss


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cache", type=Path, required=True)
    parser.add_argument("--config", type=Path, required=True)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--patch-size", type=int, nargs=2, help="train on crops of this size (overrides the config)")
    parser.add_argument("--no-channels-last", action="store_true", help="keep the default NCHW memory format")
    args = parser.parse_args()
    cfg = TrainConfig.from_json(args.config)
    if args.patch_size:
        cfg.patch_size = list(args.patch_size)
    memory_format = torch.contiguous_format if args.no_channels_last else torch.channels_last
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    split = json.loads((args.cache / "split.json").read_text())
    dataset = SliceDataset(
        args.cache,
        split["train"],
        cfg.augment,
        cfg.modality_dropout,
        patch_size=cfg.patch_size or None,
        foreground_fraction=cfg.foreground_fraction,
    )
    prep = PreprocessingConfig.from_json(args.cache / "preprocessing.json")
    model = build_unet(**unet_kwargs(cfg.to_dict(), in_channels=len(prep.channels)))
    model = model.to(memory_format=memory_format).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr)
    loss_fn = RegionDiceBCELoss()
    device = torch.device("cpu")
    rates = []
    for repeat in range(args.repeats + 1):
        loader = DataLoader(
            dataset,
            batch_size=cfg.batch_size,
            shuffle=True,
            num_workers=cfg.num_workers,
            worker_init_fn=seed_worker,
            drop_last=True,
            generator=torch.Generator().manual_seed(repeat),
        )
        it = iter(loader)
        next(it)  # worker start-up is not throughput
        t0 = time.perf_counter()
        for _ in range(args.steps):
            image, target = next(it)
            with autocast(device, cfg.amp):
                logits = model(image.contiguous(memory_format=memory_format))
            loss = loss_fn(logits.float(), target)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        if repeat:  # the first repeat warms up allocators and kernels
            rates.append(args.steps * cfg.batch_size / (time.perf_counter() - t0))
        del it, loader
    print(
        f"config {args.config}: encoder {cfg.encoder}, batch {cfg.batch_size}, amp {cfg.amp}, "
        f"threads {torch.get_num_threads()}, workers {cfg.num_workers}, patch {cfg.patch_size or 'whole slice'}, "
        f"{'NCHW' if args.no_channels_last else 'channels_last'}"
    )
    print(
        f"training throughput: {statistics.median(rates):.1f} slices/s "
        f"(median of {args.repeats} x {args.steps} steps; runs: {', '.join(f'{r:.1f}' for r in rates)})"
    )


if __name__ == "__main__":
    main()
