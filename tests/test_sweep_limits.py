"""Sweep limits: grids are expanded lazily and refused past --max-runs, the command line's
numbers are checked, --dry-run validates what the real sweep would run, and a stopped sweep
exits like ``retain run`` (130 for Ctrl-C, 143 for SIGTERM)."""

from __future__ import annotations

import contextlib
import io
import itertools
import json
import math
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from harness.cli import main
from harness.errors import UserError
from harness.sweeps import runner as sweep_mod
from harness.sweeps.grid import Param, expand, grid, load_sweep, parse_param

ROOT = Path(__file__).resolve().parents[1]
HUGE = """
    method: grid
    parameters:
      seed: {min: 0, max: 99999}
      trainer.max_epochs: {min: 1, max: 100000}
"""  # 10^10 runs


def write(path: Path, text: str) -> Path:
    path.write_text(textwrap.dedent(text))
    return path


def retain(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(argv))
    return code, out.getvalue(), err.getvalue()


def one_error_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("retain: error: "), err
    return lines[0]


# ---------------------------------------------------------------------- the command line

@pytest.mark.parametrize("option, fragment", [
    (["--count", "-1"], "--count must be an integer above 0, not -1"),  # printed "0 runs"
    (["--count", "0"], "--count must be an integer above 0"),
    (["--timeout", "-5"], "--timeout must be a number of seconds above 0"),  # failed every run
    (["--timeout", "0"], "--timeout must be"),
    (["--timeout", "nan"], "--timeout must be"),
    (["--timeout", "inf"], "--timeout must be"),
    (["--workers", "0"], "--workers must be an integer above 0"),
    (["--max-runs", "0"], "--max-runs must be"),
    (["--seed", "-1"], "--seed must be 0 or more"),
    (["--count", "abc"], "invalid int value: 'abc'"),
])
def test_bad_numbers_on_the_command_line_are_one_line_exit_2(tmp_path, option, fragment):
    f = write(tmp_path / "s.yaml", "method: grid\nparameters: {seed: {values: [0, 1]}}\n")
    out = tmp_path / "out"
    code, _, err = retain("sweep", str(f), "--out", str(out), "--run-command", "true", *option)
    assert code == 2 and fragment in one_error_line(err)
    assert not out.exists()


# ------------------------------------------------------------------------- huge grids

