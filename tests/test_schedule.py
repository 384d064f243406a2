"""Learning-rate schedules (``harness.core.schedule``): their values at given steps, the same
rates under both engines, and a run killed inside a task continuing its schedule exactly."""

import json
import math
from pathlib import Path

import pytest
from conftest import quick

from harness import config
from harness.cli import _resumable
from harness.config import TrainerConfig, config_hash
from harness.core.schedule import lr_at, task_steps
from harness.errors import UserError
from harness.experiment.run import run
from harness.runtime import faults

# 2 tasks x 2 epochs of 11-12 batches: ~22 optimizer steps a task
DIGITS = ["scenario.name=split-digits", "scenario.n_experiences=2", "model.name=mlp",
          "trainer.max_epochs=2", "trainer.batch_size=64", "trainer.log_every_n_steps=1",
          "trainer.lr=0.01"]

pytestmark = pytest.mark.usefixtures("one_thread")


def cfg(**kw) -> TrainerConfig:
    return TrainerConfig(lr=1.0, **kw)


def test_constant_is_the_rate_throughout_after_an_optional_first_warm_up():
    assert [lr_at(cfg(), s, 10, 0) for s in (0, 5, 9)] == [1.0, 1.0, 1.0]
    warm = cfg(warmup_steps=4)
    assert [lr_at(warm, s, 10, 0) for s in range(6)] == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]
    assert lr_at(warm, 0, 10, 1) == 1.0  # no warm-up after the first task


def test_cosine_warms_up_once_and_decays_to_the_floor_in_every_task():
    c = cfg(schedule="cosine", warmup_steps=2, min_lr_ratio=0.1)
    # task 0: 2 warm-up steps, then the peak, a cosine, and lr * 0.1 at its last step
    assert lr_at(c, 0, 12, 0) == 0.5 and lr_at(c, 1, 12, 0) == 1.0
    assert lr_at(c, 2, 12, 0) == 1.0
    assert lr_at(c, 11, 12, 0) == pytest.approx(0.1)
    mid = 2 + (12 - 2 - 1) / 2  # halfway down: half-way between peak and floor
    assert lr_at(c, math.floor(mid), 12, 0) > 0.55 > lr_at(c, math.ceil(mid), 12, 0)
    # task 1 restarts at the peak, without warm-up
    assert lr_at(c, 0, 12, 1) == 1.0 and lr_at(c, 11, 12, 1) == pytest.approx(0.1)
    rates = [lr_at(c, s, 12, 1) for s in range(12)]
    assert rates == sorted(rates, reverse=True)


def test_rewarm_warms_up_again_every_task():
    r = cfg(schedule="rewarm", warmup_fraction=0.25, min_lr_ratio=0.0)
    for task in (0, 1, 2):  # 25% of 8 steps = 2 warm-up steps in every task
        assert [lr_at(r, s, 8, task) for s in range(3)] == [0.5, 1.0, 1.0]
        assert lr_at(r, 7, 8, task) == pytest.approx(0.0, abs=1e-12)


def test_a_tasks_steps_count_accumulation_windows_epochs_and_the_cap():
    assert task_steps(12, TrainerConfig(max_epochs=2)) == 24
    # windows of 5 over 12 batches: 5, 5 and the epoch's last 2 (a step is forced there)
    assert task_steps(12, TrainerConfig(max_epochs=2, accumulate_grad_batches=5)) == 6
    assert task_steps(12, TrainerConfig(max_epochs=2, max_steps=7)) == 7


def test_both_warm_ups_at_once_are_refused_and_no_schedule_keeps_the_old_hash():
    with pytest.raises(UserError, match="warmup_steps and trainer.warmup_fraction"):
        config.load(None, ["trainer.warmup_steps=3", "trainer.warmup_fraction=0.1"])
    with pytest.raises(UserError, match="schedule"):
        config.load(None, ["trainer.schedule=linear"])
    plain = config_hash(config.load(None, []))
    assert config_hash(config.load(None, ["trainer.min_lr_ratio=0.5"])) == plain
    assert config_hash(config.load(None, ["trainer.schedule=cosine"])) != plain


def logged(results) -> list[tuple[int, float]]:
    lines = Path(results["run_dir"], "metrics.jsonl").read_text().splitlines()
    return [(m["step"], m["lr"]) for m in map(json.loads, lines) if "lr" in m]


@pytest.mark.parametrize("schedule", ["rewarm", "cosine"])
def test_both_engines_follow_the_schedule_step_by_step(schedule):
    sched = [f"trainer.schedule={schedule}", "trainer.warmup_steps=3", "strategy=replay"]
    runs = {engine: run(config.load(None, quick(*DIGITS, *sched, f"trainer.engine={engine}",
                                                 f"name={engine}")))
            for engine in ("lean", "lightning")}
    assert runs["lean"]["matrices"] == runs["lightning"]["matrices"]
    rates = logged(runs["lean"])
    assert rates == logged(runs["lightning"])
    trainer = config.load(None, quick(*DIGITS, *sched)).trainer
    lengths = [t["steps"] for t in runs["lean"]["per_task"]]
    expected = [lr_at(trainer, s, n, task) for task, n in enumerate(lengths) for s in range(n)]
    assert [lr for _, lr in rates] == pytest.approx(expected, rel=1e-12)
    first = rates[lengths[0]][1]  # task 2's first step
    assert first == (0.01 / 3 if schedule == "rewarm" else 0.01)


def test_a_run_killed_inside_a_task_continues_its_schedule_exactly(monkeypatch):
    setting = [*DIGITS, "trainer.schedule=rewarm", "trainer.warmup_fraction=0.2",
               "checkpoint.every_n_steps=5", "strategy=naive"]
    reference = run(config.load(None, quick(*setting, "name=reference")))
    monkeypatch.setenv("RETAIN_FAULT_MODE", "raise")
    monkeypatch.setenv("RETAIN_FAULT", "step:31")  # in task 2, checkpointed at its step 5
    faults.reset()
    cfg_ = config.load(None, quick(*setting, "name=killed"))
    with pytest.raises(faults.SimulatedCrash):
        run(cfg_, _resumable(cfg_, None))
    monkeypatch.delenv("RETAIN_FAULT")
    resumed = run(cfg_, _resumable(cfg_, None))
    assert resumed["resumes"][-1]["task"] == 1 and resumed["resumes"][-1]["steps"] == 5
    assert resumed["matrices"] == reference["matrices"]
    assert logged(resumed) == logged(reference)
