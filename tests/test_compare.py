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


def test_rows_of_different_models_show_only_their_own_options(tmp_path):
    rng = np.random.default_rng(0)
    for seed in (0, 1):
        for model in ({"name": "xl", "mem_len": 0}, {"name": "xl", "mem_len": 24},
                      {"name": "rmt", "n_mem_tokens": 2}):
            extra = {f"model.{k}": v for k, v in model.items()}
            write_run(tmp_path, f"{model['name']}-{len(model)}-{seed}-{extra}", "naive", seed,
                      matrix(0.5, rng), config_extra=extra)
    labels = sorted(r.group.label for r in compare.aggregate(compare.load_runs([tmp_path])[0])[0]
                    .rows)
    assert labels == ["naive (model.name=rmt)",
                      "naive (model.name=xl, model.mem_len=0)",
                      "naive (model.name=xl, model.mem_len=24)"]


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


def lm_run(root, name: str, strategy: str, seed: int, loss: np.ndarray):
    """A language-model run as retain writes it: loss, bits and perplexity matrices, and the
    summary of the definitions before the log scale (an arithmetic perplexity average)."""
    d = write_run(root, name, strategy, seed, np.zeros_like(loss))
    res = json.loads((d / "results.json").read_text())
    ppl = np.exp(loss)
    res.update(metric="perplexity", higher_is_better=False, task="lm", setting="domain-il",
               matrices={"loss": loss.tolist(), "bits_per_token": (loss / math.log(2)).tolist(),
                         "perplexity": ppl.tolist(), "accuracy": (0.3 - loss / 50).tolist()},
               baseline={"loss": [5.5] * 3, "bits_per_token": [5.5 / math.log(2)] * 3,
                         "perplexity": [math.exp(5.5)] * 3, "accuracy": [0.0] * 3})
    res["summary"]["perplexity/avg"] = float(ppl[-1].mean())
    res["summary"]["perplexity/fwt"] = -233.0  # against the untrained model, as it was
    (d / "results.json").write_text(json.dumps(res))
    return d


def test_language_models_are_compared_on_the_log_scale(tmp_path):
    """A blown-up task (perplexity 1.2 million on one seed) does not swamp the comparison:
    compare recomputes the summary on bits per token, perplexity as exp(mean log-loss)."""
    rng = np.random.default_rng(0)
    for seed in (0, 1, 2):
        for strategy, final in (("naive", [4.0, 3.0, 1.5]), ("replay", [2.5, 2.2, 1.6])):
            loss = np.array([[2.0, 6.0, 6.0], [3.0, 1.8, 5.0], final]) + rng.uniform(0, .1)
            if strategy == "naive" and seed == 2:
                loss[-1, 0] = 14.0  # e^14: the kind of task that made averages meaningless
            lm_run(tmp_path, f"{strategy}-{seed}", strategy, seed, loss)
    write_run(tmp_path, "crashed", "replay", 5, matrix(0.5, rng), status="failed")
    runs, notes = compare.load_runs([tmp_path])
    assert len(runs) == 6  # the failed run has no results.json and is not counted
    t = compare.aggregate(runs)[0]
    assert (t.metric, t.higher_is_better) == ("bits_per_token", False)
    assert [h for _, h in t.columns][:5] == ["bits/token", "BWT", "FWT", "forgetting",
                                             "perplexity"]
    naive = t.rows[0]
    seeds = sorted(naive.group.runs, key=lambda r: r["seed"])
    logs = [np.mean(r["matrices"]["loss"][-1]) for r in seeds]
    assert [r["summary"]["perplexity/avg"] for r in seeds] == pytest.approx(np.exp(logs))
    assert naive.stats["bits_per_token/avg"].mean == pytest.approx(np.mean(logs) / math.log(2))
    assert naive.stats["bits_per_token/fwt"] is None  # from scratch: n/a, and why
    assert any(n.startswith("FWT n/a: trained from scratch") for n in t.notes)
    assert "perplexity/fwt" not in seeds[0]["summary"]  # the old definition is gone
    delta, boot, p, needed = compare.fmt_paired("bits_per_token/avg", t.rows[1],
                                                t.higher_is_better)
    assert delta.startswith("-")  # lower bits per token is the improvement
    assert boot.startswith("[-") and needed
    with pytest.raises(UserError):
        compare.load_runs([tmp_path / "nothing-here"])


def test_metric_option_reads_another_metric(tmp_path, capsys):
    """Memory probes are scored by accuracy on the answers, not bits per token."""
    rng = np.random.default_rng(0)
    for seed in (0, 1):
        lm_run(tmp_path, f"naive-{seed}", "naive", seed,
               np.array([[2.0, 6.0, 6.0], [3.0, 1.8, 5.0], [4.0, 3.0, 1.5]]) + rng.uniform(0, .1))
    t = compare.aggregate(compare.load_runs([tmp_path])[0], metric="accuracy")[0]
    assert (t.metric, t.higher_is_better, t.columns[0][1]) == ("accuracy", True, "accuracy")
    accuracy = [np.mean(r["matrices"]["accuracy"][-1]) for r in t.rows[0].group.runs]
    assert t.rows[0].stats["accuracy/avg"].mean == pytest.approx(np.mean(accuracy))
    assert compare.main([str(tmp_path), "--metric", "accuracy"]) == 0
    assert "· accuracy (higher is better)" in capsys.readouterr().out
    with pytest.raises(UserError, match="--metric acc: no run reports it; valid choices: "
                                        "accuracy, bits_per_token"):
        compare.main([str(tmp_path), "--metric", "acc"])


