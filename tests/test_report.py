"""The HTML report: self-contained, escaped, written atomically, and it renders in Chromium
with no console messages (the page has no script, so any message means something is wrong).

The browser test needs Debian's ``chromium`` package (``apt-get install -y chromium``); it is
skipped, saying so, only when no Chromium binary is found. Set RETAIN_CHROMIUM to use another.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest
from conftest_report import matrix, write_run, write_strategy_sweep

from harness.analysis import compare, report, report_wandb
from harness.analysis import report_assets as svg

XSS = "<script>alert(1)</script>"
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                  "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--hide-scrollbars",
                  "--enable-logging=stderr", "--v=0", "--log-level=0"]


@pytest.fixture
def report_file(tmp_path) -> Path:
    runs = write_strategy_sweep(tmp_path / "sweep", with_curves=True)
    rng = np.random.default_rng(3)
    for seed in (0, 1):  # a hostile run name, strategy and config value in their own scenario
        write_run(runs, f"{XSS}-{seed}", "naive", seed, matrix(0.4, rng), scenario=f"<b>{XSS}",
                  config_extra={"note": "<img src=x onerror=alert(2)>"})
    out = tmp_path / "report.html"
    assert report.main([str(runs), "-o", str(out), "--title", f"demo {XSS}"]) == 0
    return out


def test_report_is_self_contained_escaped_and_complete(report_file):
    page = report_file.read_text()
    assert "<script" not in page.lower()  # not ours, not injected
    assert XSS not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "<img" not in page and "&lt;img src=x onerror=alert(2)&gt;" in page
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:|//)""", page)
    assert "Content-Security-Policy" in page
    assert page.count('<table class="comparison"') == 2  # one per scenario
    assert page.count('class="heatmap"') == 4 + 1  # a mean matrix per row
    assert page.count("<svg") >= 12 and page.count("<details>") >= 14 + 5
    for heading in ("Score over the stream", "Score matrices", "Stability during training",
                    "Forgetting per task", "Score versus cost", "Configurations"):
        assert heading in page
    assert "accuracy vs training FLOPs" in page and "min-ACC" in page and "WC-ACC" in page
    assert "4 rows of 4 evaluated during training" in page
    assert not [p for p in report_file.parent.iterdir() if p.name.endswith(".tmp")]


def test_one_colour_scale_for_every_matrix_of_a_scenario(tmp_path):
    """The same value has the same colour in every strategy's heatmap."""
    runs = write_strategy_sweep(tmp_path / "sweep", seeds=(0,))
    tables = compare.aggregate(compare.load_runs([runs])[0])
    page = report.heatmap_section(tables[0])
    fills = re.findall(r'fill="(#[0-9a-f]{6})"><title>', page)
    means = [np.nanmean(report.matrices(row, "accuracy"), axis=0) for row in tables[0].rows]
    lo, hi = min(m.min() for m in means), max(m.max() for m in means)
    expected = [svg.heat_color((v - lo) / (hi - lo)) for m in means for v in m.ravel()]
    assert fills == expected  # every matrix on the scenario's one scale, best bright
    assert expected.count(svg.heat_color(1.0)) == 1  # one cell is the scenario's best


def test_significance_colour_reads_the_holm_adjusted_p(tmp_path):
    runs = write_strategy_sweep(tmp_path / "sweep")
    t = compare.aggregate(compare.load_runs([runs])[0])[0]
    row, key = t.rows[1], t.columns[0][0]
    row.paired[key] = compare.Paired(3, 0.05, 0.04, 0.040, boot_low=0.01, boot_high=0.09,
                                     seeds_needed=5)
    row.p_holm[key] = 0.12  # p = 0.040 alone, 0.12 once adjusted: not significant
    assert "better" not in report._paired_cells(row, key, True)
    row.p_holm[key] = 0.03
    assert report._paired_cells(row, key, True).count('class="better"') == 2
    page = report.render([t], [], "t", ["x"])
    assert "Holm-adjusted p is its own column" in page and "in parentheses" not in page


def test_cost_axes_never_go_below_zero():
    """Wall time 1 ± 5 s: the axis starts at 0 s, not at -5."""
    chart = svg.scatter([{"label": "a", "x": 1.0, "y": 0.5, "xerr": 5.0, "yerr": 0.7,
                          "color": "#000"},
                         {"label": "b", "x": 3.0, "y": 0.9, "xerr": 0.1, "yerr": 0.05,
                          "color": "#111"}], "t", "wall time (s)", "accuracy")
    ticks = [float(v) for v in re.findall(r'text-anchor="(?:middle|end)">(-?[0-9.e+]+)</text>',
                                          chart)]
    assert ticks and min(ticks) == 0.0
    lines = svg.line_chart([{"label": "a", "ys": [0.1, 0.2], "err": [0.5, 0.1],
                             "color": "#000"}], ["1", "2"], "t", "accuracy")
    assert "-0." not in "".join(re.findall(r'text-anchor="end">([^<]+)</text>', lines))


