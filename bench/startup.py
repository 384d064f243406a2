"""Start-up: how long until retain answers, and until a run takes its first training step.

``retain --help`` and ``retain list`` import neither torch, Lightning, Avalanche nor W&B
(target: under 1 s); the commands and the bare imports are timed in round-robin, each a
whole process, so an import row includes the interpreter's exit (about 0.8 s once torch and
Lightning are loaded). ``retain run`` imports torch (and Lightning only for the Trainer
engine); the time to the task loop is measured from process start to its first "task 1/N"
line (imports, config, scenario and model build; the untrained evaluation is skipped), just
before the first experience's set-up and first step. The scenarios' preparation cache is
warm (the runs before fill it).

    python -m bench.startup
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time

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


def first_step_seconds(extra: list[str]) -> tuple[float, float]:
    """(seconds to the first 'task 1/' line, seconds for the whole run)."""
    cmd = [sys.executable, "-m", "harness", "run", "logger=none", "eval_init=false",
           "trainer.max_steps=1", *extra]
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=tmp, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                text=True)
        first = None
        for line in proc.stderr:
            if first is None and line.startswith("task 1/"):
                first = time.perf_counter() - start
        proc.wait()
        return first or float("nan"), time.perf_counter() - start


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
        "import harness.run (what retain run imports)": [*py, "import harness.run"],
    }, args.repeats)
    rows = [{"figure": name, "seconds": f"{s:.3f}"} for name, s in medians.items()]
    jobs = {"split-digits + mlp": ["scenario.name=split-digits", "model.name=mlp"],
            "default text-domains + gpt": []}
    runs = {label: [] for label in jobs}
    for _ in range(3):  # round-robin; the median is of warm-cache runs
        for label, extra in jobs.items():
            runs[label].append(first_step_seconds(extra))
    for label, times in runs.items():
        rows.append({"figure": f"retain run to the task loop ({label})",
                     "seconds": f"{statistics.median(t[0] for t in times):.2f}"})
        rows.append({"figure": f"retain run, 1 step per task, whole ({label})",
                     "seconds": f"{statistics.median(t[1] for t in times):.2f}"})
    print_table("Start-up (median of repeats; retain run rows: median of 3)", rows)
    return rows


if __name__ == "__main__":
    main()