def test_test_option_shows_the_paired_test_of_forgetting(tmp_path, capsys):
    """A strategy that forgets less on every seed is tested on forgetting, not on the average
    (the paired columns show forgetting's Δ and p); a bad --test is one error line."""
    for seed in (0, 1, 2):
        for strategy, old in (("naive", 2.6 + seed / 20), ("replay", 2.1)):  # task 1 at the end
            lm_run(tmp_path, f"{strategy}-{seed}", strategy, seed,
                   np.array([[2.0, 6.0, 6.0], [3.0, 1.8, 5.0], [old, 1.8, 1.5]]))
    assert compare.main([str(tmp_path), "--test", "forgetting"]) == 0
    header, naive, replay = capsys.readouterr().out.splitlines()[1:4]
    assert "Δ forgetting vs naive" in header and naive.split()[0] == "naive"
    assert replay.split()[0] == "replay" and "* better" in replay
    delta = -(0.5 + 0.05) / 2 / math.log(2)  # task 1 forgets 0.5 + seed/20 nats less; task 2 0
    assert f" {delta:+.3g} ± " in replay
    with pytest.raises(UserError, match="unknown --test statistic 'nope'; valid choices: avg"):
        compare.main([str(tmp_path), "--test", "nope"])


def test_significance_reads_the_holm_adjusted_p(tmp_path):
    """p = 0.040 unadjusted but Holm p > 0.05: not marked, in text, JSON and CSV alike."""
    write_strategy_sweep(tmp_path / "runs")
    runs, _ = compare.load_runs([tmp_path / "runs"])
    t = compare.aggregate(runs)[0]
    row = t.rows[1]
    key = t.columns[0][0]
    row.paired[key] = compare.Paired(3, 0.05, 0.04, 0.040, boot_low=0.01, boot_high=0.09,
                                     seeds_needed=5)
    row.p_holm[key] = 0.12
    assert "*" not in compare.fmt_paired(key, row, True)[2]
    row.p_holm[key] = 0.03
    assert "* better" in compare.fmt_paired(key, row, True)[2]
    assert compare.to_json([t])["scenarios"][0]["groups"][1]["vs_baseline"][key]["significant"]


def test_cost_view_sorts_by_cost_and_marks_the_pareto_front(tmp_path, capsys):
    root = tmp_path / "runs"
    rng = np.random.default_rng(0)
    # (strategy, strength, FLOPs): ewc costs more than replay100 and scores lower: off the front
    for strategy, strength, flops, extra in (("naive", 0.3, 1e9, {}), ("ewc", 0.4, 3e9, {}),
                                             ("replay", 0.8, 2e9, {"strategy.replay.mem_size": 1}),
                                             ("replay", 0.9, 4e9, {"strategy.replay.mem_size": 2})):
        for seed in (0, 1):
            write_run(root, f"{strategy}{extra}-{seed}", strategy, seed, matrix(strength, rng),
                      config_extra=extra, summary_extra={"train_flops": flops * (1 + seed / 100)})
    assert compare.main([str(root), "--x", "flops"]) == 0
    out = capsys.readouterr().out
    lines = [line for line in out.splitlines() if line.startswith(("naive", "ewc", "replay"))]
    assert [line.split()[0] for line in lines] == ["naive", "replay", "ewc", "replay"]
    assert [line.rstrip().endswith("yes") for line in lines] == [True, True, False, True]
    assert "× naive" in out and "training FLOPs" in out


def test_an_unknown_axis_is_one_error_line_and_writes_nothing(tmp_path, capsys):
    from harness.cli import main

    write_strategy_sweep(tmp_path / "runs", seeds=(0,))
    code = main(["compare", str(tmp_path / "runs"), "--x", "epochs", "--csv",
                 str(tmp_path / "t.csv")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1
    assert err.startswith("retain: error: unknown --x axis 'epochs'; valid choices: flops, "
                          "memory, wall")
    assert not (tmp_path / "t.csv").exists()


def test_bootstrap_interval_and_seeds_needed():
    from harness.analysis.stats import bootstrap_ci, seeds_needed

    diffs = [0.10, 0.12, 0.30, 0.05, 0.21]
    low, high = bootstrap_ci(diffs)
    ref = sps.bootstrap((np.array(diffs),), np.mean, method="BCa",
                        rng=np.random.default_rng(0)).confidence_interval
    assert (low, high) == (pytest.approx(ref.low), pytest.approx(ref.high))
    assert low < np.mean(diffs) < high
    assert bootstrap_ci([0.1, 0.1, 0.1]) == (pytest.approx(0.1), pytest.approx(0.1))
    # a paired t-test needs 34 pairs to detect d = 0.5 with 80% power (G*Power gives 34)
    assert seeds_needed(0.5, 1.0) == 34
    assert seeds_needed(0.01, 1.0) is None and seeds_needed(0.1, 0.0) is None
    p = paired_test({0: 0.5, 1: 0.6, 2: 0.9}, {0: 0.4, 1: 0.3, 2: 0.5})
    assert p.boot_low is not None and p.seeds_needed == seeds_needed(p.mean_diff, np.std(
        [0.1, 0.3, 0.4], ddof=1))
