"""Data-parallel training under torchrun (WORLD_SIZE > 1), and the single-process default.

Every rank draws the same indices from the same sampler (same seed, same position) and keeps its
share, `indices[rank::world_size]`, so the global batch is `data.batch_size` whatever the number
of processes, and a checkpoint's sampler position means the same thing to every world size.
Rank 0 alone writes files and checkpoints. Decisions that must be the same on every rank (stop,
checkpoint now, extend, a non-finite loss) are agreed with one tiny all-reduce per step.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TypeVar

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

T = TypeVar("T")


@dataclass
class DistContext:
    world_size: int = 1
    rank: int = 0
    local_rank: int = 0
    node_rank: int = 0            # torchrun's GROUP_RANK: which machine (agent) this rank runs on
    nodes: int = 1                # torchrun's GROUP_WORLD_SIZE: how many machines take part
    initialized: bool = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    def init(self, device: torch.device) -> None:
        """Join the process group: NCCL for CUDA, gloo for CPU."""
        if not self.enabled or self.initialized:
            return
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend=backend, device_id=device if device.type == "cuda" else None)
        self.initialized = True

    def wrap(self, model: nn.Module, device: torch.device) -> nn.Module:
        if not self.enabled:
            return model
        ids = [device.index] if device.type == "cuda" else None
        return DistributedDataParallel(model, device_ids=ids)

    def shard(self, indices: torch.Tensor) -> torch.Tensor:
        return indices[self.rank::self.world_size] if self.enabled else indices

    def agree_max(self, values: list[float], device: torch.device) -> list[float]:
        """Element-wise maximum over all ranks (flags and requested max_steps)."""
        if not self.enabled:
            return values
        tensor = torch.tensor(values, dtype=torch.float64, device=device)
        dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
        return tensor.tolist()

    def broadcast_object(self, obj: T) -> T:
        """Rank 0's `obj` on every rank (decisions made once, e.g. which checkpoint to load)."""
        if not self.enabled:
            return obj
        holder = [obj]
        dist.broadcast_object_list(holder, src=0)
        return holder[0]

    def barrier(self) -> None:
        if self.initialized:
            dist.barrier()

    def close(self) -> None:
        if self.initialized:
            dist.destroy_process_group()
            self.initialized = False


def context_from_env() -> DistContext:
    """torchrun sets WORLD_SIZE, RANK, LOCAL_RANK, GROUP_RANK and GROUP_WORLD_SIZE; without them
    this is a single process."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return DistContext()
    return DistContext(world_size=world_size, rank=int(os.environ.get("RANK", "0")),
                       local_rank=int(os.environ.get("LOCAL_RANK", "0")),
                       node_rank=int(os.environ.get("GROUP_RANK", "0")),
                       nodes=int(os.environ.get("GROUP_WORLD_SIZE", "1")))

