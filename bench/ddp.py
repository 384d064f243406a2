"""Training throughput of ``retain run`` with 1 and N DDP processes, printed as a table.

    python bench/ddp.py                          # CPU (gloo): 1 and 2 processes
    python bench/ddp.py --accelerator gpu --devices 1 2 4   # GPUs (NCCL)
    python bench/ddp.py --workloads digits --epochs 5
    python bench/ddp.py --threads 1              # one torch thread per process (OMP_NUM_THREADS)
    python bench/ddp.py --rows --epochs 5        # final rows of every strategy, 1 vs 2 processes

Each row is one real ``python -m harness run`` (naive strategy, no logger, no initial
evaluation). Throughput is training examples (and, for the text scenario, tokens) per second
of ``fit`` time, summed over tasks 2..n: the first task's fit also starts the other ranks
(imports, process group), a one-off cost shown separately as "start-up s" (first task's fit
time minus the mean of the others). ``trainer.batch_size`` is the global batch, so every row
trains on the same batches; N processes each take batch_size / N of them.

Workloads: ``digits`` (split-digits, MLP 64-256-10, 5 tasks) and ``text`` (the default
text-domains scenario, shrunk: 3 domains x 64k training bytes, the default GPT).

``--rows``: instead of throughput, every strategy's final accuracy row on Split-Digits with
the README's settings (``retain run scenario.name=split-digits model.name=mlp
trainer.max_epochs=E logger=none strategy=S``, default optimizer and batch) on one process and
on N gloo processes, and their largest difference (``docs/distributed.md``).

Threads: by default one process uses every core for its torch ops, while Lightning gives each
of N DDP processes cores / N threads. On a machine shared with other jobs the single process's
threads then contend more; ``--threads 1`` fixes one thread per process for a like-for-like
comparison of the processes alone.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WORKLOADS = {
    "digits": ["scenario.name=split-digits", "model.name=mlp", "trainer.optimizer=sgd",
               "trainer.lr=0.05", "trainer.momentum=0.9"],
    "text": ["scenario.name=text-domains", "scenario.train_tokens=65536",
             "scenario.test_tokens=4096", "scenario.val_tokens=0", "scenario.seq_len=128",
             "model.name=gpt"],
}


def one_run(workload: str, devices: int, args, out: Path) -> dict:
    name = f"{workload}-{devices}"
    cmd = [sys.executable, "-m", "harness", "run", *WORKLOADS[workload],
           f"trainer.max_epochs={args.epochs}", f"trainer.batch_size={args.batch_size}",
           f"trainer.accelerator={args.accelerator}", f"trainer.devices={devices}",
           f"trainer.strategy={'ddp' if devices > 1 else 'auto'}", "eval_init=false",
           "logger=none", "trainer.progress=false", f"out_dir={out / name}"]
    env = dict(os.environ, RETAIN_CACHE=str(args.cache), WANDB_MODE="disabled")
    if args.threads:
        env["OMP_NUM_THREADS"] = str(args.threads)
    started = time.time()
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    wall = time.time() - started
    if proc.returncode != 0:
        raise SystemExit(f"{name} failed:\n{proc.stderr[-3000:]}")
    (run_dir,) = (out / name).iterdir()
    results = json.loads((run_dir / "results.json").read_text())
    tasks = results["per_task"]
    later = tasks[1:] or tasks
    steps = sum(t["steps"] for t in later)
    fit_s = sum(t["train_time_s"] for t in later)
    examples = steps * args.batch_size  # global examples (the last batch of an epoch may be short)
    seq_len = results["config"]["scenario"].get("seq_len") if workload == "text" else None
    mean_later = fit_s / len(later)
    return {"workload": workload, "devices": devices, "examples_s": examples / fit_s,
            "tokens_s": examples * seq_len / fit_s if seq_len else None,
            "steps": steps, "fit_s": fit_s, "startup_s": tasks[0]["train_time_s"] - mean_later,
            "wall_s": wall}


STRATEGIES = ("naive", "replay", "ewc", "si", "distill", "der", "agem", "joint")


def final_row(strategy: str, devices: int, args, out: Path) -> list[float]:
    """The final accuracy row of the README's Split-Digits run of ``strategy``."""
    cmd = [sys.executable, "-m", "harness", "run", "scenario.name=split-digits",
           "model.name=mlp", f"trainer.max_epochs={args.epochs}", "logger=none",
           f"strategy={strategy}", "trainer.progress=false", f"out_dir={out}",
           f"name={strategy}-{devices}"]
    if devices > 1:
        cmd += ["trainer.accelerator=cpu", f"trainer.devices={devices}", "trainer.strategy=ddp"]
    env = dict(os.environ, RETAIN_CACHE=str(args.cache), WANDB_MODE="disabled")
    if args.threads:
        env["OMP_NUM_THREADS"] = str(args.threads)
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{strategy} x{devices} failed:\n{proc.stderr[-3000:]}")
    results = json.loads((out / f"{strategy}-{devices}" / "results.json").read_text())
    return results["matrices"]["accuracy"][-1]