def test_one_run_and_one_scenario_are_singular(tmp_path):
    runs = tmp_path / "r"
    write_run(runs, "only", "naive", 0, matrix(0.5, np.random.default_rng(0)))
    tables = compare.aggregate(compare.load_runs([runs])[0])
    page = report.render(tables, [], "t", [str(runs)])
    assert "1 complete run ·" in page and "1 scenario ·" in page and "1 run<" in page
    assert "complete runs" not in page and "run(s)" not in page and "scenario(s)" not in page


def test_forgetting_per_task_both_directions():
    m = np.array([[[0.9, 0.1, 0.0], [0.5, 0.8, 0.1], [0.3, 0.6, 0.9]]])
    assert report.forgetting_per_task(m, True)[0].tolist() == pytest.approx([0.6, 0.2])
    ppl = np.array([[[10.0, 90.0, 90.0], [30.0, 12.0, 90.0], [40.0, 20.0, 11.0]]])
    assert report.forgetting_per_task(ppl, False)[0].tolist() == pytest.approx([30.0, 8.0])


def test_wandb_offline_explains_and_succeeds(tmp_path, monkeypatch, capsys):
    runs = write_strategy_sweep(tmp_path / "sweep", seeds=(0, 1))
    offline = sorted(runs.glob("*-s*"))
    for d in offline:
        (d / "wandb" / "offline-run-1").mkdir(parents=True)
    monkeypatch.setenv("WANDB_MODE", "offline")
    assert report.main([str(runs), "-o", str(tmp_path / "r.html"), "--wandb"]) == 0
    err = capsys.readouterr().err
    # every run's own sync command, with its real path; nothing elided with "..."
    for d in offline:
        assert f"  wandb sync {d / 'wandb' / 'offline-run-1'}\n" in err
    assert "..." not in err and "--wandb" in err


def test_wandb_online_logs_tables(tmp_path, monkeypatch):
    logged, fake = {}, types.ModuleType("wandb")

    class Run:
        url = "https://wandb.example/run"

        def log(self, data):
            logged.update(data)

        def finish(self):
            logged["finished"] = True

    fake.init = lambda **kw: logged.setdefault("init", kw) and Run()
    fake.Table = lambda columns, data: {"columns": columns, "data": data}
    monkeypatch.setitem(sys.modules, "wandb", fake)
    monkeypatch.setattr(report_wandb, "wandb_online", lambda: True)
    runs = write_strategy_sweep(tmp_path / "sweep")
    assert report.main([str(runs), "-o", str(tmp_path / "r.html"), "--wandb"]) == 0
    table = logged["split-digits/comparison"]
    assert table["columns"][:2] == ["strategy", "n"] and len(table["data"]) == 4
    assert "split-digits/matrix/replay (mem_size=200)" in logged and logged["finished"]
    assert logged["init"]["project"] == "retain" and logged["init"]["job_type"] == "report"


def chromium() -> str | None:
    for name in (os.environ.get("RETAIN_CHROMIUM"), "chromium", "chromium-browser",
                 "google-chrome"):
        if name and shutil.which(name):
            return shutil.which(name)
    return None


@pytest.mark.skipif(chromium() is None, reason="Chromium not installed: apt-get install -y "
                                               "chromium (or set RETAIN_CHROMIUM)")
def test_report_renders_in_headless_chromium(report_file, tmp_path):
    def browse(*args: str) -> subprocess.CompletedProcess:
        profile = tmp_path / f"profile-{len(args)}"
        return subprocess.run([chromium(), *CHROMIUM_FLAGS, f"--user-data-dir={profile}",
                               *args, report_file.as_uri()],
                              capture_output=True, text=True, timeout=120)

    dom = browse("--dump-dom")
    assert dom.returncode == 0, dom.stderr[-2000:]
    console = [line for line in dom.stderr.splitlines() if ":CONSOLE" in line]
    assert console == [], console  # no errors, no CSP violations, nothing at all
    html = dom.stdout
    assert '<table class="comparison">' in html and "<script" not in html.lower()
    assert html.count("<svg") >= 12 and "<circle" in html and "<rect" in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    shot = tmp_path / "report.png"
    done = browse("--window-size=1400,2600", f"--screenshot={shot}")
    assert done.returncode == 0 and shot.is_file() and shot.stat().st_size > 20_000
    print(json.dumps({"screenshot": str(shot)}))
