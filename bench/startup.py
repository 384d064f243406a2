"""Start-up: how long until retain answers, and until a run takes its first training step.

``retain --help`` and ``retain list`` import neither torch, Lightning, Avalanche nor W&B
(target: under 1 s); the commands and the bare imports are timed in round-robin, each a
whole process, so an import row includes the interpreter's exit (about 0.8 s once torch and
Lightning are loaded, measured 2026-11-22). ``retain run`` imports torch (and Lightning only
for the Trainer engine); the time to the task loop is measured from process start to its
first "task 1/N" line (imports, config, scenario and model build), and the time to the first
training step until that step's loss terms reach metrics.jsonl. The command imports
torch._dynamo (~1.4 s), which the first torch optimizer would import, with its other
imports, before the task loop. The runs are ``logger=none eval_init=false
trainer.max_steps=1``: without the W&B start and the untrained model's evaluation that the
default job also does before its first step. The run rows are the median of 3 round-robin
runs: a cold preparation cache is filled by the first, so the median is a warm-cache figure.

    python -m bench.startup
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from bench.common import print_table


def timed(commands: dict[str, list[str]], repeats: int) -> dict[str, float]:
    """Median seconds of each command, run in round-robin so a slow spell hits all alike."""
    times: dict[str, list[float]] = {name: [] for name in commands}
    for _ in range(repeats):
        for name, cmd in commands.items():
            start = time.perf_counter()
            subprocess.run(cmd, check=True, capture_output=True)
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def first_step_seconds(extra: list[str]) -> tuple[float, float, float]:
    """(seconds to the 'task 1/' line, to the first training step, for the whole run).

    The first step is seen from outside: the run writes its loss terms to metrics.jsonl on
    its first step (a logging step), which this polls every few milliseconds.
    """
    cmd = [sys.executable, "-m", "harness", "run", "logger=none", "eval_init=false",
           "trainer.max_steps=1", "name=startup", *extra]
    marks: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        metrics = Path(tmp) / "runs" / "startup" / "metrics.jsonl"
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=tmp, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                text=True)

        def read_stderr() -> None:
            for line in proc.stderr:
                if "task" not in marks and line.startswith("task 1/"):
                    marks["task"] = time.perf_counter() - start

        reader = threading.Thread(target=read_stderr, daemon=True)
        reader.start()
        while proc.poll() is None and "step" not in marks:
            if metrics.is_file() and "loss/total" in metrics.read_text():
                marks["step"] = time.perf_counter() - start
            else:
                time.sleep(0.005)
        proc.wait()
        reader.join()
        total = time.perf_counter() - start
    return marks.get("task", float("nan")), marks.get("step", float("nan")), total


def main(argv=None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=5)
    args = p.parse_args(argv)
    retain, py = [sys.executable, "-m", "harness"], [sys.executable, "-c"]
    medians = timed({
        "python -c pass (interpreter alone)": [*py, "pass"],
        "retain --help (target < 1 s)": [*retain, "--help"],
        "retain list (target < 1 s)": [*retain, "list"],
        "import torch": [*py, "import torch"],
        "import lightning": [*py, "import lightning"],
        "import avalanche": [*py, "import avalanche"],
        "import harness.experiment.run (what retain run imports)":
            [*py, "import harness.experiment.run"],
    }, args.repeats)
    rows = [{"figure": name, "seconds": f"{s:.3f}"} for name, s in medians.items()]
    jobs = {"split-digits + mlp": ["scenario.name=split-digits", "model.name=mlp"],
            "default text-domains + gpt": []}
    runs = {label: [] for label in jobs}
    for _ in range(3):  # round-robin; the median is of warm-cache runs
        for label, extra in jobs.items():
            runs[label].append(first_step_seconds(extra))
    for label, times in runs.items():
        for i, what in enumerate(("to the task loop", "to the first training step",
                                  "1 step per task, whole")):
            rows.append({"figure": f"retain run, {what} ({label})",
                         "seconds": f"{statistics.median(t[i] for t in times):.2f}"})
    print_table("Start-up (median of repeats; retain run rows: median of 3)", rows)
    return rows


if __name__ == "__main__":
    main()
