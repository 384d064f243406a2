"""Learning-rate schedules over each task of a stream (``trainer.schedule``).

* ``constant``: ``trainer.lr`` throughout (after the first task's warm-up, if one is asked for);
* ``cosine``: a linear warm-up at the start of the stream, then within every task a cosine
  decay from ``lr`` to ``lr * min_lr_ratio``; later tasks restart at ``lr`` without warm-up;
* ``rewarm``: every task warms up again from zero to ``lr`` and decays again (Ibrahim et al.
  2024, "Simple and scalable strategies to continually pre-train large language models").

The rate of a step is a pure function of (task, step within the task, the task's length), so
a resumed task continues it exactly: the checkpoint's ``TaskProgress.steps`` is the schedule's
state, and the task's length is recomputed from the same loader. Both engines set it in the
system's ``on_before_optimizer_step`` (``TaskSchedule.apply``) and start it at the beginning
of each fit (``harness.core.resume.StepCheckpoint.on_start``).
"""

from __future__ import annotations

import math

from harness.config import TrainerConfig

SCHEDULES = ("constant", "cosine", "rewarm")


def task_steps(batches_per_epoch: int, cfg: TrainerConfig) -> int:
    """Optimizer steps in one task: a step every ``accumulate_grad_batches`` batches and on
    each epoch's last one, capped by ``max_steps``."""
    per_epoch = -(-batches_per_epoch // cfg.accumulate_grad_batches)
    total = per_epoch * cfg.max_epochs
    return min(total, cfg.max_steps) if cfg.max_steps > 0 else total


def warmup_steps(cfg: TrainerConfig, total: int, task_id: int) -> int:
    """Warm-up steps of task ``task_id`` (only the first task warms up unless re-warming)."""
    if task_id > 0 and cfg.schedule != "rewarm":
        return 0
    steps = cfg.warmup_steps or round(cfg.warmup_fraction * total)
    return min(steps, total)


def lr_at(cfg: TrainerConfig, step: int, total: int, task_id: int) -> float:
    """The learning rate of optimizer step ``step`` (from 0) of a task of ``total`` steps."""
    warm = warmup_steps(cfg, total, task_id)
    if step < warm:
        return cfg.lr * (step + 1) / warm
    if cfg.schedule == "constant":
        return cfg.lr
    low = cfg.lr * cfg.min_lr_ratio
    progress = min((step - warm) / max(total - warm - 1, 1), 1.0)  # 0 at the peak, 1 last step
    return cfg.lr - (cfg.lr - low) * 0.5 * (1.0 - math.cos(math.pi * progress))  # exact peak


class TaskSchedule:
    """The schedule inside the task being fitted: which step comes next and how many there are.

    Unstarted (a fit the task loop did not start, or the plain constant rate) it leaves the
    optimizer's rate alone.
    """

    def __init__(self, cfg: TrainerConfig):
        self.cfg = cfg
        self.active = cfg.schedule != "constant" or bool(cfg.warmup_steps or cfg.warmup_fraction)
        self.task_id, self.step, self.total = 0, 0, 0

    def begin(self, task_id: int) -> None:
        """Task ``task_id`` begins (``harness.core.task.begin_task``); unstarted until its fit."""
        self.task_id, self.total, self.step = task_id, 0, 0

    def start(self, total: int, done: int = 0) -> None:
        """The task's fit of ``total`` steps begins, ``done`` of them already taken (a resume)."""
        self.total, self.step = total, done

    def current(self) -> float | None:
        """The rate the next optimizer step uses (None: not scheduled)."""
        if not (self.active and self.total):
            return None
        return lr_at(self.cfg, self.step, self.total, self.task_id)

    def apply(self, optimizer) -> None:
        """Set the next step's rate on every parameter group and count the step."""
        lr = self.current()
        if lr is None:
            return
        for group in optimizer.param_groups:
            group["lr"] = lr
        self.step += 1
