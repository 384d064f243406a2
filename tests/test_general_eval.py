"""General-ability retention (``harness.core.general``): a held-out domain that is no task is
scored before training and after every task, printed as its own column, summarised as
"general Δ" and compared across runs; naming a task as the general set is one error."""

import subprocess
import sys
from pathlib import Path

import pytest
from conftest import quick

from harness import config
from harness.analysis import compare, report
from harness.cli import _resumable
from harness.errors import UserError
from harness.experiment.console import format_matrix, format_summary
from harness.experiment.records import load_results
from harness.experiment.run import run
from harness.runtime import faults

TEXT = ["scenario.domains=[python,docs]", "scenario.n_experiences=2", "scenario.seq_len=64",
        "scenario.train_tokens=16384", "scenario.test_tokens=4096", "scenario.val_tokens=0",
        "model.d_model=32", "model.n_head=2", "trainer.max_epochs=1",
        "scenario.general_eval=bible"]

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("RETAIN_CACHE", str(tmp_path / "cache"))


def test_the_general_set_is_scored_before_and_after_every_task_and_reported():
    results = run(config.load(None, quick(*TEXT, "name=general")))
    general = results["general"]
    assert general["name"] == "bible"
    assert set(general["before"]) >= {"perplexity", "bits_per_token", "accuracy"}
    assert all(len(v) == 2 for v in general["after"].values())
    # training on code and its docs moves the model on the Bible too: the scores change
    assert general["after"]["perplexity"][0] != general["before"]["perplexity"]
    s = results["summary"]
    assert s["bits_per_token/general_delta"] == pytest.approx(
        general["after"]["bits_per_token"][-1] - general["before"]["bits_per_token"])
    assert s["perplexity/general"] == general["after"]["perplexity"][-1]
    # results.json reads back with it; the matrix grows a column, the summary a line
    assert load_results(results["run_dir"]).general == general
    table = format_matrix(results["matrices"]["perplexity"], results["task_names"],
                          "perplexity", results["baseline"]["perplexity"], general)
    head, _, untrained, *rows = table.splitlines()
    assert head.split()[-1] == "general:bible" and len(rows) == 2
    assert untrained.split()[-1] == f"{general['before']['perplexity']:.3f}"
    assert "general Δ" in format_summary(results)
    metrics = (results["run_dir"] + "/metrics.jsonl")
    assert open(metrics).read().count('"general/perplexity"') == 3  # before, after 1, after 2


def test_compare_shows_general_delta_with_its_direction(tmp_path):
    for seed in (0, 1):
        for strategy in ("naive", "replay"):
            run(config.load(None, quick(*TEXT, f"strategy={strategy}", f"seed={seed}",
                                        f"out_dir={tmp_path}", f"name={strategy}{seed}",
                                        "eval_init=false")))
    runs, _ = compare.load_runs([tmp_path])
    (table,) = compare.aggregate(runs)
    key = "bits_per_token/general_delta"
    assert (key, "general Δ") in table.columns
    assert all(row.stats[key].n == 2 for row in table.rows)
    assert not compare.better_when_higher(key, table.higher_is_better)
    assert "general Δ" in compare.format_tables([table])
    page = report.render([table], [], "general", [str(tmp_path)])
    assert "<h3>General ability</h3>" in page and "bible" in page


def test_a_resumed_run_keeps_the_general_scores_it_had(monkeypatch):
    reference = run(config.load(None, quick(*TEXT, "name=reference")))
    monkeypatch.setenv("RETAIN_FAULT_MODE", "raise")
    monkeypatch.setenv("RETAIN_FAULT", "task:1")  # after task 1's checkpoint
    faults.reset()
    cfg = config.load(None, quick(*TEXT, "name=killed"))
    with pytest.raises(faults.SimulatedCrash):
        run(cfg, _resumable(cfg, None))
    monkeypatch.delenv("RETAIN_FAULT")
    resumed = run(cfg, _resumable(cfg, None))
    assert resumed["resumes"] and resumed["general"] == reference["general"]


@pytest.mark.parametrize("overrides", [
    ["scenario.general_eval=python"],  # the first task
    ["scenario.shuffle_order=true", "scenario.general_eval=docs"],  # may be drawn as a task
])
def test_a_general_set_that_is_also_a_task_is_refused(overrides):
    with pytest.raises(UserError, match="is also a task of the stream; choose a domain"):
        config.load(None, [*TEXT[:-1], *overrides])


def test_the_cli_refuses_it_in_one_line_before_any_run_directory(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "harness", "run", *TEXT[:-1],
                           "scenario.general_eval=docs"],
                          capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert proc.returncode == 2 and proc.stderr.startswith("retain: error: ")
    assert len(proc.stderr.strip().splitlines()) == 1 and "bible" in proc.stderr
    assert not (tmp_path / "runs").exists()


def test_wandb_gets_the_general_curves_table_and_summary(tmp_path, capsys):
    results = run(config.load(None, [*TEXT, "trainer.progress=false", "logger=wandb",
                                     "wandb.mode=offline", f"out_dir={tmp_path}",
                                     "name=wandb", "trainer.max_steps=2"]))
    assert "W&B failed" not in capsys.readouterr().err
    logged = b"".join(p.read_bytes() for p in
                      Path(results["run_dir"]).glob("wandb/offline-run-*/run-*.wandb"))
    assert b"general/perplexity" in logged and b"general/bible" in logged
    assert b"bits_per_token/general_delta" in logged


def test_a_run_killed_after_its_last_task_keeps_the_general_record(monkeypatch, capsys):
    reference = run(config.load(None, quick(*TEXT, "name=reference")))
    monkeypatch.setenv("RETAIN_FAULT_MODE", "raise")
    monkeypatch.setenv("RETAIN_FAULT", "task:2")  # after the last task's checkpoint
    faults.reset()
    cfg = config.load(None, quick(*TEXT, "name=killed"))
    with pytest.raises(faults.SimulatedCrash):
        run(cfg, _resumable(cfg, None))
    monkeypatch.delenv("RETAIN_FAULT")
    capsys.readouterr()
    resumed = run(cfg, _resumable(cfg, None))
    assert "after its last task (2/2)" in capsys.readouterr().err
    assert resumed["general"] == reference["general"]
    assert resumed["summary"]["bits_per_token/general_delta"] == reference["summary"][
        "bits_per_token/general_delta"]
