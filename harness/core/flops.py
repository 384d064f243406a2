"""Training compute: FLOPs counted with ``torch.utils.flop_counter`` on a sample step per task.

Strategies are usually compared at equal epochs, but they do not cost the same per step:
replay doubles the batch, A-GEM adds a forward and backward over a memory sample, LwF a
teacher's forward. Prabhu et al. (CVPR 2023) show rankings change once compute is held equal,
so each run records what its training cost:

* ``FlopProbe`` counts one optimizer step (its first in a task): every forward and backward
  from ``training_step`` to the end of ``on_before_optimizer_step``, so strategies' loss terms
  and their extra passes in ``before_optimizer_step`` are in it; the task's training FLOPs are
  that times the task's optimizer steps, but work a strategy marks ``ctx.flops.once()`` in
  it (LwF's teacher outputs for the whole task, cached on its first step) is added once;
* ``count_flops`` counts the strategies' ``after_task`` work (EWC's Fisher passes, say). A
  strategy that runs many passes of one shape marks each with ``ctx.flops.alike(shape)``: the
  first pass of each shape is counted and the others run outside the counting mode, adding its
  count, since every operation under the mode goes through Python.

``torch.utils.flop_counter``'s formulas count matrix products, convolutions and attention;
element-wise work (optimizer updates, EWC's closed-form penalty gradient) is not counted, as
in the usual ``6 * parameters * tokens`` estimates. Under DDP each rank counts its shard and
the counts are summed, so the total is the one-process total. The probe only observes: the
counted step computes exactly what it computes without it.
"""

from __future__ import annotations

import contextlib

import torch
from torch.utils._python_dispatch import TorchDispatchMode, _get_current_dispatch_mode

from harness.runtime.distributed import DIST


class _TotalFlops(TorchDispatchMode):
    """``FlopCounterMode``'s count, total only. Its per-module breakdown puts global hooks on
    every module call, which made EWC's Fisher passes several times slower while counted."""

    def __init__(self):
        super().__init__()
        from torch.utils.flop_counter import flop_registry

        self.registry, self.total = flop_registry, 0
        self.per_key: dict = {}  # FLOPs of the first block of each key (alike)
        self.once_total = 0  # FLOPs of blocks run once per task (once), not in ``total``

    def get_total_flops(self) -> int:
        return self.total

    @contextlib.contextmanager
    def alike(self, key):
        """Count the first block of each ``key``; run the others with this mode off the
        dispatch stack and add the first's count (``harness.api.strategy.FlopCount``)."""
        if key is None or _get_current_dispatch_mode() is not self:  # nested: count it all
            yield
        elif key in self.per_key:
            self.__exit__(None, None, None)
            try:
                yield
            finally:
                self.__enter__()
            self.total += self.per_key[key]
        else:
            before = self.total
            yield
            self.per_key[key] = self.total - before

    @contextlib.contextmanager
    def once(self):
        """Count the block apart, in ``once_total`` (``harness.api.strategy.FlopCount``)."""
        if _get_current_dispatch_mode() is not self:
            yield
            return
        before = self.total
        try:
            yield
        finally:
            self.once_total += self.total - before
            self.total = before

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


def _global(flops: int, device: torch.device, *more: int) -> int | tuple[int, ...]:
    """The sums over DDP ranks (every rank calls this at the same point)."""
    counts = (flops, *more)
    if DIST.world_size > 1:
        total = torch.tensor([float(c) for c in counts], dtype=torch.float64, device=device)
        DIST.all_reduce_(total)
        counts = tuple(total.tolist())
    return int(counts[0]) if not more else tuple(int(c) for c in counts)


class FlopProbe:
    """Counts one training step and writes the count to ``target[key]`` (and the work it ran
    once for the whole task to ``target["task_once_flops"]``, where there was any)."""

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
        step, once = _global(self.mode.get_total_flops(), self.device, self.mode.once_total)
        self.target[self.key] = step
        if once:
            self.target["task_once_flops"] = once
        self.mode = None


@contextlib.contextmanager
def count_flops(target: dict, key: str, device: torch.device):
    """Count what runs inside the block into ``target[key]`` (summed over DDP ranks). The
    block gets the counter, whose ``alike`` a strategy's repeated passes go through."""
    mode = _TotalFlops()
    with mode:
        yield mode
    target[key] = _global(mode.get_total_flops(), device)


def task_flops(compute: dict, steps: int) -> int | None:
    """A task's training FLOPs: its sample step times its steps, plus its once-a-task and
    after_task work."""
    if compute.get("step_flops") is None:
        return None
    return (compute["step_flops"] * steps + compute.get("task_once_flops", 0)
            + compute.get("after_task_flops", 0))
