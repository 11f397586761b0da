"""The training loop: one process, or many under ``torchrun`` (DistributedDataParallel).

Every epoch is seeded from ``(seed, epoch)`` (shuffle order, augmentation, modality dropout),
so a run killed and resumed from its last checkpoint ends with the weights an uninterrupted
run would have.

What RUN_DIR holds, and how it is written and read back, is :mod:`bratseg.training.run_files`;
the processes under ``torchrun`` are :mod:`bratseg.training.distributed`. Training into a
RUN_DIR that holds a run needs ``resume=True``; resuming refuses options that would change the
run's course.
"""

from __future__ import annotations

import json
import math
import time
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from torch.utils.data import DataLoader
from torch.utils.data.distributed import DistributedSampler
from tqdm import tqdm

from bratseg.data.io import atomic_write_bytes
from bratseg.errors import BratsegError, CacheError
from bratseg.model.precision import cpu_has_bf16
from bratseg.model.unet import build_unet, unet_kwargs
from bratseg.preprocessing.cache import fold_split
from bratseg.preprocessing.config import PreprocessingConfig
from bratseg.training.config import TrainConfig
from bratseg.training.dataset import SliceDataset, seed_worker
from bratseg.training.distributed import DistributedContext, process_group_backend
from bratseg.training.export import export_run
from bratseg.training.losses import RegionDiceBCELoss
from bratseg.training.run_files import (
    REGION_KEYS,
    RUN_OUTPUTS,
    append_metrics,
    check_resumable,
    load_checkpoint,
    plot_learning_curve,
    remove_leftovers,
    state_dict_sha256,
    write_best,
    write_checkpoint,
    write_metrics,
    write_rank_digest,
)

__all__ = ["DistributedContext", "epoch_seed", "load_split", "process_group_backend", "state_dict_sha256", "train"]


def epoch_seed(seed: int, epoch: int, rank: int = 0) -> int:
    """The seed of one epoch on one rank: shuffle order, augmentation and modality dropout.

    Rank 0 keeps the single-process formula (so runs started before ranks entered it resume
    identically); other ranks are offset so their augmentations differ from rank 0's.
    """
    return seed * 100_003 + epoch + rank * 1_000_000_007


def _autocast(device: torch.device, amp: str):
    if amp == "off":
        return nullcontext()
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    if torch.backends.mkldnn.is_available() and cpu_has_bf16():
        return torch.autocast("cpu", dtype=torch.bfloat16)
    return nullcontext()


def load_split(cache_dir: Path, config: TrainConfig) -> dict:
    """The cases a run trains and validates on: the cache's split, a cross-validation fold of
    all its cases (shuffled with the split's seed) when ``config.fold`` is set, or every case
    with none to validate on with ``config.all_cases``."""
    path = cache_dir / "split.json"
    if not path.exists():
        raise CacheError(f"{path}: missing; build the cache with `bratseg cache` first")
    split = json.loads(path.read_text())
    if getattr(config, "all_cases", False):
        if config.fold is not None:
            raise CacheError("--all-cases trains on every case: it takes no --fold")
        return {"train": sorted(split["train"] + split["val"]), "val": [], "seed": split.get("seed", 0)}
    if config.fold is None:
        return split
    try:
        return fold_split(split["train"] + split["val"], config.num_folds, config.fold, split.get("seed", 0))
    except ValueError as exc:
        raise CacheError(f"{path}: {exc}") from None


def _lr_lambda(config: TrainConfig, steps_per_epoch: int):
    warmup = config.warmup_epochs * steps_per_epoch
    total = max(config.epochs * steps_per_epoch, 1)

    def fn(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warmup) / max(total - warmup, 1))))

    return fn


def dice_from_stats(stats: torch.Tensor) -> np.ndarray:
    """Per case and region Dice from ``[cases, regions, (intersection, pred, ref)]`` sums,
    with the BraTS convention that two empty masks score 1."""
    inter, pred, ref = stats[..., 0], stats[..., 1], stats[..., 2]
    denom = pred + ref
    dice = torch.where(denom > 0, 2 * inter / denom.clamp(min=1), torch.ones_like(denom))
    return dice.numpy()


