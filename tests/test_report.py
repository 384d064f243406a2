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

from harness.analysis import report

XSS = "<script>alert(1)</script>"
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                  "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--hide-scrollbars",
                  "--enable-logging=stderr", "--v=0", "--log-level=0"]


@pytest.fixture
def report_file(tmp_path) -> Path:
    runs = write_strategy_sweep(tmp_path / "sweep")
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
    for heading in ("Score over the stream", "Score matrices", "Forgetting per task",
                    "Score versus cost", "Configurations"):
        assert heading in page
    assert not [p for p in report_file.parent.iterdir() if p.name.endswith(".tmp")]


def test_forgetting_per_task_both_directions():
    m = np.array([[[0.9, 0.1, 0.0], [0.5, 0.8, 0.1], [0.3, 0.6, 0.9]]])
    assert report.forgetting_per_task(m, True)[0].tolist() == pytest.approx([0.6, 0.2])
    ppl = np.array([[[10.0, 90.0, 90.0], [30.0, 12.0, 90.0], [40.0, 20.0, 11.0]]])
    assert report.forgetting_per_task(ppl, False)[0].tolist() == pytest.approx([30.0, 8.0])


def test_wandb_offline_explains_and_succeeds(tmp_path, monkeypatch, capsys):
    runs = write_strategy_sweep(tmp_path / "sweep", seeds=(0,))
    (runs / "naive-s0" / "wandb" / "offline-run-1").mkdir(parents=True)
    monkeypatch.setenv("WANDB_MODE", "offline")
    assert report.main([str(runs), "-o", str(tmp_path / "r.html"), "--wandb"]) == 0
    err = capsys.readouterr().err
    assert "wandb sync" in err and "offline-run-1" in err and "--wandb" in err


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
    monkeypatch.setattr(report, "wandb_online", lambda: True)
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
