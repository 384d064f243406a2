"""The strategy protocol: six hooks, a state dict, and two checks that run before any run
directory exists: ``check_config(cfg)`` (refuse settings outside the strategy's own section,
such as the trainer's) and ``check(net)`` (refuse a network the strategy cannot train, once it
is built).

A strategy never mutates the training loop's state. Each hook *returns* what it contributes
(a data loader, named loss terms, named penalties), so the loop adds them explicitly, logs each
term by name, and several strategies compose as a list in a fixed, documented order.

Order of calls for one experience (task ``ctx.task_id``)::

    before_task(ctx)                 # e.g. snapshot a teacher
    loader = train_loader(ctx, loader)  # e.g. mix replayed examples into each batch
    for batch in loader:              # inside the engine's fit
        outputs = net(batch.x, batch.t)
        loss = task_loss + sum(loss_terms(ctx, batch, outputs).values())
        loss.backward()
        for penalty in penalties(ctx).values():  # EWC, SI: a quadratic pull to an anchor
            penalty.add_gradient_(net)  # its closed-form gradient (strategies.penalty)
        before_optimizer_step(ctx)    # e.g. A-GEM gradient projection, SI path integral
        optimizer.step()
    after_task(ctx)                   # e.g. fill the buffer, estimate the Fisher

Loss terms and penalties are logged as ``loss/<name>``; a penalty is valued only on the steps
that are logged.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Hashable, Iterable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, Protocol

from torch import Tensor, nn

from harness.api.data import Batch
from harness.api.model import Outputs


class System(Protocol):
    """The part of the continual system (``harness.core.system``) a strategy reads."""

    net: nn.Module  # the Network being trained: the model plus its heads
    stream_step: int  # optimizer steps taken over the whole stream so far
    # Under DDP, the weight the system gives this step's loss terms: W * this rank's share of
    # the global batch's targets (None on one process). A term averaged over other examples
    # (DER's memory batch) divides it out and applies its own share.
    batch_share: Tensor | None


class Collectives(Protocol):
    """Collective operations over the DDP ranks, no-ops on one process
    (``harness.runtime.distributed.DIST``)."""

    @property
    def rank(self) -> int: ...

    @property
    def world_size(self) -> int: ...

    def all_reduce_(self, tensor: Tensor, op: str = "sum") -> Tensor: ...

    def all_gather_object(self, obj) -> list: ...

    def all_gather_cat(self, tensor: Tensor) -> Tensor: ...

    def barrier(self) -> None: ...


class Penalty(Protocol):
    """A penalty whose gradient is added in closed form after the backward pass
    (``strategies.penalty.Quadratic`` for EWC and SI)."""

    def value(self, net: nn.Module) -> Tensor:
        """The penalty now, a scalar without a graph (valued on logging steps only)."""
        ...

    def add_gradient_(self, net: nn.Module) -> None:
        """Add the penalty's gradient to the parameters' ``.grad``."""
        ...


class FlopCount(Protocol):
    """How a strategy's after-task work is counted (``harness.core.flops``)."""

    def alike(self, key: Hashable | None) -> AbstractContextManager[None]:
        """Run a block of work (one of many mini-batch passes). Blocks with the same ``key``
        cost the same FLOPs: the first is counted, the others run uncounted and add its count.
        ``key=None`` (work that depends on more than its shapes): counted in full."""
        ...

    def once(self) -> AbstractContextManager[None]:
        """Run work done once per task though it runs inside a training step (a cache every
        later step reads): the task counts it once, not once per step."""
        ...


class Uncounted:
    """No FLOP counting: every block runs as it is."""

    def alike(self, key: Hashable | None) -> AbstractContextManager[None]:
        return contextlib.nullcontext()

    def once(self) -> AbstractContextManager[None]:
        return contextlib.nullcontext()


UNCOUNTED = Uncounted()


@dataclass
class Context:
    """What a strategy may read. Built by the task loop; strategies do not mutate it."""

    system: System  # ``system.net`` is the Network being trained
    task_id: int  # index of the experience being trained (0-based)
    n_tasks: int
    train_data: Any  # callable: task index -> TaskData of that experience's training split
    make_loader: Any  # callable: TaskData -> training loader (batch size, shuffling, sharding)
    batch_size: int
    dist: Collectives  # rank, world size, all_reduce / all_gather helpers (no-ops on one process)
    seed: int = 0
    max_epochs: int = 1  # epochs over this experience's data (trainer.max_epochs)
    eval_batch_size: int = 128  # examples per gradient-free forward (trainer.eval_batch_size)
    flops: FlopCount = UNCOUNTED  # the counter of a counted step or after_task, when measured

    @functools.cached_property
    def trainable(self) -> list[tuple[str, Tensor]]:
        """The network's named parameters that training changes, listed once per task (a
        context lives one task; ``named_parameters`` walks every module)."""
        return trainable(self.system.net)


def trainable(net) -> list[tuple[str, Tensor]]:
    """The network's named parameters that training changes."""
    return [(n, p) for n, p in net.named_parameters() if p.requires_grad]


class Strategy:
    """Base class: every hook is a no-op. A plug-in overrides only what it needs."""

    def __init__(self, cfg: Any):
        self.cfg = cfg

    def check_config(self, cfg: Any) -> None:
        """Refuse, with one ``UserError`` line, settings of the resolved run config outside
        this strategy's own section that it cannot train under: called before the data and the
        network are built, before any run directory exists."""

    def check(self, net: nn.Module) -> None:
        """Refuse a network this strategy cannot train, with one ``UserError`` line: called
        once the network is built, before any run directory exists."""

    def before_task(self, ctx: Context) -> None:
        pass

    def train_loader(self, ctx: Context, loader: Iterable[Batch]) -> Iterable[Batch]:
        return loader

    def loss_terms(self, ctx: Context, batch: Batch, outputs: Outputs) -> dict[str, Tensor]:
        return {}

    def penalties(self, ctx: Context) -> dict[str, Penalty]:
        """Quadratic penalties whose gradient is added in closed form, not through autograd."""
        return {}

    def before_optimizer_step(self, ctx: Context) -> None:
        pass

    def after_task(self, ctx: Context) -> None:
        pass

    def memory_bytes(self) -> int:
        """Bytes of stored state (buffers, teachers, importance estimates), for cost reports."""
        return 0

    def state_dict(self) -> dict:
        """Everything needed to resume: tensors, numbers, strings, lists and dicts only."""
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass
