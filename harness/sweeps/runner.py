"""``retain sweep``: run a W&B-format sweep file locally, in parallel, resumably.

Every run is its own ``retain run`` subprocess, so a crash, an out-of-memory kill or a hang
(``--timeout``) costs one run, never the sweep. Worker *threads* only wait on those processes,
which keeps this module free of torch and lets tests swap the command (``RUN_COMMAND``).

Layout under ``--out`` (default ``runs/sweeps/<sweep name>``)::

    sweep.yaml        copy of the sweep file, for provenance
    sweep.json        live summary, rewritten atomically after every run
    logs/<run>.out    the run's stdout; logs/<run>.err its stderr
    <run>/            the run directory ``retain run`` writes (results.json when complete)

Run names are ``<swept values>-<hash>``; the hash covers the run's overrides and the base
experiment file's text, so re-running the same sweep skips finished runs and retries the rest.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shlex
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path

from harness.errors import UserError
from harness.experiment.records import load_results
from harness.sweeps.grid import MAX_RUNS, RunSpec, Sweep, iter_plan, load_sweep

# argv prefix of one run; the experiment file (if any), the overrides, out_dir= and name= follow.
DEFAULT_RUN_COMMAND = [sys.executable, "-m", "harness", "run"]
RUN_COMMAND = DEFAULT_RUN_COMMAND
ERROR_TAIL_LINES = 20


@dataclass
class Outcome:
    """What happened to one run in this invocation (or before it, for ``skipped``)."""

    status: str  # "complete" | "failed" | "pending" | "running" | "interrupted"
    skipped: bool = False  # already complete before this invocation
    returncode: int | None = None
    duration_s: float | None = None
    error: str | None = None


def main(argv: list[str]) -> int:
    args = _parser().parse_intermixed_args(argv)
    _check_options(args)
    sweep = load_sweep(args.sweep_file)
    out = Path(args.out or Path("runs") / "sweeps" / sweep.name)
    command = shlex.split(args.run_command) if args.run_command else RUN_COMMAND
    # Another command (tests, debugging) takes options retain's config does not know.
    validate = command == DEFAULT_RUN_COMMAND
    runs = iter_plan(sweep, extra=args.overrides, seed=args.seed, count=args.count,
                     max_runs=args.max_runs)
    if args.dry_run:
        return _print_plan(sweep, runs, out, validate)
    runs = list(runs)
    if validate:
        check_configs(sweep, [r for r in runs if run_state(out / r.name) != "complete"])
    runner = SweepRunner(sweep, runs, out, workers=args.workers or default_workers(),
                         command=command, timeout=args.timeout, seed=args.seed)
    return runner.run()


def _check_options(args) -> None:
    """The numbers given on the command line: counts above 0, a timeout finite too."""
    for flag, value in (("--workers", args.workers), ("--count", args.count),
                        ("--max-runs", args.max_runs), ("--timeout", args.timeout)):
        if value is not None and not (0 < value < math.inf):
            unit = "a number of seconds" if flag == "--timeout" else "an integer"
            raise UserError(f"{flag} must be {unit} above 0, not {value:g}")
    if args.seed < 0:  # numpy's generators take none
        raise UserError(f"--seed must be 0 or more, not {args.seed}")


class _Parser(argparse.ArgumentParser):
    """argparse that reports a bad command line as a UserError: one line, exit code 2."""

    def error(self, message: str):
        raise UserError(f"{message} (see retain sweep --help)")


def _parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="retain sweep",
        description="Run a W&B-format sweep file locally: expand the grid (or sample it), run "
                    "every run as a separate `retain run` process in parallel, record failures "
                    "and go on, and skip runs that already completed when run again.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n  retain sweep configs/sweeps/strategies.yaml --dry-run\n"
               "  retain sweep configs/sweeps/strategies.yaml --workers 2 trainer.max_epochs=1\n"
               "  retain sweep configs/sweeps/replay_size.yaml --out runs/sizes --timeout 3600\n"
               "then: retain compare <out>  and  retain report <out> -o report.html")
    p.add_argument("sweep_file", help="sweep YAML (W&B format; `experiment:` names the base "
                                      "experiment file)")
    p.add_argument("overrides", nargs="*", metavar="key=value",
                   help="extra overrides applied to every run (part of the resume hash)")
    p.add_argument("--workers", type=int, default=None,
                   help=f"runs in parallel (default: one per CPU core, here {default_workers()})")
    p.add_argument("--out", default=None,
                   help="sweep directory (default: runs/sweeps/<sweep name>)")
    p.add_argument("--dry-run", action="store_true",
                   help="print the runs and which would be skipped, run nothing")
    p.add_argument("--seed", type=int, default=0,
                   help="seed for method: random sampling (default 0); not the training seed")
    p.add_argument("--count", type=int, default=None,
                   help="number of runs for method: random (overrides run_cap), or the first "
                        "N grid points")
    p.add_argument("--max-runs", type=int, default=MAX_RUNS, metavar="N",
                   help=f"refuse a sweep of more runs than this (default {MAX_RUNS:,}): a grid "
                        "that large is usually a mistake")
    p.add_argument("--timeout", type=float, default=None, metavar="SECONDS",
                   help="kill and record as failed any run taking longer than this")
    p.add_argument("--run-command", default=None, help=argparse.SUPPRESS)  # tests / debugging
    return p


def check_configs(sweep: Sweep, runs: list[RunSpec]) -> None:
    """Resolve every run's config before starting any, so a typo in the sweep file is one
    error now rather than N failed runs later."""
    if not runs:
        return
    from harness import config

    experiment = str(sweep.experiment) if sweep.experiment else None
    for spec in runs:
        try:
            config.load(experiment, spec.overrides)
        except UserError as err:
            raise UserError(f"run {spec.name} ({shlex.join(spec.overrides)}): {err}") from None


def default_workers() -> int:
    """One worker per usable core: runs are small and each gets cores/workers threads."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def run_state(run_dir: Path) -> str:
    """``complete`` when results.json is there and readable: ``retain run`` writes it last,
    atomically, only for a finished run (before status.json, so that one may lag behind).
    A damaged one is ``failed``: retried, its run then says what is wrong with it."""
    if not (run_dir / "results.json").exists():
        return "failed" if run_dir.exists() else "missing"
    try:
        load_results(run_dir / "results.json")
    except UserError:
        return "failed"
    return "complete"


