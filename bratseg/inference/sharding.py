"""``bratseg predict`` under torchrun: each process takes a fixed share of the cases.

Inference needs no DistributedDataParallel: each rank predicts its own cases and writes its
own label maps. torch.distributed gives the rest: the rank and world size, a barrier (every
rank has finished before the volumes table is built) and a gather (rank 0 reports every
rank's summary). Backend: NCCL when the ranks run on GPUs, gloo on CPUs.

The share is round-robin over the cases sorted by name: rank ``r`` of ``w`` takes cases
``r, r + w, r + 2w, ...``. It depends only on the case list, the rank and the world size, so
every case has exactly one rank (no duplicates, no gaps) and a rerun gives each rank the same
cases again; a rank whose share was finished before only checks its label maps and skips
them. Since every rank works through its share in order, a killed run leaves about the same
work to each rank on the rerun.

Example:
    >>> shard(list("abcdefg"), rank=1, world_size=3)
    ['b', 'e']
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, TypeVar

T = TypeVar("T")


def shard(items: list[T], rank: int, world_size: int) -> list[T]:
    """The share of ``items`` that rank ``rank`` of ``world_size`` predicts."""
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is outside a world of {world_size}")
    return items[rank::world_size]


def launched_by_torchrun() -> bool:
    """Whether this process is one rank of a torchrun (or any env:// launcher) job."""
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ and int(os.environ["WORLD_SIZE"]) > 1


@dataclass
class World:
    """This process's place in the job (rank 0 of 1 when not launched by torchrun)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def device_for(self, requested: str) -> str:
        """``cuda`` becomes ``cuda:<local rank>`` so that the ranks of a node use one GPU each."""
        return f"cuda:{self.local_rank}" if requested == "cuda" and self.distributed else requested

    def barrier(self) -> None:
        if self.distributed:
            import torch.distributed as dist

            dist.barrier()

    def gather(self, obj: Any) -> list[Any] | None:
        """Every rank's ``obj`` on rank 0 (in rank order), None on the other ranks."""
        if not self.distributed:
            return [obj]
        import torch.distributed as dist

        gathered: list[Any] | None = [None] * self.world_size if self.is_main else None
        dist.gather_object(obj, gathered, dst=0)
        return gathered

    def close(self) -> None:
        if self.distributed:
            import torch.distributed as dist

            if dist.is_initialized():
                dist.destroy_process_group()


def join_world(device: str = "cpu") -> World:
    """Join the torchrun job this process belongs to (``env://``: RANK, WORLD_SIZE,
    MASTER_ADDR, MASTER_PORT, LOCAL_RANK), or return the one-process world."""
    if not launched_by_torchrun():
        return World()
    import torch
    import torch.distributed as dist

    world = World(int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ.get("LOCAL_RANK", 0)))
    cuda = device.startswith("cuda")
    if cuda:
        torch.cuda.set_device(world.local_rank)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if cuda else "gloo")
    return world
