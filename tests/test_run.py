"""End to end: a tiny run writes a complete run directory; naive forgets and joint does not."""

import json
from pathlib import Path

import pytest
from conftest import quick

from harness import config
from harness.errors import UserError
from harness.experiment import checkpoint
from harness.experiment.run import run

DIGITS = ["scenario.name=split-digits", "model.name=mlp", "trainer.max_epochs=1"]
# The default scenario, shrunk to seconds: two very different domains, small model.
TEXT = ["scenario.domains=[python,bible]", "scenario.n_experiences=2", "scenario.seq_len=64",
        "scenario.train_tokens=49152", "scenario.test_tokens=8192", "model.d_model=64",
        "trainer.max_epochs=2", "eval_init=false"]


def test_tiny_run_writes_a_complete_run_directory():
    cfg = config.load(None, ["trainer.progress=false", "name=tiny", *DIGITS])
    results = run(cfg)
    root = Path("runs/tiny")
    saved = json.loads((root / "results.json").read_text())
    assert saved["status"] == "complete"
    assert json.loads((root / "status.json").read_text())["status"] == "complete"
    assert len(saved["matrices"]["accuracy"]) == 5
    assert all(len(row) == 5 for row in saved["matrices"]["accuracy"])
    assert saved["summary"]["accuracy/avg"] == pytest.approx(results["summary"]["accuracy/avg"])
    assert (root / "config.yaml").read_text().startswith("name: tiny")
    logged_steps = (root / "metrics.jsonl").read_text()
    assert logged_steps.count("loss/task") >= 1
    # one evaluation row per task, per test experience, for the curves over the stream
    assert logged_steps.count('"eval/accuracy/digits 0+1"') == 5
    state = checkpoint.load(root / "checkpoints" / "last.ckpt")
    assert state["position"] == 5
    # The W&B offline run holds the per-step losses and the summary metrics.
    logged = b"".join(p.read_bytes() for p in root.glob("wandb/offline-run-*/run-*.wandb"))
    assert b"loss/task" in logged and b"accuracy/avg" in logged


def test_naive_forgets_the_first_domain_and_joint_does_not():
    naive = run(config.load(None, quick(*TEXT, "strategy=naive")))["matrices"]["perplexity"]
    joint = run(config.load(None, quick(*TEXT, "strategy=joint")))["matrices"]["perplexity"]
    # Same first task (same seed), then: naive's python perplexity rises, joint's does not.
    assert naive[0][0] == pytest.approx(joint[0][0])
    assert naive[1][0] > 1.5 * naive[0][0]
    assert joint[1][0] < naive[0][0]


def test_diverging_loss_stops_the_run_and_marks_it_failed():
    cfg = config.load(None, quick(*DIGITS, "name=boom", "trainer.optimizer=sgd",
                                  "trainer.lr=1e30"))
    with pytest.raises(UserError, match=r"non-finite loss at task 1, step \d+: term\(s\) task"):
        run(cfg)
    root = Path("runs/boom")
    assert json.loads((root / "status.json").read_text())["status"] == "failed"
    assert not (root / "results.json").exists()