def test_a_huge_grid_is_refused_before_it_is_built(tmp_path):
    """The 10^10-point grid used to hang building its list; now its size is computed."""
    f = write(tmp_path / "s.yaml", HUGE)
    proc = subprocess.run([sys.executable, "-m", "harness", "sweep", str(f), "--dry-run"],
                          capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    line = one_error_line(proc.stderr)
    assert "the grid has 10,000,000,000 runs (100,000 x 100,000)" in line
    assert "more than --max-runs 100,000" in line and "--count N" in line


def test_the_first_runs_of_a_huge_grid_are_planned_lazily(tmp_path):
    """--count takes the grid's first points without building it (or its int_uniform axes)."""
    f = write(tmp_path / "s.yaml", HUGE)
    proc = subprocess.run([sys.executable, "-m", "harness", "sweep", str(f), "--dry-run",
                           "--count", "3", "--out", str(tmp_path / "o")],
                          capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    planned = [line.split()[-2:] for line in proc.stdout.splitlines()[1:-1]]
    assert planned == [["seed=0", "trainer.max_epochs=1"], ["seed=0", "trainer.max_epochs=2"],
                       ["seed=0", "trainer.max_epochs=3"]]
    assert proc.stdout.splitlines()[-1] == "3 runs"


def test_max_runs_is_the_limit_and_can_be_raised(tmp_path):
    f = write(tmp_path / "s.yaml", "method: grid\nparameters: {seed: {min: 0, max: 9}}\n")
    sweep = load_sweep(f)
    with pytest.raises(UserError, match="the grid has 10 runs .*more than --max-runs 5"):
        expand(sweep, max_runs=5)
    assert len(expand(sweep, max_runs=10)) == 10 and len(expand(sweep, count=5, max_runs=5)) == 5
    random = write(tmp_path / "r.yaml", "method: random\nparameters: {lr: {min: 0.1, max: 1.0}}")
    with pytest.raises(UserError, match="1,000 random runs, more than --max-runs 999"):
        expand(load_sweep(random), count=1000, max_runs=999)


def reference_axes(params: list[Param]) -> list[list]:
    """Each parameter's values, as the eager expansion listed them."""
    import numpy as np

    axes = []
    for p in params:
        s = p.spec
        axes.append([s["value"]] if p.kind == "constant" else list(s["values"])
                    if p.kind == "categorical" else list(range(s["min"], s["max"] + 1))
                    if p.kind == "int_uniform" else np.arange(s["min"], s["max"], s["q"]).tolist())
    return axes


def reference_grid(params: list[Param]) -> list[dict]:
    """The eager expansion this module used to do: itertools.product, then de-duplication."""
    runs, seen = [], set()
    for combo in itertools.product(*reference_axes(params)):
        key = json.dumps(combo, sort_keys=True, default=str)
        if key not in seen:
            seen.add(key)
            runs.append({p.name: v for p, v in zip(params, combo)})
    return runs


scalars = st.one_of(st.integers(-3, 3), st.sampled_from(["a", "b", True, None, 1.0, 0.5]),
                    st.lists(st.integers(0, 2), max_size=2))
param_specs = st.one_of(
    st.builds(lambda v: {"value": v}, scalars),
    st.builds(lambda vs: {"values": vs}, st.lists(scalars, min_size=1, max_size=4)),
    st.builds(lambda lo, n: {"min": lo, "max": lo + n}, st.integers(-5, 5), st.integers(1, 4)),
    st.builds(lambda lo, n, q: {"distribution": "q_uniform", "min": lo, "max": lo + n, "q": q},
              st.sampled_from([0, 0.1, -1.5, 3]), st.sampled_from([0.5, 1, 2.25, 3]),
              st.sampled_from([0.1, 0.25, 0.7, 1.0, 1])),
)


@settings(max_examples=200, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.lists(param_specs, min_size=1, max_size=4), st.one_of(st.none(), st.integers(1, 40)))
def test_the_lazy_grid_is_the_eager_one_point_for_point(specs, cap):
    params = [parse_param(f"p{i}", spec) for i, spec in enumerate(specs)]
    # a grid past --max-runs is refused (test_max_runs_is_the_limit_and_can_be_raised)
    assume(math.prod(len(axis) for axis in reference_axes(params)) <= 20_000)
    expected = reference_grid(params)
    got = list(grid(params, cap))
    assert got == (expected if cap is None else expected[:cap])
    assert [json.dumps(p, sort_keys=True) for p in got] == [
        json.dumps(p, sort_keys=True) for p in (expected if cap is None else expected[:cap])]


def test_int_uniform_needs_integers(tmp_path):
    f = write(tmp_path / "s.yaml", "method: grid\nparameters:\n  seed: {distribution: "
                                   "int_uniform, min: 0.5, max: 3}\n")
    code, _, err = retain("sweep", str(f), "--dry-run")
    assert code == 2 and "must be integers" in one_error_line(err)


# ------------------------------------------------------------- --dry-run validates too

INVALID = """
    method: grid
    parameters:
      trainer.batch_size: {values: [8, 0]}
"""


def test_dry_run_refuses_what_the_real_sweep_refuses(tmp_path):
    f = write(tmp_path / "s.yaml", INVALID)
    out = tmp_path / "out"
    base = ["sweep", str(f), "--out", str(out), "scenario.name=split-digits", "model.name=mlp"]
    code, stdout, err = retain(*base, "--dry-run")
    assert code == 2
    assert "invalid value 0 for 'trainer.batch_size'" in one_error_line(err)
    assert "1 of 2 runs are invalid" in err
    actions = [line.split()[0] for line in stdout.splitlines()[1:-1]]
    assert actions == ["run", "invalid"] and not out.exists()
    code, _, err = retain(*base, "--workers", "1")  # the real sweep: refused before any run
    assert code == 2 and "invalid value 0 for 'trainer.batch_size'" in one_error_line(err)
    assert not (out / "sweep.json").exists()


# ------------------------------------------------------------------- stopping a sweep

def start_hanging_sweep(tmp_path: Path) -> tuple[subprocess.Popen, Path]:
    script = write(tmp_path / "hang.py", """
        import os, sys, time
        args = dict(a.split("=", 1) for a in sys.argv[1:] if "=" in a)
        os.makedirs(os.path.join(args["out_dir"], args["name"]), exist_ok=True)
        open(os.path.join(args["out_dir"], "started-" + args["name"]), "w").close()
        time.sleep(60)
    """)
    f = write(tmp_path / "s.yaml", "method: grid\nparameters: {seed: {values: [0, 1, 2]}}\n")
    out = tmp_path / "out"
    # SIGINT as a terminal sends it, also where this test's process ignores it
    code = ("import signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); "
            "from harness.sweeps import runner as sweep; "
            f"sweep.RUN_COMMAND = [sys.executable, {str(script)!r}]; "
            "sys.exit(sweep.main(sys.argv[1:]))")
    proc = subprocess.Popen([sys.executable, "-c", code, str(f), "--out", str(out),
                             "--workers", "1"], cwd=ROOT)
    deadline = time.time() + 60
    while not list(out.glob("started-*")) and time.time() < deadline:
        time.sleep(0.1)
    return proc, out


@pytest.mark.parametrize("signum, code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_stopped_sweep_exits_like_retain_run(tmp_path, signum, code):
    proc, out = start_hanging_sweep(tmp_path)
    proc.send_signal(signum)
    assert proc.wait(timeout=30) == code
    summary = json.loads((out / "sweep.json").read_text())
    assert summary["status"] == "interrupted" and summary["counts"]["interrupted"] == 1


def test_runs_import_this_checkout_from_any_folder():
    """A run's PYTHONPATH starts with the folder that holds the harness package."""
    first = sweep_mod._child_env(1)["PYTHONPATH"].split(os.pathsep)[0]
    assert (Path(first) / "harness" / "sweeps" / "runner.py").is_file()
