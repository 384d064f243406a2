"""Training compute: FLOPs counted with ``torch.utils.flop_counter`` on a sample step per task.

Strategies are usually compared at equal epochs, but they do not cost the same per step:
replay doubles the batch, A-GEM adds a forward and backward over a memory sample, LwF a
teacher's forward. Prabhu et al. (CVPR 2023) show rankings change once compute is held equal,
so each run records what its training cost:

* ``FlopProbe`` counts one optimizer step (its first in a task): every forward and backward
  from ``training_step`` to the end of ``on_before_optimizer_step``, so strategies' loss terms
  and their extra passes in ``before_optimizer_step`` are in it; the task's training FLOPs are
  that times the task's optimizer steps;
* ``count_flops`` counts the strategies' ``after_task`` work (EWC's Fisher passes, say).

``torch.utils.flop_counter``'s formulas count matrix products, convolutions and attention;
element-wise work (optimizer updates, EWC's closed-form penalty gradient) is not counted, as
in the usual ``6 * parameters * tokens`` estimates. Under DDP each rank counts its shard and
the counts are summed, so the total is the one-process total. The probe only observes: the
counted step computes exactly what it computes without it.
"""

from __future__ import annotations

import contextlib

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from harness.runtime.distributed import DIST


class _TotalFlops(TorchDispatchMode):
    """``FlopCounterMode``'s count, total only. Its per-module breakdown puts global hooks on
    every module call, which made EWC's Fisher passes several times slower while counted."""

    def __init__(self):
        super().__init__()
        from torch.utils.flop_counter import flop_registry

        self.registry, self.total = flop_registry, 0

    def get_total_flops(self) -> int:
        return self.total

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        packet = func._overloadpacket
        if packet not in self.registry and func is not torch.ops.prim.device.default:
            with self:  # as FlopCounterMode: an op without a formula counts what it runs
                out = func.decompose(*args, **kwargs)
                if out is not NotImplemented:
                    return out
        out = func(*args, **kwargs)
        if packet in self.registry:
            self.total += self.registry[packet](*args, **kwargs, out_val=out)
        return out


def _global(flops: int, device: torch.device) -> int:
    """The sum over DDP ranks (every rank calls this at the same point)."""
    if DIST.world_size == 1:
        return int(flops)
    total = torch.tensor([float(flops)], dtype=torch.float64, device=device)
    DIST.all_reduce_(total)
    return int(total.item())


class FlopProbe:
    """Counts one training step and writes the count to ``target[key]``."""

    def __init__(self, target: dict, key: str, device: torch.device):
        self.target, self.key, self.device = target, key, device
        self.mode = None

    def start(self) -> None:
        if self.mode is None:
            self.mode = _TotalFlops()
            self.mode.__enter__()

    def abort(self) -> None:
        """Leave the counter without a count: its step failed. Its global module hooks would
        otherwise outlive the run in this process."""
        if self.mode is not None:
            self.mode.__exit__(None, None, None)
            self.mode = None

    def stop(self) -> None:
        if self.mode is None:
            return
        self.mode.__exit__(None, None, None)
        self.target[self.key] = _global(self.mode.get_total_flops(), self.device)
        self.mode = None


@contextlib.contextmanager
def count_flops(target: dict, key: str, device: torch.device):
    """Count what runs inside the block into ``target[key]`` (summed over DDP ranks)."""
    mode = _TotalFlops()
    with mode:
        yield
    target[key] = _global(mode.get_total_flops(), device)


def task_flops(compute: dict, steps: int) -> int | None:
    """A task's training FLOPs: its sample step times its steps, plus its after_task work."""
    if compute.get("step_flops") is None:
        return None
    return compute["step_flops"] * steps + compute.get("after_task_flops", 0)
