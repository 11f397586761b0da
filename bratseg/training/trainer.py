"""The training loop: one process, or many under ``torchrun`` (DistributedDataParallel).

Every epoch is seeded from ``(seed, epoch)`` (shuffle order, augmentation, modality dropout),
so a run killed and resumed from its last checkpoint ends with the weights an uninterrupted
run would have.

What RUN_DIR holds, and how it is written and read back, is :mod:`bratseg.training.run_files`;
the processes under ``torchrun`` are :mod:`bratseg.training.distributed`; one epoch's training
and validation passes are :mod:`bratseg.training.epoch`. Training into a RUN_DIR that holds a
run needs ``resume=True``; resuming refuses options that would change the run's course.
"""

from __future__ import annotations

import functools
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch.nn.parallel import DistributedDataParallel
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from bratseg.data.io import atomic_write_bytes
from bratseg.errors import BratsegError, CacheError
from bratseg.model.unet import build_unet, unet_kwargs
from bratseg.preprocessing.cache import fold_split
from bratseg.preprocessing.config import PreprocessingConfig
from bratseg.training.config import TrainConfig
from bratseg.training.dataset import SliceDataset
from bratseg.training.deep_supervision import DeepSupervision
from bratseg.training.distributed import DistributedContext, process_group_backend
from bratseg.training.epoch import epoch_seed, train_epoch, validate
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


def load_split(cache_dir: Path, config: TrainConfig) -> dict:
    """The cases a run trains and validates on: the cache's split, a cross-validation fold of
    all its cases (shuffled with the split's seed) when ``config.fold`` is set, a fold of that
    fold's training cases with ``config.inner_fold`` (nested), or every case with none to
    validate on with ``config.all_cases``."""
    path = cache_dir / "split.json"
    if not path.exists():
        raise CacheError(f"{path}: missing; build the cache with `bratseg cache` first")
    try:
        split = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise CacheError(f"{path}: cannot be read as a cache split ({exc})") from None
    if not isinstance(split, dict) or not all(isinstance(split.get(key), list) for key in ("train", "val")):
        raise CacheError(f"{path}: not a cache split (it needs lists of train and val cases)")
    if getattr(config, "all_cases", False):
        if config.fold is not None:
            raise CacheError("--all-cases trains on every case: it takes no --fold")
        return {"train": sorted(split["train"] + split["val"]), "val": [], "seed": split.get("seed", 0)}
    if config.fold is None:
        return split
    seed = split.get("seed", 0)
    try:
        outer = fold_split(split["train"] + split["val"], config.num_folds, config.fold, seed)
        if getattr(config, "inner_fold", None) is None:
            return outer
        inner = fold_split(outer["train"], config.inner_num_folds, config.inner_fold, seed)
        return {**inner, "outer_fold": config.fold, "outer_num_folds": config.num_folds}
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


def train(cache_dir: str | Path, run_dir: str | Path, config: TrainConfig, resume: bool = False) -> Path:
    """Train on a slice cache; returns the run folder. See the module docstring."""
    ctx = DistributedContext()
    try:
        return _train(Path(cache_dir), Path(run_dir), config, resume, ctx)
    finally:
        ctx.close()


@dataclass
class _Training:
    """What a run trains with: the network (and its weight average), the optimiser and its
    schedule, the data, and the early-stopping state with the history of finished epochs."""

    model: torch.nn.Module
    model_kwargs: dict
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    ema: AveragedModel | None
    train_set: SliceDataset
    val_set: SliceDataset
    steps_per_epoch: int
    supervision: DeepSupervision | None = None  # training-only heads on the decoder
    # -inf, not -1: without validation cases the score is -train_loss, which can be below -1.
    state: dict = field(
        default_factory=lambda: {"epoch": 0, "best_score": -math.inf, "best_epoch": 0, "bad_epochs": 0, "history": []}
    )

    @property
    def validated(self) -> torch.nn.Module:
        """The weights validation and ``best.safetensors`` use: the average when there is one."""
        return self.ema.module if self.ema is not None else self.model


