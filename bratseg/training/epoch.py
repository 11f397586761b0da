"""One epoch of training: the seeded training pass over the shuffled slices and the
validation pass, each shared by the ranks under ``torchrun``."""

from __future__ import annotations

from contextlib import nullcontext

import numpy as np
import torch
from torch.utils.data import DataLoader
from torch.utils.data.distributed import DistributedSampler
from tqdm import tqdm

from bratseg.model.precision import cpu_has_bf16
from bratseg.training.dataset import seed_worker


def epoch_seed(seed: int, epoch: int, rank: int = 0) -> int:
    """The seed of one epoch on one rank: shuffle order, augmentation and modality dropout.

    Rank 0 keeps the single-process formula (so runs started before ranks entered it resume
    identically); other ranks are offset so their augmentations differ from rank 0's.
    """
    return seed * 100_003 + epoch + rank * 1_000_000_007


def autocast(device: torch.device, amp: str):
    """bf16 autocast on CUDA and on CPUs with native bf16 (unless ``amp`` is ``off``), else none."""
    if amp == "off":
        return nullcontext()
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    if torch.backends.mkldnn.is_available() and cpu_has_bf16():
        return torch.autocast("cpu", dtype=torch.bfloat16)
    return nullcontext()


def dice_from_stats(stats: torch.Tensor) -> np.ndarray:
    """Per case and region Dice from ``[cases, regions, (intersection, pred, ref)]`` sums,
    with the BraTS convention that two empty masks score 1."""
    inter, pred, ref = stats[..., 0], stats[..., 1], stats[..., 2]
    denom = pred + ref
    dice = torch.where(denom > 0, 2 * inter / denom.clamp(min=1), torch.ones_like(denom))
    return dice.numpy()


def train_epoch(net, dataset, optimizer, scheduler, loss_fn, config, ctx, epoch, steps, ema=None, heads=None) -> float:
    """One pass over ``steps`` batches of the epoch's shuffle (seeded by :func:`epoch_seed`);
    the mean training loss over every rank. ``heads``: trained parameters outside ``net``
    (deep supervision), whose gradients are averaged over the ranks here."""
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
        with autocast(ctx.device, config.amp):
            logits = net(image)
        loss = loss_fn(logits.float(), target)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if heads is not None:
            ctx.average_gradients(heads)
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
def validate(model, dataset, cases, loss_fn, config, ctx) -> tuple[float, np.ndarray]:
    """The validation loss and the per case and region Dice (:func:`dice_from_stats`) of
    ``model`` on ``dataset``, whose slices the ranks share."""
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
        with autocast(ctx.device, config.amp):
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