def train(cache_dir: str | Path, run_dir: str | Path, config: TrainConfig, resume: bool = False) -> Path:
    """Train on a slice cache; returns the run folder. See the module docstring."""
    ctx = DistributedContext()
    try:
        return _train(Path(cache_dir), Path(run_dir), config, resume, ctx)
    finally:
        ctx.close()


def _train(cache_dir: Path, run_dir: Path, config: TrainConfig, resume: bool, ctx: DistributedContext) -> Path:
    if config.threads:
        torch.set_num_threads(config.threads)
    prep = PreprocessingConfig.from_json(cache_dir / "preprocessing.json")
    split = load_split(cache_dir, config)
    run_dir.mkdir(parents=True, exist_ok=True)
    last_path = run_dir / "last.pt"
    existing = [name for name in RUN_OUTPUTS if (run_dir / name).exists()]
    if not resume and existing:
        raise FileExistsError(
            f"{run_dir} already holds a run ({', '.join(existing)}); pass --resume to continue it or pick a new --out"
        )
    if resume and last_path.exists():
        check_resumable(run_dir, config)
    ctx.barrier()  # every rank has checked the folder before rank 0 writes to it
    if ctx.is_main:
        remove_leftovers(run_dir)
        atomic_write_bytes(
            run_dir / "train_config.json", lambda p: p.write_text(json.dumps(config.to_dict(), indent=2) + "\n")
        )
        atomic_write_bytes(run_dir / "preprocessing.json", prep.to_json)

    model_kwargs = unet_kwargs(config.to_dict(), in_channels=len(prep.channels))
    torch.manual_seed(config.seed)
    model = build_unet(**model_kwargs)
    if config.init_weights and not (resume and last_path.exists()):
        load_init_weights(model, Path(config.init_weights), prep)
        if ctx.is_main:
            print(f"initialised from {config.init_weights}", flush=True)
    model = model.to(ctx.device, memory_format=torch.channels_last)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)

    # The weight average lives beside the model; validation and best.safetensors use it.
    ema = (
        AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(config.ema_decay), use_buffers=True)
        if config.ema_decay
        else None
    )
    train_set = SliceDataset(
        cache_dir,
        split["train"],
        config.augment,
        config.modality_dropout,
        config.intensity_augment,
        patch_size=config.patch_size or None,
        foreground_fraction=config.foreground_fraction,
    )
    val_set = SliceDataset(cache_dir, split["val"])
    if len(train_set) == 0:
        raise CacheError(f"{cache_dir}: no training slices in the split")
    # DistributedSampler(drop_last=True) gives each rank floor(N / world_size) slices.
    per_rank = len(train_set) // ctx.world_size
    if per_rank == 0:
        raise CacheError(f"{cache_dir}: {len(train_set)} training slices for {ctx.world_size} processes")
    steps_per_epoch = per_rank // config.batch_size if per_rank >= config.batch_size else 1
    if config.max_train_batches:
        steps_per_epoch = min(steps_per_epoch, config.max_train_batches)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _lr_lambda(config, steps_per_epoch))

    # -inf, not -1: without validation cases the score is -train_loss, which can be below -1.
    state = {"epoch": 0, "best_score": -math.inf, "best_epoch": 0, "bad_epochs": 0, "history": []}
    if resume and last_path.exists():
        ckpt = load_checkpoint(last_path)
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        if ema is not None:
            if "ema" not in ckpt:
                raise BratsegError(f"{last_path}: holds no weight average; this run trained without ema_decay")
            ema.load_state_dict(ckpt["ema"])
        state = ckpt["state"]
        if ctx.is_main:
            print(f"resumed from {last_path} after epoch {state['epoch']}", flush=True)
    elif resume and ctx.is_main:
        print(f"no checkpoint at {last_path}: starting from epoch 1", flush=True)
    if ctx.is_main:
        # last.pt is the record of what finished: metrics.jsonl is written after it, so a kill
        # in between would otherwise leave an epoch missing from the file for good.
        write_metrics(run_dir / "metrics.jsonl", state["history"])

    net = DistributedDataParallel(model) if ctx.distributed else model
    loss_fn = RegionDiceBCELoss()
    val_cases = sorted(set(val_set.case_of))
    while state["epoch"] < config.epochs and state["bad_epochs"] < config.patience:
        epoch = state["epoch"] + 1
        t0 = time.perf_counter()
        train_loss = _train_epoch(
            net, train_set, optimizer, scheduler, loss_fn, config, ctx, epoch, steps_per_epoch, ema
        )
        ctx.sync_buffers(model)
        validated = ema.module if ema is not None else model
        val_loss, dice = _validate(validated, val_set, val_cases, loss_fn, config, ctx)
        score = float(dice.mean()) if dice.size else -train_loss
        improved = score > state["best_score"]
        state.update(epoch=epoch)
        if improved:
            state.update(best_score=score, best_epoch=epoch, bad_epochs=0)
        else:
            state["bad_epochs"] += 1
        record = {
            "epoch": epoch,
            "train_loss": train_loss,
            "val_loss": val_loss,
            **{f"dice_{k}": float(dice[:, i].mean()) if dice.size else None for i, k in enumerate(REGION_KEYS)},
            "val_mean_dice": score,
            "lr": optimizer.param_groups[0]["lr"],
            "seconds": time.perf_counter() - t0,
            "train_slices": steps_per_epoch * config.batch_size * ctx.world_size,
        }
        state["history"].append(record)
        if ctx.is_main:
            if improved:
                write_best(run_dir / "best.safetensors", validated)
            write_checkpoint(last_path, model, optimizer, scheduler, state, ema)
            append_metrics(run_dir / "metrics.jsonl", record)
            plot_learning_curve(run_dir, state["history"])
            dice_text = (
                f"Dice WT {record['dice_WT']:.3f} TC {record['dice_TC']:.3f} ET {record['dice_ET']:.3f}"
                if dice.size
                else "no validation cases"
            )
            print(
                f"epoch {epoch}: train loss {train_loss:.4f}, val loss {val_loss:.4f}, {dice_text}"
                + (" (best)" if improved else f" ({state['bad_epochs']} without improvement)"),
                flush=True,
            )
        ctx.barrier()
    if ctx.distributed:
        write_rank_digest(run_dir, model, ctx)
    if ctx.is_main:
        if state["bad_epochs"] >= config.patience:
            print(f"early stopping: no better validation Dice for {config.patience} epochs")
        export_run(run_dir, run_dir / "model", model_kwargs=model_kwargs)
    ctx.barrier()
    return run_dir


