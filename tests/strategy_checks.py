"""Shared checks for the strategy tests (imported, not a pytest conftest).

``context`` builds the ``Context`` a strategy hook receives, around a bare network, so a hook
can be called without a Trainer. ``resume_matches`` runs a Split-Digits stream uninterrupted,
then again stopped after the second experience, and again crashed inside the third, each
resumed from its checkpoint, and checks that all give the same score matrices, which holds
only if the strategy's ``state_dict`` round-trips everything it uses.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from conftest import quick
from resume_helpers import resumes_bit_identically

from harness import config
from harness.api import BatchLoader, Context, DataSpec, TaskData
from harness.config import TrainerConfig
from harness.core.network import Network
from harness.core.system import ContinualSystem
from harness.experiment.results import RunDir
from harness.experiment.run import TaskLoop, run
from harness.models.mlp import MLP, MLPConfig
from harness.runtime.distributed import DIST

DIGITS = ["scenario.name=split-digits", "model.name=mlp", "trainer.optimizer=sgd",
          "trainer.lr=0.05", "trainer.momentum=0.9", "trainer.accelerator=cpu"]
SPEC = DataSpec(kind="vectors", task="classification", input_dim=8, n_classes=4)


def tiny_net(seed: int = 0, task_classes=None) -> Network:
    torch.manual_seed(seed)
    return Network(MLP(MLPConfig(hidden=[16]), SPEC), SPEC, task_classes)


def toy_tasks(n_tasks: int = 2, n: int = 64, seed: int = 0) -> list[TaskData]:
    """Linearly separable 2-class problems, classes 2k and 2k+1 in task k."""
    g = torch.Generator().manual_seed(seed)
    tasks = []
    for k in range(n_tasks):
        x = torch.randn(n, SPEC.input_dim, generator=g)
        y = (x[:, k] > 0).long() + 2 * k
        tasks.append(TaskData(x, y, torch.full((n,), k, dtype=torch.long)))
    return tasks


def context(net: Network, tasks: list[TaskData], task_id: int, batch_size: int = 16) -> Context:
    return Context(system=SimpleNamespace(net=net), task_id=task_id, n_tasks=len(tasks),
                   train_data=lambda i: tasks[i],
                   make_loader=lambda d, shuffle=True: BatchLoader(d, batch_size, shuffle=shuffle),
                   batch_size=batch_size, dist=DIST, seed=0)


def sgd_steps(net: Network, strategy, ctx: Context, steps: int, lr: float = 0.1) -> None:
    """Train as the task loop does: ContinualSystem's own step (loss terms, penalties' gradient,
    the strategy's hook), then plain SGD."""
    system = ContinualSystem(net, [strategy], TrainerConfig(log_every_n_steps=1))
    system.ctx = ctx
    opt = torch.optim.SGD(net.parameters(), lr=lr)
    batches = iter(())
    for i in range(steps):
        batch = next(batches, None)
        if batch is None:
            batches = iter(BatchLoader(ctx.train_data(ctx.task_id), ctx.batch_size, shuffle=True))
            batch = next(batches)
        opt.zero_grad()
        system.training_step(batch, i).backward()
        system.on_before_optimizer_step(opt)
        opt.step()
        system.on_train_batch_end(None, batch, i)


def digits_run(tmp_path, *overrides: str, epochs: int = 1) -> dict:
    cfg = config.load(None, quick(*DIGITS, f"trainer.max_epochs={epochs}",
                                  f"out_dir={tmp_path}", *overrides))
    return run(cfg)


def resume_matches(tmp_path, monkeypatch, *overrides: str) -> dict:
    """An uninterrupted run's matrices equal those of the same run stopped and resumed, both
    between tasks (after the second) and inside one (a crash after the 6th step of the third,
    resumed from a checkpoint taken every 4 steps, which does not change the results)."""
    base = quick(*DIGITS, "trainer.max_epochs=1", *overrides)
    full = run(config.load(None, [*base, f"out_dir={tmp_path / 'full'}", "name=full"]))

    original = TaskLoop.train_task

    def stop_at_third(self, i, tests):
        if i == 2:
            raise RuntimeError("simulated stop")
        original(self, i, tests)

    between = config.load(None, [*base, f"out_dir={tmp_path / 'between'}", "name=r"])
    monkeypatch.setattr(TaskLoop, "train_task", stop_at_third)
    with pytest.raises(RuntimeError, match="simulated stop"):
        run(between)
    monkeypatch.setattr(TaskLoop, "train_task", original)
    resumed = run(between, RunDir(tmp_path / "between" / "r"))
    assert resumed["matrices"] == full["matrices"]

    steps_before = sum(t["steps"] for t in full["per_task"][:2])
    resumes_bit_identically([*base, "checkpoint.every_n_steps=4", f"out_dir={tmp_path}"],
                            monkeypatch, f"step:{steps_before + 6}", task=2, reference=full)
    return full
