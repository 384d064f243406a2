"""Evaluation during training: curves every n steps on a fixed subsample, kept in metrics.jsonl,
W&B and results.json; they leave training untouched, survive a crash bit for bit, count every
example once across simulated DDP ranks, and bad settings stop the run before it starts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import quick
from test_ddp_threads import run_ranks, thread_dist
from test_resume import crash_then_resume

from harness import config
from harness.api import TaskData
from harness.cli import main
from harness.core import curves as curves_mod
from harness.core import evaluate as evaluate_mod
from harness.core.network import Network
from harness.experiment.run import run

DIGITS = ["scenario.name=split-digits", "scenario.n_experiences=2", "model.name=mlp",
          "trainer.max_epochs=2", "trainer.batch_size=64"]  # 2 tasks x 11-12 steps
EVAL = ["eval.every_n_steps=4", "eval.subsample=30"]
# An LSTM that carries its state from batch to batch: evaluation clears the state
# (reset_memory) and runs its own batches through it, and must hand it back untouched.
LSTM = ["scenario.domains=[python,bible]", "scenario.n_experiences=2", "scenario.seq_len=32",
        "scenario.train_tokens=4096", "scenario.test_tokens=1024", "scenario.val_tokens=0",
        "model.name=lstm", "model.d_model=32", "model.n_layer=1", "model.carry_state=true",
        "trainer.batch_size=16", "eval_init=false"]

pytestmark = pytest.mark.usefixtures("one_thread")


def curve_lines(name: str) -> list[dict]:
    lines = [json.loads(x) for x in Path(f"runs/{name}/metrics.jsonl").read_text().splitlines()]
    return [x for x in lines if any(k.startswith("curve/") for k in x)]


def test_curves_every_n_steps_and_at_each_boundary_in_every_output():
    plain = run(config.load(None, quick(*DIGITS, "name=plain")))
    cfg = config.load(None, ["trainer.progress=false", *DIGITS, *EVAL, "name=curves"])
    results = run(cfg)
    assert results["matrices"] == plain["matrices"]  # evaluating did not change training
    c = results["curves"]
    ends = [sum(t["steps"] for t in results["per_task"][: i + 1]) for i in range(2)]
    expected = sorted({*range(4, ends[-1] + 1, 4), *ends})
    assert c["step"] == expected and c["examples"] == [30, 30]
    assert c["task"] == [0 if s <= ends[0] else 1 for s in expected]
    assert all(len(row) == 2 for row in c["scores"]["accuracy"])
    # the boundary point scores the model the end-of-task matrix scores, on a subsample of it
    assert c["scores"]["accuracy"][expected.index(ends[0])][0] > 0.8
    saved = json.loads(Path("runs/curves/results.json").read_text())
    assert saved["curves"] == c
    lines = curve_lines("curves")
    assert [x["step"] for x in lines] == expected
    assert [x["curve/accuracy/digits 0+1+2+3+4"] for x in lines] == [
        row[0] for row in c["scores"]["accuracy"]]
    logged = b"".join(p.read_bytes() for p in Path("runs/curves").glob("wandb/*/run-*.wandb"))
    assert b"curve/accuracy/digits 5+6+7+8+9" in logged
    s = results["summary"]
    assert s["accuracy/worst"] is not None and s["accuracy/gap_dips"] == 1
    assert 0 < s["curve_eval_time_s"] == pytest.approx(
        sum(t["curve_eval_time_s"] for t in results["per_task"]))
    assert all(t["step_flops"] > 0 and t["train_flops"] >= t["step_flops"] * t["steps"]
               for t in results["per_task"])
    assert "curves" not in plain or plain["curves"] is None


def test_a_model_that_carries_memory_gets_it_back(monkeypatch):
    plain = run(config.load(None, quick(*LSTM, "name=plain")))
    evaluated = run(config.load(None, quick(*LSTM, "eval.every_n_steps=2", "name=evaluated")))
    assert evaluated["matrices"] == plain["matrices"]
    assert len(evaluated["curves"]["step"]) > 4
    # a language model's dips are read on bits per token (worst = highest)
    assert evaluated["stability_gap"]["bits_per_token"]
    assert evaluated["summary"]["bits_per_token/worst"] >= min(
        row[0] for row in evaluated["curves"]["scores"]["bits_per_token"])


def test_curves_of_a_crashed_and_resumed_run_equal_the_uninterrupted_ones(monkeypatch):
    overrides = [*DIGITS, *EVAL, "checkpoint.every_n_steps=3", "strategy=replay",
                 "trainer.log_every_n_steps=1"]
    reference = run(config.load(None, quick(*overrides, "name=reference")))
    resumed = crash_then_resume(overrides, "crashed", ["step:6", "eval:3", "checkpoint:2",
                                                      "eval:5", "task:1"], monkeypatch)
    assert len(resumed["resumes"]) >= 3
    assert resumed["curves"] == reference["curves"]
    assert resumed["matrices"] == reference["matrices"]
    for key in ("accuracy/worst", "accuracy/wc", "accuracy/gap_depth"):
        assert resumed["summary"][key] == reference["summary"][key]
    # metrics.jsonl holds each point once, in order: none lost, none repeated
    assert curve_lines("crashed") == curve_lines("reference")


def test_evaluation_hands_back_every_random_generator(monkeypatch):
    """Whatever evaluation draws (a model sampling at eval time, say), training's generators
    continue as if it had not run."""
    import random

    import numpy as np

    from harness.config import EvalConfig
    from harness.runtime.seed import rng_state

    real = curves_mod.evaluate

    def drawing(*args, **kwargs):
        torch.rand(3), random.random(), np.random.rand()
        return real(*args, **kwargs)

    monkeypatch.setattr(curves_mod, "evaluate", drawing)
    spec = config_spec()
    from harness.models.mlp import MLP, MLPConfig

    net = Network(MLP(MLPConfig(hidden=[8]), spec), spec)
    tests = [TaskData(torch.randn(9, 6), torch.zeros(9, dtype=torch.long),
                      torch.zeros(9, dtype=torch.long))]
    ev = curves_mod.ContinualEval(EvalConfig(every_n_steps=1), tests, 0, 4, "32-true", ["a"])
    before = rng_state()
    ev(net, 1, 0)
    after = rng_state()
    assert torch.equal(before["torch"], after["torch"])
    assert torch.equal(before["python"][1], after["python"][1])
    assert torch.equal(before["numpy"][1], after["numpy"][1])


def test_the_subsample_is_fixed_by_seed_and_task_and_kept_in_order():
    data = TaskData(torch.arange(100.0)[:, None], torch.zeros(100, dtype=torch.long),
                    torch.zeros(100, dtype=torch.long))
    first = curves_mod.subsample(data, 10, seed=3, task=1).x[:, 0].tolist()
    assert first == curves_mod.subsample(data, 10, seed=3, task=1).x[:, 0].tolist()
    assert first == sorted(first) and len(set(first)) == 10
    assert first != curves_mod.subsample(data, 10, seed=3, task=2).x[:, 0].tolist()
    assert first != curves_mod.subsample(data, 10, seed=4, task=1).x[:, 0].tolist()
    assert curves_mod.subsample(data, None, 0, 0) is data
    torch.manual_seed(0)
    before = torch.get_rng_state()
    curves_mod.subsample(data, 10, seed=3, task=1)
    assert torch.equal(torch.get_rng_state(), before)  # the training generators are untouched


def test_two_simulated_ranks_score_the_subsample_as_one_process(monkeypatch):
    """Under DDP each rank scores its shard of the same subsample and the sums are reduced."""
    from harness.config import EvalConfig
    from harness.models.mlp import MLP, MLPConfig

    torch.manual_seed(0)
    spec = config_spec()
    net = Network(MLP(MLPConfig(hidden=[8]), spec), spec)
    g = torch.Generator().manual_seed(1)
    tests = [TaskData(torch.randn(n, 6, generator=g), torch.randint(5, (n,), generator=g),
                      torch.zeros(n, dtype=torch.long)) for n in (57, 31)]
    cfg = EvalConfig(every_n_steps=1, subsample=21)
    single = curves_mod.ContinualEval(cfg, tests, 0, 8, "32-true", ["a", "b"])
    single(net, 1, 0)
    proxy, bind = thread_dist()
    monkeypatch.setattr(evaluate_mod, "DIST", proxy)

    scored = {0: 0, 1: 0}
    forward = net.forward

    def counting(x, t=None):
        scored[proxy.rank] += len(x)
        return forward(x, t)

    monkeypatch.setattr(net, "forward", counting)

    def rank(dist):
        bind(dist)
        ev = curves_mod.ContinualEval(cfg, tests, 0, 8, "32-true", ["a", "b"])
        ev(net, 1, 0)
        return ev.curves

    for got in run_ranks(2, rank):
        assert got["scores"]["accuracy"] == single.curves["scores"]["accuracy"]
        assert got["scores"]["loss"][0] == pytest.approx(single.curves["scores"]["loss"][0],
                                                         rel=1e-6)
    assert scored == {0: 11 + 11, 1: 10 + 10}  # each of the 2 x 21 examples once


def config_spec():
    from harness.api import DataSpec

    return DataSpec(kind="vectors", task="classification", input_dim=6, n_classes=5)


@pytest.mark.parametrize("override, message", [
    ("eval.every_n_steps=0", "invalid value 0 for 'eval.every_n_steps': must be at least 1"),
    ("eval.every_n_steps=-5", "invalid value -5 for 'eval.every_n_steps': must be at least 1"),
    ("eval.subsample=0", "invalid value 0 for 'eval.subsample': must be at least 1"),
    ("eval.subsample=5000", "eval.subsample=5000 is larger than test task 'digits "),
    ("eval.every_n_steps=abc", "invalid value for 'eval.every_n_steps'"),
])
def test_bad_settings_are_one_error_line_and_write_nothing(override, message, capsys):
    args = ["run", *quick(*DIGITS, "eval.every_n_steps=3", override, "name=bad")]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"retain: error: {message}") and err.count("\n") == 1, err
    assert not Path("runs").exists()
