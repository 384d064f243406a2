"""EWC's Fisher, SI's importance and the logged loss on two gloo processes equal one process's.

Each rank runs what the task loop runs under DDP, without Lightning: ``DistLoader`` batches,
``ContinualSystem``'s step inside ``torch.nn.parallel.DistributedDataParallel`` (its gradient
all-reduce), SGD, the strategies' hooks. The stream has 69 examples a task in batches of 16,
so the last batch (5 examples) splits 3 + 2 and only a loss weighed by each rank's share of
the batch gives one process's gradient.
"""

from __future__ import annotations

import socket

import pytest
import torch
import torch.distributed as tdist
import torch.multiprocessing as mp
from strategy_checks import context, tiny_net, toy_tasks

from harness.config import TrainerConfig
from harness.core.system import ContinualSystem
from harness.core.task import DistLoader
from strategies.ewc import EWC, EWCConfig
from strategies.si import SI, SIConfig

BATCH, EXAMPLES, EPOCHS = 16, 69, 2


class _Step(torch.nn.Module):
    """The system's training step as a forward, so DDP can wrap it (as Lightning does)."""

    def __init__(self, system: ContinualSystem):
        super().__init__()
        self.system = system

    def forward(self, batch, batch_idx):
        return self.system.training_step(batch, batch_idx)


def _train(system: ContinualSystem, step, tasks, task_id: int) -> None:
    system.ctx = context(system.net, tasks, task_id, batch_size=BATCH)
    system.ctx.system = system
    for strategy in system.strategies:
        strategy.before_task(system.ctx)
    opt = torch.optim.SGD(system.net.parameters(), lr=0.1, momentum=0.9)
    loader = DistLoader(tasks[task_id], BATCH, shuffle=True, seed=task_id)
    for _ in range(EPOCHS):
        for i, batch in enumerate(loader):
            opt.zero_grad()
            step(batch, i).backward()
            system.on_before_optimizer_step(opt)
            opt.step()
            system.on_train_batch_end(None, batch, i)
    for strategy in system.strategies:
        strategy.after_task(system.ctx)


def estimates(world: int) -> dict:
    """The Fisher of a fixed network, then SI's importance, EWC's Fisher and the logged losses
    after two tasks of training; the same on every rank."""
    tasks = toy_tasks(2, n=EXAMPLES)
    net = tiny_net()
    fisher = EWC(EWCConfig()).fisher(context(net, tasks, 0, batch_size=BATCH))
    si, ewc, logged = SI(SIConfig(c=0.5)), EWC(EWCConfig(lam=10.0)), []
    system = ContinualSystem(net, [si, ewc], TrainerConfig(log_every_n_steps=1),
                             on_metrics=lambda step, m: logged.append(m))
    step = _Step(system)
    if world > 1:
        step = torch.nn.parallel.DistributedDataParallel(step)
    for task_id in range(2):
        _train(system, step, tasks, task_id)
    return {"fisher": fisher, "si": dict(si.importance), "ewc": dict(ewc.importance),
            "loss": [m["loss/total"] for m in logged], "task": [m["loss/task"] for m in logged]}


def _rank(rank: int, world: int, port: int, out: str) -> None:
    torch.set_num_threads(1)
    tdist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                             world_size=world)
    try:
        torch.save(estimates(world), f"{out}/rank{rank}.pt")
    finally:
        tdist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def one_and_two(tmp_path_factory):
    out = tmp_path_factory.mktemp("importance")
    mp.spawn(_rank, args=(2, _free_port(), str(out)), nprocs=2, join=True)
    ranks = [torch.load(out / f"rank{r}.pt") for r in range(2)]
    return estimates(1), ranks


def _assert_close(got: dict, want: dict) -> None:
    assert got.keys() == want.keys()
    for name in want:
        torch.testing.assert_close(got[name], want[name], rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize("key", ["fisher", "si", "ewc"])
def test_importance_on_two_processes_is_the_single_process_one(one_and_two, key):
    one, ranks = one_and_two
    assert any(v.abs().sum() > 0 for v in one[key].values())  # there is something to compare
    for got in ranks:
        _assert_close(got[key], one[key])


def test_two_processes_log_the_global_batch_loss(one_and_two):
    one, ranks = one_and_two
    two = ranks[0]  # rank zero's sink; every rank computes the same values
    assert len(two["loss"]) == len(one["loss"]) == 2 * EPOCHS * -(-EXAMPLES // BATCH)
    assert two["task"] == pytest.approx(one["task"], rel=1e-4)
    assert two["loss"] == pytest.approx(one["loss"], rel=1e-4)
