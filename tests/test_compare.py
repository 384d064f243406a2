"""Aggregation statistics on hand-made results: grouping, mean, Student-t CI, paired t-test."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest
from conftest_report import matrix, write_run, write_strategy_sweep
from scipy import stats as sps

from harness.analysis import compare
from harness.analysis.stats import holm, paired_test, summarize
from harness.errors import UserError


def test_summary_matches_scipy_student_t():
    xs = [0.81, 0.86, 0.79, 0.90]
    s = summarize(xs)
    lo, hi = sps.t.interval(0.95, len(xs) - 1, loc=np.mean(xs), scale=sps.sem(xs))
    assert s.n == 4 and s.mean == pytest.approx(np.mean(xs))
    assert s.sd == pytest.approx(np.std(xs, ddof=1))
    assert (s.low, s.high) == (pytest.approx(lo), pytest.approx(hi))


def test_summary_edge_cases():
    one = summarize([0.5])
    assert (one.n, one.mean, one.ci95) == (1, 0.5, None)
    assert summarize([]) is None and summarize([None, float("nan")]) is None
    assert summarize([1.0, None, 3.0]).n == 2  # a missing metric is left out, not zeroed


def test_paired_test_matches_scipy_ttest_rel():
    a = {0: 0.91, 1: 0.88, 2: 0.93, 3: 0.90}
    b = {0: 0.20, 1: 0.25, 2: 0.18, 3: 0.22, 9: 0.5}  # seed 9 has no partner: ignored
    p = paired_test(a, b)
    seeds = [0, 1, 2, 3]
    ref = sps.ttest_rel([a[s] for s in seeds], [b[s] for s in seeds])
    assert p.n == 4 and p.p == pytest.approx(ref.pvalue)
    assert p.mean_diff == pytest.approx(np.mean([a[s] - b[s] for s in seeds]))
    one = paired_test({0: 0.9}, {0: 0.2})
    assert one.p is None and "n < 2" in one.note and one.mean_diff == pytest.approx(0.7)


def test_holm_adjustment():
    assert holm([0.01, None, 0.04, 0.03]) == [pytest.approx(0.03), None, pytest.approx(0.06),
                                              pytest.approx(0.06)]


def test_compare_groups_by_strategy_and_swept_values(tmp_path):
    write_strategy_sweep(tmp_path / "runs")
    runs, notes = compare.load_runs([tmp_path / "runs"])
    tables = compare.aggregate(runs)
    assert len(tables) == 1
    t = tables[0]
    labels = [r.group.label for r in t.rows]
    assert labels[0] == "naive"  # baseline first
    assert "replay (mem_size=100)" in labels and "replay (mem_size=200)" in labels
    assert all(len(r.group.runs) == 3 for r in t.rows)
    # the table's numbers are exactly the hand computation from the results files
    row = next(r for r in t.rows if r.group.label == "replay (mem_size=200)")
    base = next(r for r in t.rows if r.group.strategy == "naive")
    vals = [r["summary"]["accuracy/avg"] for r in row.group.runs]
    ref = [r["summary"]["accuracy/avg"] for r in base.group.runs]
    assert row.stats["accuracy/avg"].mean == pytest.approx(np.mean(vals))
    half = sps.t.ppf(0.975, 2) * np.std(vals, ddof=1) / math.sqrt(3)
    assert row.stats["accuracy/avg"].ci95 == pytest.approx(half)
    paired = row.paired["accuracy/avg"]
    assert paired.p == pytest.approx(sps.ttest_rel(vals, ref).pvalue)
    assert "accuracy/avg" not in base.paired


def test_compare_output_text_csv_json(tmp_path, capsys):
    write_strategy_sweep(tmp_path / "runs")
    write_run(tmp_path / "runs", "ewc-single", "ewc", 0, matrix(0.5, np.random.default_rng(1)),
              scenario="other", config_extra={"strategy.ewc.lam": 10})
    code = compare.main([str(tmp_path / "runs"), "--csv", str(tmp_path / "t.csv"),
                         "--json", str(tmp_path / "t.json")])
    out = capsys.readouterr()
    assert code == 0
    assert "== split-digits · accuracy (higher is better) · baseline naive ==" in out.out
    assert "== other" in out.out and "no 'naive' runs" in out.out
    assert "* better" in out.out and " ± " in out.out
    rows = list(csv.DictReader(open(tmp_path / "t.csv")))
    assert len(rows) == 5 and {r["scenario"] for r in rows} == {"split-digits", "other"}
    data = json.loads((tmp_path / "t.json").read_text())
    digits = next(s for s in data["scenarios"] if s["scenario"] == "split-digits")
    group = digits["groups"][1]
    assert group["vs_baseline"]["accuracy/avg"]["significant"] in (True, False)
    assert group["metrics"]["accuracy/avg"]["n"] == 3


def test_lower_is_better_and_incomplete_runs(tmp_path, capsys):
    rng = np.random.default_rng(0)
    for seed in (0, 1, 2):
        for strategy, ppl in (("naive", 40.0), ("replay", 30.0)):
            d = write_run(tmp_path, f"{strategy}-{seed}", strategy, seed, matrix(0.5, rng),
                          summary_extra={"perplexity/avg": ppl + seed * 0.5 + rng.uniform(0, 1)})
            res = json.loads((d / "results.json").read_text())
            res.update(metric="perplexity", higher_is_better=False)
            res["matrices"]["perplexity"] = (40.0 - 10 * np.array(res["matrices"]["accuracy"])
                                             ).tolist()
            (d / "results.json").write_text(json.dumps(res))
    write_run(tmp_path, "crashed", "replay", 5, matrix(0.5, rng), status="failed")
    runs, notes = compare.load_runs([tmp_path])
    assert len(runs) == 6  # the failed run has no results.json and is not counted
    t = compare.aggregate(runs)[0]
    delta, p = compare.fmt_paired("perplexity/avg", t.rows[1], t.higher_is_better)
    assert delta.startswith("-") and "better" in p  # lower perplexity is the improvement
    with pytest.raises(UserError):
        compare.load_runs([tmp_path / "nothing-here"])
