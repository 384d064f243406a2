"""One experience as the engines and strategies see it: its Context, its training loader, and
the strategy hooks around the fit.

The task loop (``harness.experiment.run``) and ``LightningSystem.begin_task`` both start a task
here, so a fit under a plain ``lightning.Trainer`` sees exactly what a fit inside retain's loop
sees::

    loader = begin_task(system, scenario, trainer_cfg, seed, i)   # before_task, train_loader
    ... fit the system on loader (lean loop or any Lightning Trainer) ...
    end_task(system)                                              # after_task
"""

from __future__ import annotations

import dataclasses

from harness.api import UNCOUNTED, BatchLoader, Context, FlopCount, Scenario
from harness.config import TrainerConfig
from harness.errors import UserError
from harness.runtime.distributed import DIST


def task_context(system, scenario: Scenario, trainer_cfg: TrainerConfig, seed: int,
                 i: int) -> Context:
    """What the strategies may read while experience ``i`` trains."""

    def make_loader(data, shuffle: bool = True, with_index: bool = False):
        # Reads rank and world size when iterated: under DDP the process group only exists
        # once Lightning's first fit has started.
        return DistLoader(data, trainer_cfg.batch_size, shuffle=shuffle, seed=seed * 1000 + i,
                          with_index=with_index)

    return Context(system=system, task_id=i, n_tasks=scenario.n_experiences,
                   train_data=scenario.train_data, make_loader=make_loader,
                   batch_size=trainer_cfg.batch_size, dist=DIST, seed=seed,
                   max_epochs=trainer_cfg.max_epochs, eval_batch_size=trainer_cfg.eval_batch_size)


def begin_task(system, scenario: Scenario, trainer_cfg: TrainerConfig, seed: int, i: int):
    """Set the system's context for experience ``i``, run every strategy's ``before_task`` and
    return the experience's training loader as the strategies shape it (``train_loader``)."""
    ctx = task_context(system, scenario, trainer_cfg, seed, i)
    system.ctx = ctx
    system.schedule.begin(i)
    for strategy in system.strategies:
        strategy.before_task(ctx)
    # the experience's own batches say where their examples sit in it (Batch.index)
    loader = ctx.make_loader(scenario.train_data(i), with_index=True)
    for strategy in system.strategies:
        loader = strategy.train_loader(ctx, loader)
    return loader


def end_task(system, flops: FlopCount = UNCOUNTED) -> None:
    """Every strategy's ``after_task`` for the experience just fitted, their work counted by
    ``flops`` (``harness.core.flops.count_flops``'s counter) when it is measured."""
    ctx = system.ctx if flops is UNCOUNTED else dataclasses.replace(system.ctx, flops=flops)
    for strategy in system.strategies:
        strategy.after_task(ctx)


class DistLoader(BatchLoader):
    """A training BatchLoader whose shard is decided when it is iterated.

    ``batch_size`` is the global batch: each of W ranks takes rows ``r::W`` of every
    single-process batch (``BatchLoader``'s ``split_batches``), so the union of the ranks' k-th
    batches is exactly the k-th batch of a single-process run; the system weighs each rank's
    loss by its share of the batch, so DDP's gradient average equals its gradient.
    """

    def __init__(self, data, batch_size: int, *, shuffle: bool, seed: int,
                 with_index: bool = False):
        super().__init__(data, batch_size, shuffle=shuffle, seed=seed, with_index=with_index,
                         split_batches=True)

    def _shard(self) -> None:
        self.rank, self.world_size = DIST.rank, DIST.world_size
        if self.batch_size % self.world_size:
            raise UserError(f"trainer.batch_size={self.batch_size} must be divisible "
                            f"by the number of processes ({self.world_size})")

    def __iter__(self):
        self._shard()
        return super().__iter__()

    def __len__(self) -> int:
        self._shard()
        return super().__len__()