def _print_plan(sweep: Sweep, runs: Iterable[RunSpec], out: Path, validate: bool) -> int:
    """Each run as it is planned, and which would be skipped; with ``validate``, each one that
    would run is checked as the real sweep checks it, and any invalid one makes it exit 2."""
    print(f"sweep {sweep.name} ({sweep.method}) -> {out}", flush=True)
    total, invalid = 0, []
    for spec in runs:
        total += 1
        state = run_state(out / spec.name)
        action = {"complete": "skip (complete)", "failed": "retry"}.get(state, "run")
        if validate and state != "complete":
            try:
                check_configs(sweep, [spec])
            except UserError as err:
                action = "invalid"
                invalid.append(str(err))
        print(f"  {action:<16} {spec.name}  {shlex.join(spec.overrides)}")
    print(f"{total} runs")
    if invalid:
        raise UserError(f"{len(invalid)} of {total} runs are invalid; the first: {invalid[0]}")
    return 0


class SweepRunner:
    """Runs the planned runs on a thread pool of subprocess launchers and keeps ``sweep.json``
    and the progress line current. All shared state is guarded by one lock."""

    def __init__(self, sweep: Sweep, runs: list[RunSpec], out: Path, workers: int,
                 command: list[str], timeout: float | None = None, seed: int = 0):
        self.sweep, self.runs, self.out = sweep, runs, out
        self.workers, self.command, self.timeout, self.seed = workers, command, timeout, seed
        self.outcomes = {r.name: Outcome("pending") for r in runs}
        self.procs: dict[str, subprocess.Popen] = {}
        self.lock = threading.Lock()
        self.stopping = False
        self.signum = signal.SIGINT  # what stopped the sweep, if something does: Ctrl-C
        self.started = time.time()
        self.durations: list[float] = []

    def run(self) -> int:
        (self.out / "logs").mkdir(parents=True, exist_ok=True)
        (self.out / "sweep.yaml").write_text(self.sweep.path.read_text())
        todo = []
        for spec in self.runs:
            if run_state(self.out / spec.name) == "complete":
                self.outcomes[spec.name] = Outcome("complete", skipped=True)
            else:
                todo.append(spec)
        skipped = len(self.runs) - len(todo)
        workers = max(1, min(self.workers, len(todo) or 1))
        _log(f"sweep {self.sweep.name}: {len(self.runs)} runs, {skipped} already complete, "
             f"{len(todo)} to run on {workers} worker(s) -> {self.out}")
        self._write_summary("running")
        _sigterm_as_interrupt(self)
        pool = ThreadPoolExecutor(workers, thread_name_prefix="sweep")
        try:
            futures = {pool.submit(self._launch, spec, workers): spec for spec in todo}
            for future in as_completed(futures):
                self._report(futures[future], future.result())
        except KeyboardInterrupt:
            self._interrupt()
            pool.shutdown(wait=True, cancel_futures=True)
            return 128 + self.signum  # 130 or 143, as `retain run` exits
        pool.shutdown()
        failed = sum(o.status == "failed" for o in self.outcomes.values())
        self._write_summary("failed" if failed else "complete")
        _log(f"sweep {self.sweep.name}: {len(self.runs) - failed} complete, {failed} failed "
             f"in {_duration(time.time() - self.started)}; summary {self.out / 'sweep.json'}")
        return 1 if failed else 0

    def _launch(self, spec: RunSpec, workers: int) -> Outcome:
        """Run one ``retain run`` process to the end; never raises for the run's own failure."""
        with self.lock:
            if self.stopping:
                return Outcome("interrupted")
            self.outcomes[spec.name] = Outcome("running")
            self._write_summary("running")
        argv = [*self.command, *([str(self.sweep.experiment)] if self.sweep.experiment else []),
                *spec.overrides, f"out_dir={self.out}", f"name={spec.name}",
                f"wandb.sweep={_quoted(self.sweep.name)}"]  # W&B group, tag and job type
        err_path = self.out / "logs" / f"{spec.name}.err"
        start = time.time()
        with open(self.out / "logs" / f"{spec.name}.out", "w") as out_f, \
                open(err_path, "w") as err_f:
            err_f.write(f"$ {shlex.join(argv)}\n")
            err_f.flush()
            try:
                proc = subprocess.Popen(argv, stdout=out_f, stderr=err_f, stdin=subprocess.DEVNULL,
                                        env=_child_env(workers))
            except OSError as exc:
                return Outcome("failed", error=f"could not start {argv[0]}: {exc}")
            with self.lock:
                self.procs[spec.name] = proc
            try:
                code = proc.wait(timeout=self.timeout)
                timed_out = False
            except subprocess.TimeoutExpired:
                proc.kill()
                code, timed_out = proc.wait(), True
            with self.lock:
                self.procs.pop(spec.name, None)
        return self._judge(spec, code, timed_out, time.time() - start, err_path)

    def _judge(self, spec: RunSpec, code: int, timed_out: bool, took: float,
               err_path: Path) -> Outcome:
        if self.stopping:
            return Outcome("interrupted", returncode=code, duration_s=took)
        state = run_state(self.out / spec.name)
        if code == 0 and state == "complete":
            return Outcome("complete", returncode=0, duration_s=took)
        if timed_out:
            why = f"killed after --timeout {self.timeout:g} s"
        elif code < 0:
            why = f"killed by signal {-code}"
        elif code == 0:
            why = "exited 0 but wrote no complete results.json"
        else:
            why = f"exit code {code}"
        tail = _tail(err_path, ERROR_TAIL_LINES)
        return Outcome("failed", returncode=code, duration_s=took,
                       error=f"{why}\n{tail}".strip())

    def _report(self, spec: RunSpec, outcome: Outcome) -> None:
        with self.lock:
            self.outcomes[spec.name] = outcome
            if outcome.duration_s is not None:
                self.durations.append(outcome.duration_s)
            line = self._progress_line(spec, outcome)
            self._write_summary("running")
        _log(line)

    def _progress_line(self, spec: RunSpec, outcome: Outcome) -> str:
        counts = self._counts()
        total = len(self.runs)
        done = counts["complete"] + counts["failed"]
        left = total - done
        eta = ""
        if left and self.durations:
            mean = sum(self.durations) / len(self.durations)
            eta = f", ETA {_duration(mean * left / min(self.workers, left))}"
        took = f" ({outcome.duration_s:.1f} s)" if outcome.duration_s is not None else ""
        line = (f"[{done}/{total}] {outcome.status:<8} {spec.name}{took} · "
                f"{counts['complete']} complete, {counts['failed']} failed, {left} left{eta}")
        if outcome.status == "failed" and outcome.error:
            lines = [x for x in outcome.error.splitlines() if x.strip()]
            why = lines[0] + (f": {lines[-1].strip()[:160]}" if len(lines) > 1 else "")
            line += f"\n    {why}\n    log: {self.out / 'logs' / (spec.name + '.err')}"
        return line

    def _interrupt(self) -> None:
        """Ctrl-C: stop the running processes, record them as interrupted, keep the rest."""
        with self.lock:
            self.stopping = True
            procs = list(self.procs.items())
        for _, proc in procs:
            proc.terminate()
        for _, proc in procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
        with self.lock:
            for name, outcome in self.outcomes.items():
                if outcome.status == "running":
                    self.outcomes[name] = Outcome("interrupted")
            self._write_summary("interrupted")
        _log(f"sweep {self.sweep.name}: interrupted; run the same command again to resume")

    def _counts(self) -> dict[str, int]:
        counts = dict.fromkeys(("complete", "failed", "pending", "running", "interrupted"), 0)
        for o in self.outcomes.values():
            counts[o.status] += 1
        return counts

    def _write_summary(self, status: str) -> None:
        """Rewrite sweep.json atomically (temp file + rename): readers never see half a file."""
        summary = {
            "sweep": self.sweep.name, "file": str(self.sweep.path), "method": self.sweep.method,
            "metric": self.sweep.metric,
            "experiment": str(self.sweep.experiment) if self.sweep.experiment else None,
            "seed": self.seed, "command": self.command, "status": status,
            "started_at": _iso(self.started), "updated_at": _iso(time.time()),
            "counts": {"total": len(self.runs), **self._counts()},
            "runs": [{"name": r.name, "key": r.key, "params": r.params, "overrides": r.overrides,
                      "log": f"logs/{r.name}.err", **asdict(self.outcomes[r.name])}
                     for r in self.runs],
        }
        write_json_atomic(self.out / "sweep.json", summary)


