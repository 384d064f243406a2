"""Collective helpers that are no-ops on a single process.

Strategies and memories call these instead of ``torch.distributed`` directly, so the same code
runs on one CPU process and under Lightning's DDP (gloo or NCCL).
"""

from __future__ import annotations

import torch
import torch.distributed as tdist
from torch import Tensor


class Dist:
    @property
    def active(self) -> bool:
        return tdist.is_available() and tdist.is_initialized()

    @property
    def rank(self) -> int:
        return tdist.get_rank() if self.active else 0

    @property
    def world_size(self) -> int:
        return tdist.get_world_size() if self.active else 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def all_reduce_(self, tensor: Tensor, op: str = "sum") -> Tensor:
        """In-place sum (or mean) over ranks."""
        if self.active and self.world_size > 1:
            tdist.all_reduce(tensor, op=tdist.ReduceOp.SUM)
            if op == "mean":
                tensor /= self.world_size
        return tensor

    def all_gather_object(self, obj) -> list:
        if not (self.active and self.world_size > 1):
            return [obj]
        out = [None] * self.world_size
        tdist.all_gather_object(out, obj)
        return out

    def broadcast_object(self, obj, src: int = 0):
        if not (self.active and self.world_size > 1):
            return obj
        box = [obj]
        tdist.broadcast_object_list(box, src=src)
        return box[0]

    def all_gather_cat(self, tensor: Tensor) -> Tensor:
        """Concatenate a tensor of possibly different lengths (dim 0) from every rank."""
        if not (self.active and self.world_size > 1):
            return tensor
        parts = self.all_gather_object(tensor.cpu())
        return torch.cat(parts).to(tensor.device)

    def barrier(self) -> None:
        if self.active and self.world_size > 1:
            tdist.barrier()


DIST = Dist()


def launch_rank() -> int:
    """This process's global rank, also before the process group exists.

    Lightning's launcher starts the other ranks with ``LOCAL_RANK``/``NODE_RANK`` set (torchrun
    and SLURM set ``RANK``/``SLURM_PROCID``), and the group is only created inside the first
    ``fit``; the task loop must know before that whether it is rank zero (it owns the run
    directory and the W&B run).
    """
    if DIST.active:
        return DIST.rank
    import os

    for var in ("RANK", "SLURM_PROCID"):
        if os.environ.get(var):
            return int(os.environ[var])
    local, node = int(os.environ.get("LOCAL_RANK", 0)), int(os.environ.get("NODE_RANK", 0))
    return local + node * 1_000  # only "is it zero" matters before the group exists
