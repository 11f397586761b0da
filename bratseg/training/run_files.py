"""What a training run writes in its folder, and how a resumed run reads it back.

RUN_DIR holds:
    train_config.json, preprocessing.json   what was run
    last.pt          checkpoint of the last finished epoch (model, optimizer, scheduler,
                     early-stopping state, history), written atomically
    best.safetensors weights of the best validation epoch
    metrics.jsonl    one line per epoch: losses, per-region Dice, learning rate, time
    learning_curve.png
    model/           the exported model folder (see bratseg.training.export)
    rank{r}_digest.json  under torchrun: each rank's SHA-256 of its final weights

Every file is written under a temporary name and renamed into place
(:func:`~bratseg.data.io.atomic_write_bytes`); a run that finds the temporaries of a killed one
clears them (:func:`remove_leftovers`).
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

import torch
import torch.distributed as dist
from safetensors.torch import save_file

from bratseg.data.io import atomic_write_bytes
from bratseg.errors import BratsegError
from bratseg.training.config import TrainConfig

if TYPE_CHECKING:
    from bratseg.training.distributed import DistributedContext

REGION_KEYS = ("WT", "TC", "ET")
# What a started run leaves in RUN_DIR: training into it again needs --resume.
RUN_OUTPUTS = ("last.pt", "best.safetensors", "metrics.jsonl", "model")
# Files the trainer writes with atomic_write_bytes, whose interrupted temporaries it clears.
ATOMIC_OUTPUTS = re.compile(
    r"(last\.pt|best\.safetensors|metrics\.jsonl|learning_curve\.png|train_config\.json"
    r"|preprocessing\.json|rank\d+_digest\.json)"
)
# Options a resumed run may take with new values: how long it runs and how fast (processes,
# threads). The others fix the model, the batches and the learning-rate steps.
RESUME_MAY_CHANGE = frozenset({"epochs", "patience", "num_workers", "threads"})


def write_best(path: Path, model) -> None:
    weights = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    atomic_write_bytes(path, lambda p: save_file(weights, str(p)))


def write_checkpoint(path: Path, model, optimizer, scheduler, state: dict, ema=None, supervision=None) -> None:
    """``last.pt``: everything a resumed run needs, the weight average (``ema``) and the deep
    supervision heads (``supervision``) included."""
    ckpt = {
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "state": state,
    }
    if ema is not None:
        ckpt["ema"] = ema.state_dict()
    if supervision is not None:
        ckpt["supervision"] = supervision.state_dict()
    atomic_write_bytes(path, lambda p: torch.save(ckpt, p))


def append_metrics(path: Path, record: dict) -> None:
    # Rewrite rather than append, so a resumed run never duplicates epochs.
    lines = [json.loads(x) for x in path.read_text().splitlines()] if path.exists() else []
    write_metrics(path, [x for x in lines if x["epoch"] < record["epoch"]] + [record])


def write_metrics(path: Path, records: list[dict]) -> None:
    if not records:
        path.unlink(missing_ok=True)
        return
    atomic_write_bytes(path, lambda p: p.write_text("".join(json.dumps(x) + "\n" for x in records)))


def load_checkpoint(path: Path) -> dict:
    # weights_only: a checkpoint is tensors, numbers and strings; nothing else is unpickled.
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for damaged or foreign files
        raise BratsegError(f"{path}: unreadable checkpoint ({exc}); delete it to start over") from None
    keys = {"model", "optimizer", "scheduler", "state"}
    if not isinstance(ckpt, dict) or not keys <= set(ckpt):
        raise BratsegError(f"{path}: not a bratseg checkpoint (it needs the keys {sorted(keys)})")
    return ckpt


def check_resumable(run_dir: Path, config: TrainConfig) -> None:
    """Refuse to resume with options that would make the resumed epochs disagree with the
    finished ones (another model, batch or learning-rate schedule): the result would match no
    uninterrupted run. ``epochs`` may change (to extend or cut a run) and so may the speed
    options, ``num_workers`` and ``threads``."""
    path = run_dir / "train_config.json"
    if not path.exists():
        return
    saved = json.loads(path.read_text())
    changed = {
        k: (saved[k], v)
        for k, v in config.to_dict().items()
        if k in saved and k not in RESUME_MAY_CHANGE and saved[k] != v
    }
    if changed:
        diff = ", ".join(f"{k} {old!r} -> {new!r}" for k, (old, new) in sorted(changed.items()))
        raise BratsegError(f"{path}: cannot resume with other training options ({diff}); use a new --out")


def remove_leftovers(run_dir: Path) -> None:
    """Delete what a killed write leaves behind: atomic_write_bytes' ``.NAME.*.tmp`` files
    (never read, only renamed into place when complete) and an export's ``.model.*`` folders."""
    for path in run_dir.glob(".*"):
        name = path.name
        # mkstemp names them ".<target>.<random>.tmp".
        target = name[1:-4].rsplit(".", 1)[0] if name.endswith(".tmp") else ""
        if path.is_file() and ATOMIC_OUTPUTS.fullmatch(target):
            path.unlink(missing_ok=True)
        elif path.is_dir() and name.startswith(".model."):
            shutil.rmtree(path, ignore_errors=True)


def plot_learning_curve(run_dir: Path, history: list[dict]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [h["epoch"] for h in history]
    fig, (ax_loss, ax_dice) = plt.subplots(1, 2, figsize=(10, 4))
    ax_loss.plot(epochs, [h["train_loss"] for h in history], label="train")
    ax_loss.plot(epochs, [h["val_loss"] for h in history], label="validation")
    ax_loss.set(xlabel="epoch", ylabel="Dice + CE loss", title="Loss")
    ax_loss.legend()
    for key in REGION_KEYS:
        ax_dice.plot(epochs, [h[f"dice_{key}"] for h in history], label=key)
    ax_dice.set(xlabel="epoch", ylabel="Dice", title="Validation Dice", ylim=(0, 1))
    ax_dice.legend()
    fig.tight_layout()
    atomic_write_bytes(run_dir / "learning_curve.png", lambda p: fig.savefig(p, format="png", dpi=100))
    plt.close(fig)


def state_dict_sha256(model: torch.nn.Module) -> str:
    """SHA-256 over every tensor of the state dict (names, dtypes, shapes and bytes), so two
    models hash alike only when bit-identical, buffers included."""
    h = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        t = tensor.detach().cpu().contiguous()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)};".encode())
        h.update(t.view(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def write_rank_digest(run_dir: Path, model, ctx: DistributedContext, heads=None) -> None:
    """Each rank records a digest of its final weights (and of its deep supervision heads):
    DDP, and the trainer for the heads, keep them identical."""
    digest = {
        "rank": ctx.rank,
        "world_size": ctx.world_size,
        "backend": dist.get_backend() if dist.is_initialized() else None,
        "sha256": state_dict_sha256(model),
    }
    if heads is not None:
        digest["heads_sha256"] = state_dict_sha256(heads)
    atomic_write_bytes(run_dir / f"rank{ctx.rank}_digest.json", lambda p: p.write_text(json.dumps(digest) + "\n"))
