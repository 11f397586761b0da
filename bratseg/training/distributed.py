"""The training processes: one, or many under ``torchrun``, with their rank, world size and
device, and the collectives the training loop needs (a barrier, sums, rank 0's buffers).

Example:
    >>> ctx = DistributedContext()  # no torchrun: one process
    >>> ctx.world_size, ctx.is_main, process_group_backend(ctx.device)
    (1, True, 'gloo')
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist


def process_group_backend(device: torch.device) -> str:
    """The collective backend for a device: NCCL between GPUs, gloo between CPU processes."""
    return "nccl" if device.type == "cuda" else "gloo"


class DistributedContext:
    """Rank, world size and device, from torchrun's environment (one process without it)."""

    def __init__(self):
        self.world_size = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        self.distributed = self.world_size > 1
        if torch.cuda.is_available():
            self.device = torch.device("cuda", local_rank)
            torch.cuda.set_device(self.device)
        else:
            self.device = torch.device("cpu")
        self.backend = process_group_backend(self.device)
        if self.distributed and not dist.is_initialized():
            dist.init_process_group(self.backend)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()

    def all_reduce(self, tensor: torch.Tensor) -> torch.Tensor:
        """Sum ``tensor`` over the ranks, in place. NCCL reduces GPU tensors only, so the
        (CPU) statistics tensors travel through the device and back."""
        if self.distributed:
            if tensor.device != self.device:
                on_device = tensor.to(self.device)
                dist.all_reduce(on_device)
                tensor.copy_(on_device.cpu())
            else:
                dist.all_reduce(tensor)
        return tensor

    def average_gradients(self, module: torch.nn.Module) -> None:
        """Average the gradients of ``module``'s parameters over the ranks, as DDP does for the
        network it wraps: for parameters that live outside it (the deep supervision heads).
        Called after ``backward()``, in the same order on every rank."""
        if self.distributed:
            for param in module.parameters():
                if param.grad is None:
                    param.grad = torch.zeros_like(param)
                self.all_reduce(param.grad).div_(self.world_size)

    def broadcast_parameters(self, module: torch.nn.Module) -> None:
        """Give every rank rank 0's parameters and buffers of ``module`` (DDP does this for the
        network it wraps when it is built)."""
        if self.distributed:
            for tensor in module.state_dict().values():
                dist.broadcast(tensor, 0)

    def sync_buffers(self, model: torch.nn.Module) -> None:
        """Give every rank rank 0's buffers (BatchNorm running statistics).

        DDP broadcasts them at the start of each forward pass, so after the last training
        step of an epoch each rank holds statistics updated by its own batch; validation
        (and the weights each rank ends with) must use the ones rank 0 saves.
        """
        if self.distributed:
            for buf in model.buffers():
                dist.broadcast(buf, 0)

    def close(self) -> None:
        if self.distributed and dist.is_initialized():
            dist.destroy_process_group()
