"""sparse_memory: only the chosen slots move, the ranking is TF-IDF, and bad setups are refused."""

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import quick

from harness import config
from harness.errors import UserError
from harness.experiment import checkpoint
from harness.experiment.run import run
from strategies.sparse_memory import SparseMemory, SparseMemoryConfig

pytestmark = pytest.mark.usefixtures("one_thread")

MQAR = ["scenario.name=mqar", "scenario.n_experiences=2", "scenario.seq_len=16",
        "scenario.n_pairs=2", "scenario.n_keys=8", "scenario.n_values=8", "scenario.n_filler=4",
        "scenario.n_train=64", "scenario.n_val=0", "scenario.n_test=16"]
MODEL = ["model.name=memory_layer", "model.d_model=32", "model.n_keys=8", "model.top_k=4",
         "model.key_dim=16"]


def _run(*extra, name="run", model=tuple(MODEL)):
    return run(config.load(None, quick(
        *MQAR, *model, "strategy=sparse_memory", "trainer.max_steps=4", "trainer.lr=0.01",
        "trainer.accelerator=cpu", "eval_init=false", f"name={name}", *extra)))


@pytest.mark.parametrize("rank", ["task", "batch"])
def test_slots_outside_the_chosen_set_do_not_change(rank, monkeypatch):
    """Parameters at a task's first step against its end: only chosen value rows moved."""
    start, chosen, ends = {}, {}, {}
    step, end = SparseMemory.before_optimizer_step, SparseMemory.after_task

    def spy_step(self, ctx):
        masks = self.selected if rank == "task" else self._pending
        assert [int(m.sum()) for m in masks] == [5]  # slots=5 in the one memory layer
        start.setdefault(ctx.task_id, {n: p.detach().clone()
                                       for n, p in ctx.system.net.named_parameters()})
        chosen.setdefault(ctx.task_id, []).append(masks[0].clone())
        step(self, ctx)

    def spy_end(self, ctx):
        ends[ctx.task_id] = {n: p.detach().clone() for n, p in ctx.system.net.named_parameters()}
        end(self, ctx)

    monkeypatch.setattr(SparseMemory, "before_optimizer_step", spy_step)
    monkeypatch.setattr(SparseMemory, "after_task", spy_end)
    _run(f"strategy.sparse_memory.rank={rank}", "strategy.sparse_memory.slots=5",
         "strategy.sparse_memory.start_task=0")
    assert sorted(start) == [0, 1]
    for task, before in start.items():
        trained = torch.stack(chosen[task]).any(0)
        for name, value in before.items():
            if name.endswith("values.weight"):
                moved = (ends[task][name] - value).abs().sum(-1).ne(0)
                assert not (moved & ~trained).any(), f"task {task}: unchosen slots moved"
                assert moved.any(), f"task {task}: no slot was trained"
            else:
                assert torch.equal(ends[task][name], value), f"task {task}: {name} moved"


def test_the_ranking_is_tf_idf_against_the_earlier_tasks():
    strategy = SparseMemory(SparseMemoryConfig(slots=2))
    strategy.background_df, strategy.background_n = [torch.tensor([0., 9., 0., 9.])], 9
    # idf = log((1 + 9) / (1 + df)) + 1 = [3.3, 1, 3.3, 1]; tf * idf ~ [3.3, 6, 13.2, 0]
    counts = torch.tensor([1., 6., 4., 0.])
    assert strategy.choose(0, counts).tolist() == [False, True, True, False]
    # 1000 background sequences, all reading slot 1: idf [7.9, 1, 7.9, 7.9], scores
    # [7.9, 6, 31.6, 0]: the slot read most now loses to a rare one read once
    strategy.background_df = [torch.tensor([0., 1000., 0., 0.])]
    strategy.background_n = 1000
    assert strategy.choose(0, counts).tolist() == [True, False, True, False]


def test_the_task_joins_the_background_and_the_state_round_trips():
    results = _run("trainer.max_steps=2", "strategy.sparse_memory.sample=48")
    state = checkpoint.load(Path(results["run_dir"]) / "checkpoints" / "last.ckpt")
    state = state["strategies"][0]
    # both tasks counted, 48 of their 64 sequences each; every sequence reads some slot
    assert state["background_n"] == 2 * 48
    assert state["background_df"][0].max() <= 96 and state["background_df"][0].sum() >= 96
    fresh = SparseMemory(SparseMemoryConfig())
    fresh.load_state_dict(state)
    assert torch.equal(fresh.background_df[0], state["background_df"][0])


@pytest.mark.parametrize("extra, message, before_run_dir", [
    (["model.name=gpt", "model.d_model=32"], "needs a model with memory layers", True),
    ([*MODEL, "strategy.sparse_memory.slots=65"], r"slots=65 must be at most .* 64", True),
    ([*MODEL, "trainer.weight_decay=0.1"], "trainer.weight_decay=0", True),
])
def test_setups_it_cannot_train_are_refused_in_one_line(extra, message, before_run_dir):
    with pytest.raises(UserError, match=message) as err:
        _run(name="bad", model=extra)
    assert "\n" not in str(err.value)
    if before_run_dir:  # the network is checked before anything is written
        assert not Path("runs/bad").exists()


def test_weight_decay_is_refused_by_the_cli_before_any_run_directory(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "harness", "run", "model.name=memory_layer",
         "strategy=sparse_memory", "trainer.weight_decay=0.1", f"out_dir={tmp_path / 'out'}"],
        capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert proc.stderr.startswith("retain: error: strategy sparse_memory needs "
                                  "trainer.weight_decay=0"), proc.stderr[-2000:]
    assert len(proc.stderr.strip().splitlines()) == 1
    assert list(tmp_path.iterdir()) == []  # neither out_dir nor runs/


def test_slots_below_one_are_refused_by_the_config():
    with pytest.raises(UserError, match="strategy.sparse_memory.slots"):
        config.load(None, [*MODEL, "strategy=sparse_memory", "strategy.sparse_memory.slots=0"])


def test_tasks_before_start_task_train_every_parameter(monkeypatch):
    starts, ends = {}, {}
    begin, end = SparseMemory.before_task, SparseMemory.after_task

    def snapshot(ctx):
        return {n: p.detach().clone() for n, p in ctx.system.net.named_parameters()}

    def spy_begin(self, ctx):
        starts[ctx.task_id] = snapshot(ctx)
        begin(self, ctx)

    def spy_end(self, ctx):
        ends[ctx.task_id] = snapshot(ctx)
        end(self, ctx)

    monkeypatch.setattr(SparseMemory, "before_task", spy_begin)
    monkeypatch.setattr(SparseMemory, "after_task", spy_end)
    _run("trainer.max_steps=2")  # start_task=1: task 0 trains the base model
    moved = [[n for n, p in ends[t].items() if not torch.equal(p, starts[t][n])] for t in (0, 1)]
    assert len(moved[0]) == len(starts[0])  # every parameter
    assert [n.split(".")[-2:] for n in moved[1]] == [["values", "weight"]]
