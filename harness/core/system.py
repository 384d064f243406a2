"""The continual system: trains a ``Network`` on one experience at a time.

The task loop (``harness.experiment.run``) fits it on each experience, with the lean loop
(``harness.core.loop``) or a Lightning Trainer (through
``harness.core.trainer.LightningSystem``, which hands Lightning's hooks to it); this module
only knows how to take a training step. It is a plain ``nn.Module``, so a run on the lean
engine never imports Lightning.

The loss is written out term by term: the task's own cross-entropy plus whatever each
strategy's ``loss_terms`` returns, each logged under its own name (``loss/task``,
``loss/distill``, ...). Strategies' quadratic penalties (``loss/ewc``, ``loss/si``) add their
gradient in closed form before the optimizer step and are valued on logging steps only
(``strategies.penalty``).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from harness.api import IGNORE, UNCOUNTED, Batch, Context, Strategy
from harness.config import TrainerConfig
from harness.core.network import Network
from harness.core.schedule import TaskSchedule
from harness.errors import UserError


class NonFiniteLoss(UserError):
    """A loss term became NaN or infinite: training stops instead of corrupting the run."""


class ContinualSystem(torch.nn.Module):
    """The network, its strategies and the stream's step count; the methods are the
    LightningModule hooks both engines call (``harness.core.loop.LEAN_HOOKS``)."""

    def __init__(self, net: Network, strategies: list[Strategy], trainer_cfg: TrainerConfig,
                 on_metrics: Callable[[int, dict], None] | None = None):
        super().__init__()
        self.net = net
        self.strategies = strategies
        self.trainer_cfg = trainer_cfg
        self.on_metrics = on_metrics  # sink for per-step metrics (run dir + W&B), rank 0 only
        self.ctx: Context | None = None  # set by the task loop before each fit
        self.stream_step = 0  # optimizer steps over the whole stream, for monotone logging
        self.flop_probe = None  # counts the next step's FLOPs when set (harness.core.flops)
        # this step's weight for terms over the current batch (DDP), None on one process
        self.batch_share: torch.Tensor | None = None
        self.schedule = TaskSchedule(trainer_cfg)  # the learning rate inside the current task

    def logging_step(self) -> bool:
        """Whether this step's loss terms are valued and logged."""
        return self.stream_step % self.trainer_cfg.log_every_n_steps == 0

    def training_step(self, batch: Batch, batch_idx: int) -> torch.Tensor:
        if self.flop_probe is not None:
            self.flop_probe.start()
            self.ctx.flops = self.flop_probe.mode  # strategies mark once-a-task work with it
        outputs = self.net(batch.x, batch.t)
        self.batch_share = share = self._share(batch)
        terms = {"task": self.net.loss(batch, outputs)}
        for strategy in self.strategies:
            _merge(terms, strategy.loss_terms(self.ctx, batch, outputs))
        if share is not None:  # this rank's part of the global batch's mean
            terms = {name: value * share for name, value in terms.items()}
        logging_step = self.logging_step()
        if logging_step:  # penalties have no graph (their gradient is added before the
            for strategy in self.strategies:  # step): valued only where they are logged
                _merge(terms, {name: penalty.value(self.net)
                               for name, penalty in strategy.penalties(self.ctx).items()})
        loss = _total(terms)
        self._check_finite(loss, terms)
        if logging_step:
            values = self._global_values([*terms.values(), loss])  # a collective under DDP
            if self.on_metrics:
                metrics = {f"loss/{k}": v for k, v in zip(terms, values)}
                metrics.update({"loss/total": values[-1], "task": self.ctx.task_id})
                if (lr := self.schedule.current()) is not None:
                    metrics["lr"] = lr
                self.on_metrics(self.stream_step, metrics)
        return loss

    def _share(self, batch: Batch) -> torch.Tensor | None:
        """Under DDP, ``W * n_rank / n_global``: n counts the targets that carry a loss
        (examples, or non-ignored tokens). A loss term is a mean over this rank's part of the
        global batch; weighed by this, DDP's average of the ranks' gradients is the gradient
        of the mean over the whole batch, as on one process. None on one process."""
        dist = self.ctx.dist if self.ctx is not None else None
        if dist is None or dist.world_size == 1:
            return None
        count = (batch.y != IGNORE).sum().float().reshape(1)
        total = dist.all_reduce_(count.clone())
        return count[0] * dist.world_size / total[0].clamp_min(1.0)

    def _global_values(self, values: list[torch.Tensor]) -> list[float]:
        """The logged values of the global batch: the mean over ranks of the weighed terms
        (penalties are the same on every rank)."""
        stacked = torch.stack([v.detach().float().reshape(()) for v in values])
        dist = self.ctx.dist if self.ctx is not None else None
        if dist is not None and dist.world_size > 1:
            dist.all_reduce_(stacked, "mean")
        return stacked.tolist()

    def on_before_optimizer_step(self, optimizer) -> None:
        self.schedule.apply(optimizer)
        # Penalty gradients first: strategies' hooks see (and may change) the total gradient.
        for strategy in self.strategies:
            for penalty in strategy.penalties(self.ctx).values():
                penalty.add_gradient_(self.net)
        for strategy in self.strategies:
            strategy.before_optimizer_step(self.ctx)
        if self.flop_probe is not None:  # the sample step ends with the strategies' hooks
            self.flop_probe.stop()
            self.flop_probe, self.ctx.flops = None, UNCOUNTED

    def on_train_batch_end(self, outputs, batch, batch_idx) -> None:
        self.stream_step += 1

    def configure_optimizers(self):
        cfg = self.trainer_cfg
        params = [p for p in self.net.parameters() if p.requires_grad]
        # One fused kernel per update instead of several passes over every parameter: 5-10%
        # of a small model's step on CPU. 16-mixed is left to Lightning's GradScaler path.
        fused = {"fused": True} if cfg.precision != "16-mixed" and all(
            p.device.type in ("cpu", "cuda") and p.is_floating_point() for p in params) else {}
        if cfg.optimizer == "sgd":
            return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum,
                                   weight_decay=cfg.weight_decay, **fused)
        if cfg.optimizer == "adam":
            return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay, **fused)
        return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay, **fused)

    def _check_finite(self, loss: torch.Tensor, terms: dict) -> None:
        if math.isfinite(loss.item()):
            return
        bad = [k for k, v in terms.items() if not math.isfinite(v.float().item())]
        task = self.ctx.task_id + 1 if self.ctx else "?"
        raise NonFiniteLoss(f"non-finite loss at task {task}, step {self.stream_step}: "
                            f"term(s) {', '.join(bad) or 'total'} = "
                            f"{', '.join(str(terms[k].item()) for k in bad) or loss.item()}")


def _total(terms: dict[str, torch.Tensor]) -> torch.Tensor:
    """The sum of the terms in fp32; one addition per extra term (Python's sum adds 0 first:
    one more kernel and autograd node every step)."""
    values = iter(terms.values())
    total = next(values)
    for value in values:
        total = total.float() + value.float()
    return total


def _merge(terms: dict[str, torch.Tensor], new: dict[str, torch.Tensor]) -> None:
    for name, value in new.items():
        if name in terms:
            raise RuntimeError(f"two strategies return a loss term named '{name}'")
        terms[name] = value