def _train(cache_dir: Path, run_dir: Path, config: TrainConfig, resume: bool, ctx: DistributedContext) -> Path:
    prep, split = _open_run_dir(cache_dir, run_dir, config, resume, ctx)
    last_path = run_dir / "last.pt"
    run = _build(cache_dir, prep, split, config, resume and last_path.exists(), ctx)
    _restore(run, last_path, resume, ctx)
    if ctx.is_main:
        # last.pt is the record of what finished: metrics.jsonl is written after it, so a kill
        # in between would otherwise leave an epoch missing from the file for good.
        write_metrics(run_dir / "metrics.jsonl", run.state["history"])

    net = DistributedDataParallel(run.model) if ctx.distributed else run.model
    loss_fn = RegionDiceBCELoss(config.region_loss_weights)
    val_cases = sorted(set(run.val_set.case_of))
    while run.state["epoch"] < config.epochs and run.state["bad_epochs"] < config.patience:
        record, improved = _run_epoch(net, run, loss_fn, val_cases, config, ctx)
        if ctx.is_main:
            _save_epoch(run_dir, run, record, improved)
        ctx.barrier()
    if ctx.distributed:
        write_rank_digest(run_dir, run.model, ctx, run.supervision)
    if ctx.is_main:
        if run.state["bad_epochs"] >= config.patience:
            print(f"early stopping: no better validation Dice for {config.patience} epochs")
        export_run(run_dir, run_dir / "model", model_kwargs=run.model_kwargs)
    ctx.barrier()
    return run_dir


def _open_run_dir(
    cache_dir: Path, run_dir: Path, config: TrainConfig, resume: bool, ctx: DistributedContext
) -> tuple[PreprocessingConfig, dict]:
    """The cache's preprocessing and the run's split; checks that ``run_dir`` may be trained
    into (a run there needs ``resume``, with options that keep its course) and records there
    what is run."""
    if config.threads:
        torch.set_num_threads(config.threads)
    prep = PreprocessingConfig.from_json(cache_dir / "preprocessing.json")
    split = load_split(cache_dir, config)
    run_dir.mkdir(parents=True, exist_ok=True)
    existing = [name for name in RUN_OUTPUTS if (run_dir / name).exists()]
    if not resume and existing:
        raise FileExistsError(
            f"{run_dir} already holds a run ({', '.join(existing)}); pass --resume to continue it or pick a new --out"
        )
    if resume and (run_dir / "last.pt").exists():
        check_resumable(run_dir, config)
    ctx.barrier()  # every rank has checked the folder before rank 0 writes to it
    if ctx.is_main:
        remove_leftovers(run_dir)
        atomic_write_bytes(
            run_dir / "train_config.json", lambda p: p.write_text(json.dumps(config.to_dict(), indent=2) + "\n")
        )
        atomic_write_bytes(run_dir / "preprocessing.json", prep.to_json)
    return prep, split


def _build(
    cache_dir: Path,
    prep: PreprocessingConfig,
    split: dict,
    config: TrainConfig,
    resuming: bool,
    ctx: DistributedContext,
) -> _Training:
    """The network (seeded; from ``init_weights`` unless a checkpoint will replace them), its
    optimiser, weight average, data and learning-rate schedule, in the order that fixes the
    random streams every run and resumed run shares."""
    model_kwargs = unet_kwargs(config.to_dict(), in_channels=len(prep.channels))
    torch.manual_seed(config.seed)
    model = build_unet(**model_kwargs)
    if config.init_weights and not resuming:
        load_init_weights(model, Path(config.init_weights), prep)
        if ctx.is_main:
            print(f"initialised from {config.init_weights}", flush=True)
    model = model.to(ctx.device, memory_format=torch.channels_last)
    supervision = None
    if config.deep_supervision:
        # Outside DDP (the exported network has no head): the ranks start from rank 0's heads
        # and train_epoch averages their gradients itself.
        supervision = DeepSupervision(model, config.deep_supervision).to(ctx.device)
        ctx.broadcast_parameters(supervision)
    parameters = list(model.parameters()) + (list(supervision.parameters()) if supervision is not None else [])
    optimizer = torch.optim.AdamW(parameters, lr=config.lr, weight_decay=config.weight_decay)

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
        soft_targets=config.soft_targets or None,
        soft_target_weight=config.soft_target_weight,
    )
    val_set = SliceDataset(cache_dir, split["val"])
    steps_per_epoch = _steps_per_epoch(cache_dir, len(train_set), config, ctx)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _lr_lambda(config, steps_per_epoch))
    return _Training(model, model_kwargs, optimizer, scheduler, ema, train_set, val_set, steps_per_epoch, supervision)