def compare_rows(args) -> int:
    devices = max(args.devices)
    print(f"final accuracy rows, Split-Digits, {args.epochs} epochs/task, 1 vs {devices} CPU "
          f"processes, threads/process {args.threads or 'default'}")
    with tempfile.TemporaryDirectory(prefix="retain-bench-ddp-") as tmp:
        for strategy in args.strategies:
            one = final_row(strategy, 1, args, Path(tmp))
            many = final_row(strategy, devices, args, Path(tmp))
            diff = max(abs(a - b) for a, b in zip(one, many))
            print(f"{strategy:<8} 1: {_fmt(one)}  {devices}: {_fmt(many)}  max diff {diff:.4f}",
                  flush=True)
    return 0


def _fmt(row: list[float]) -> str:
    return "[" + ", ".join(f"{v:.3f}" for v in row) + "]"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--devices", type=int, nargs="+", default=[1, 2])
    p.add_argument("--accelerator", default="cpu", choices=["cpu", "gpu"])
    p.add_argument("--workloads", nargs="+", default=list(WORKLOADS), choices=list(WORKLOADS))
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--threads", type=int, default=0,
                   help="torch threads per process (OMP_NUM_THREADS; 0: the defaults)")
    p.add_argument("--cache", default=os.environ.get("RETAIN_CACHE",
                                                     str(Path.home() / ".cache" / "retain")))
    p.add_argument("--rows", action="store_true",
                   help="final accuracy rows of every strategy, 1 vs N processes")
    p.add_argument("--strategies", nargs="+", default=list(STRATEGIES), choices=STRATEGIES)
    args = p.parse_args(argv)
    if args.rows:
        return compare_rows(args)
    load0 = os.getloadavg()[0]
    rows = []
    with tempfile.TemporaryDirectory(prefix="retain-bench-ddp-") as tmp:
        for workload in args.workloads:
            for devices in args.devices:
                rows.append(one_run(workload, devices, args, Path(tmp)))
                print(f"  done: {workload} x{devices} ({rows[-1]['wall_s']:.0f} s)",
                      file=sys.stderr)
    load1 = os.getloadavg()[0]
    print(f"retain DDP throughput, accelerator={args.accelerator}, global batch "
          f"{args.batch_size}, {args.epochs} epochs/task, {os.cpu_count()} CPUs, threads/process "
          f"{args.threads or 'default'}, "
          f"load average {load0:.1f} -> {load1:.1f}")
    print(f"{'workload':<8} {'procs':>5} {'examples/s':>11} {'tokens/s':>10} {'speed-up':>8} "
          f"{'steps':>6} {'fit s':>7} {'start-up s':>10} {'wall s':>7}")
    base = {}
    for r in rows:
        base.setdefault(r["workload"], r["examples_s"])
        tokens = f"{r['tokens_s']:>10.0f}" if r["tokens_s"] else f"{'-':>10}"
        print(f"{r['workload']:<8} {r['devices']:>5} {r['examples_s']:>11.0f} {tokens} "
              f"{r['examples_s'] / base[r['workload']]:>7.2f}x {r['steps']:>6} "
              f"{r['fit_s']:>7.2f} {r['startup_s']:>10.1f} {r['wall_s']:>7.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
