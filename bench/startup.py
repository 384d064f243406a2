"""Start-up: how long until retain answers, and until a run takes its first training step.

``retain --help`` and ``retain list`` import neither torch, Lightning, Avalanche nor W&B
(target: under 1 s). ``retain run`` must import them; the time to its first training step
is measured from process start to the task loop's first "task 1/N" line (imports, config,
scenario build, model build, untrained evaluation skipped).

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


def timed(cmd: list[str], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        subprocess.run(cmd, check=True, capture_output=True)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


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
    retain = [sys.executable, "-m", "harness"]
    rows = [
        {"figure": "python -c pass (interpreter alone)",
         "seconds": f"{timed([sys.executable, '-c', 'pass'], args.repeats):.3f}"},
        {"figure": "retain --help (target < 1 s)",
         "seconds": f"{timed([*retain, '--help'], args.repeats):.3f}"},
        {"figure": "retain list (target < 1 s)",
         "seconds": f"{timed([*retain, 'list'], args.repeats):.3f}"},
        {"figure": "import torch", "seconds":
         f"{timed([sys.executable, '-c', 'import torch'], args.repeats):.3f}"},
        {"figure": "import lightning", "seconds":
         f"{timed([sys.executable, '-c', 'import lightning'], args.repeats):.3f}"},
        {"figure": "import avalanche", "seconds":
         f"{timed([sys.executable, '-c', 'import avalanche'], args.repeats):.3f}"},
    ]
    for label, extra in (("split-digits + mlp", ["scenario.name=split-digits", "model.name=mlp"]),
                         ("default text-domains + gpt", [])):
        first, total = first_step_seconds(extra)
        rows.append({"figure": f"retain run to first step ({label})", "seconds": f"{first:.2f}"})
        rows.append({"figure": f"retain run, 1 step per task, whole ({label})",
                     "seconds": f"{total:.2f}"})
    print_table("Start-up (median of repeats; first-step rows are single runs, warm cache)",
                rows)
    return rows


if __name__ == "__main__":
    main()