def _steps_per_epoch(cache_dir: Path, train_slices: int, config: TrainConfig, ctx: DistributedContext) -> int:
    """Optimiser steps per epoch on each rank: full batches of the rank's share of the slices
    (one step when the share is smaller than a batch), capped by ``max_train_batches``."""
    if train_slices == 0:
        raise CacheError(f"{cache_dir}: no training slices in the split")
    # DistributedSampler(drop_last=True) gives each rank floor(N / world_size) slices.
    per_rank = train_slices // ctx.world_size
    if per_rank == 0:
        raise CacheError(f"{cache_dir}: {train_slices} training slices for {ctx.world_size} processes")
    steps_per_epoch = per_rank // config.batch_size if per_rank >= config.batch_size else 1
    if config.max_train_batches:
        steps_per_epoch = min(steps_per_epoch, config.max_train_batches)
    return steps_per_epoch


def _restore(run: _Training, last_path: Path, resume: bool, ctx: DistributedContext) -> None:
    """With ``resume``, load the last finished epoch's checkpoint (if any) into ``run``."""
    if resume and last_path.exists():
        ckpt = load_checkpoint(last_path)
        run.model.load_state_dict(ckpt["model"])
        run.optimizer.load_state_dict(ckpt["optimizer"])
        run.scheduler.load_state_dict(ckpt["scheduler"])
        if run.ema is not None:
            if "ema" not in ckpt:
                raise BratsegError(f"{last_path}: holds no weight average; this run trained without ema_decay")
            run.ema.load_state_dict(ckpt["ema"])
        if run.supervision is not None:
            if "supervision" not in ckpt:
                raise BratsegError(f"{last_path}: holds no deep supervision heads; this run trained without them")
            run.supervision.load_state_dict(ckpt["supervision"])
        run.state = ckpt["state"]
        if ctx.is_main:
            print(f"resumed from {last_path} after epoch {run.state['epoch']}", flush=True)
    elif resume and ctx.is_main:
        print(f"no checkpoint at {last_path}: starting from epoch 1", flush=True)


def _run_epoch(net, run: _Training, loss_fn, val_cases: list[str], config: TrainConfig, ctx) -> tuple[dict, bool]:
    """Train and validate one epoch; updates the early-stopping state and history and returns
    the epoch's record (metrics.jsonl) and whether it is the best so far."""
    state = run.state
    epoch = state["epoch"] + 1
    t0 = time.perf_counter()
    train_loss_fn = loss_fn if run.supervision is None else functools.partial(run.supervision.loss, loss_fn)
    train_loss = train_epoch(
        net, run.train_set, run.optimizer, run.scheduler, train_loss_fn, config, ctx, epoch, run.steps_per_epoch,
        run.ema, run.supervision,
    )  # fmt: skip
    ctx.sync_buffers(run.model)
    val_loss, dice = validate(run.validated, run.val_set, val_cases, loss_fn, config, ctx)
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
        "lr": run.optimizer.param_groups[0]["lr"],
        "seconds": time.perf_counter() - t0,
        "train_slices": run.steps_per_epoch * config.batch_size * ctx.world_size,
    }
    state["history"].append(record)
    return record, improved


def _save_epoch(run_dir: Path, run: _Training, record: dict, improved: bool) -> None:
    """Rank 0's files of a finished epoch (best weights, checkpoint, metrics, learning curve)
    and its line of progress."""
    if improved:
        write_best(run_dir / "best.safetensors", run.validated)
    write_checkpoint(run_dir / "last.pt", run.model, run.optimizer, run.scheduler, run.state, run.ema, run.supervision)
    append_metrics(run_dir / "metrics.jsonl", record)
    plot_learning_curve(run_dir, run.state["history"])
    dice_text = (
        f"Dice WT {record['dice_WT']:.3f} TC {record['dice_TC']:.3f} ET {record['dice_ET']:.3f}"
        if record["dice_WT"] is not None
        else "no validation cases"
    )
    print(
        f"epoch {record['epoch']}: train loss {record['train_loss']:.4f}, val loss {record['val_loss']:.4f}, "
        f"{dice_text}" + (" (best)" if improved else f" ({run.state['bad_epochs']} without improvement)"),
        flush=True,
    )


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