def _quoted(value: str) -> str:
    """A YAML single-quoted string: an override value read back as exactly this text."""
    return "'" + value.replace("'", "''") + "'"


def _sigterm_as_interrupt(runner: SweepRunner) -> None:
    """A scheduler's SIGTERM (job time limit, scancel) stops the sweep the way Ctrl-C does:
    children terminated, sweep.json saying which runs were interrupted."""

    def handler(signum, frame):
        runner.signum = signum
        raise KeyboardInterrupt

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, handler)


def write_json_atomic(path: Path, data) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str) + "\n")
    os.replace(tmp, path)


def _child_env(workers: int) -> dict[str, str]:
    """Split the cores between concurrent runs so N torch processes do not oversubscribe."""
    env = dict(os.environ)
    # `python -m harness` must find this very harness even when run from another folder
    root = str(Path(__file__).resolve().parents[2])  # harness/sweeps/runner.py
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [root, env.get("PYTHONPATH")]))
    threads = str(max(1, default_workers() // workers))
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        env.setdefault(var, threads)
    return env


def _tail(path: Path, n: int) -> str:
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return ""
    return "\n".join(lines[-n:])


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, timezone.utc).isoformat(timespec="seconds")


def _log(line: str) -> None:
    print(line, file=sys.stderr, flush=True)