# Preprocessing fields that shape what the network sees; the others only pick cached slices.
INPUT_FIELDS = ("modalities", "normalization", "crop_size", "resize", "regions", "context_slices")


def load_init_weights(model: torch.nn.Module, model_dir: Path, prep: PreprocessingConfig) -> None:
    """Copy the weights of an exported model folder into ``model`` (fine-tuning).

    The folder's preprocessing must prepare inputs as this run's cache does, and its network
    must have this run's architecture; anything else is refused with the file and the
    difference, rather than training a model on inputs it was not built for.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    weights_path, prep_path = model_dir / "model.safetensors", model_dir / "preprocessing.json"
    for path in (weights_path, prep_path):
        if not path.is_file():
            raise BratsegError(f"{path}: missing; init_weights needs a model folder from `bratseg export`")
    theirs = PreprocessingConfig.from_json(prep_path)
    differ = [f for f in INPUT_FIELDS if getattr(theirs, f) != getattr(prep, f)]
    if differ:
        detail = ", ".join(f"{f} {getattr(theirs, f)!r} vs {getattr(prep, f)!r}" for f in differ)
        raise BratsegError(f"{prep_path}: preprocessing differs from the cache's ({detail})")
    try:
        weights = load_file(str(weights_path))
    except (SafetensorError, OSError) as exc:
        raise BratsegError(f"{weights_path}: unreadable weights ({exc})") from None
    own = model.state_dict()
    problems = sorted(set(own) ^ set(weights)) + [
        f"{k} {tuple(weights[k].shape)} vs {tuple(v.shape)}"
        for k, v in own.items()
        if k in weights and weights[k].shape != v.shape
    ]
    if problems:
        shown = ", ".join(problems[:3]) + (f" and {len(problems) - 3} more" if len(problems) > 3 else "")
        raise BratsegError(f"{weights_path}: another architecture than this run's ({shown})")
    # Exported weights are float16 by default; the run trains in float32 (integer buffers stay integers).
    model.load_state_dict({k: v.to(own[k].dtype) for k, v in weights.items()})


def _train_epoch(net, dataset, optimizer, scheduler, loss_fn, config, ctx, epoch, steps, ema=None) -> float:
    net.train()
    seed = epoch_seed(config.seed, epoch, ctx.rank)
    generator = torch.Generator().manual_seed(seed)
    if ctx.distributed:
        sampler = DistributedSampler(dataset, ctx.world_size, ctx.rank, shuffle=True, seed=config.seed, drop_last=True)
        sampler.set_epoch(epoch)
        shuffle = None
    else:
        sampler, shuffle = None, True
    dataset.reseed(seed)  # used when num_workers == 0; workers reseed from the generator
    loader = DataLoader(
        dataset,
        batch_size=config.batch_size,
        shuffle=shuffle,
        sampler=sampler,
        num_workers=config.num_workers,
        worker_init_fn=seed_worker,
        generator=generator,
        # Full batches only, unless a rank's share is smaller than one batch (tiny caches).
        drop_last=len(dataset) // ctx.world_size >= config.batch_size,
        pin_memory=ctx.device.type == "cuda",
        persistent_workers=False,
    )
    total, count = 0.0, 0
    bar = tqdm(loader, total=steps, desc=f"epoch {epoch}", leave=False, disable=not ctx.is_main)
    for step, (image, target) in enumerate(bar):
        if step >= steps:
            break
        image = image.to(ctx.device, non_blocking=True).contiguous(memory_format=torch.channels_last)
        target = target.to(ctx.device, non_blocking=True)
        with _autocast(ctx.device, config.amp):
            logits = net(image)
        loss = loss_fn(logits.float(), target)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        if ema is not None:
            ema.update_parameters(net.module if ctx.distributed else net)
        total += float(loss.detach())
        count += 1
        bar.set_postfix(loss=f"{total / count:.4f}")
    stats = ctx.all_reduce(torch.tensor([total, count], dtype=torch.float64))
    return float(stats[0] / max(stats[1], 1))


@torch.no_grad()
def _validate(model, dataset, cases, loss_fn, config, ctx) -> tuple[float, np.ndarray]:
    model.eval()
    case_index = {c: i for i, c in enumerate(cases)}
    stats = torch.zeros(len(cases), 3, 3, dtype=torch.float64)
    mine = list(range(ctx.rank, len(dataset), ctx.world_size))
    loss_sum = torch.zeros(2, dtype=torch.float64)
    subset = torch.utils.data.Subset(dataset, mine)
    loader = DataLoader(subset, batch_size=config.batch_size, num_workers=config.num_workers)
    pos = 0
    for image, target in loader:
        image = image.to(ctx.device).contiguous(memory_format=torch.channels_last)
        with _autocast(ctx.device, config.amp):
            logits = model(image).float()
        loss_sum += torch.tensor([float(loss_fn(logits, target.to(ctx.device))) * len(image), len(image)])
        pred = (logits > 0).cpu()  # a region is predicted where its sigmoid is above 0.5
        ref = target.bool()
        for j in range(len(image)):
            c = case_index[dataset.case_of[mine[pos + j]]]
            p, r = pred[j].flatten(1), ref[j].flatten(1)
            stats[c, :, 0] += (p & r).sum(1)
            stats[c, :, 1] += p.sum(1)
            stats[c, :, 2] += r.sum(1)
        pos += len(image)
    ctx.all_reduce(stats)
    ctx.all_reduce(loss_sum)
    return float(loss_sum[0] / max(loss_sum[1], 1)), dice_from_stats(stats)
