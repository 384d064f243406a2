"""Sweeps: W&B expansion semantics, override formatting, and the local runner (with a fake
``retain run`` so failure, resume and timeout are tested in well under a second each)."""

from __future__ import annotations

import json
import sys
import textwrap
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from harness.errors import UserError
from harness.sweeps import runner as sweep_mod
from harness.sweeps.grid import expand, format_value, load_sweep, parse_param, plan

FAKE_RUN = textwrap.dedent('''
    """Stands in for `retain run`: mode=fail|flaky|hang|ok decides what it does."""
    import json, os, sys, time
    args = dict(a.removeprefix("--").split("=", 1) for a in sys.argv[1:] if "=" in a)
    run_dir = os.path.join(args["out_dir"], args["name"])
    os.makedirs(run_dir, exist_ok=True)
    with open(os.path.join(args["out_dir"], "calls.log"), "a") as f:
        f.write(args["name"] + "\\n")
    mode = args.get("mode", "ok")
    marker = os.path.join(run_dir, "tried")
    if mode == "fail" or (mode == "flaky" and not os.path.exists(marker)):
        open(marker, "w").close()
        json.dump({"status": "failed"}, open(os.path.join(run_dir, "status.json"), "w"))
        print("Traceback (most recent call last):", file=sys.stderr)
        print("RuntimeError: deliberate failure", file=sys.stderr)
        sys.exit(3)
    if mode == "hang":
        time.sleep(60)
    json.dump({"status": "complete"}, open(os.path.join(run_dir, "status.json"), "w"))
    from harness.experiment.records import Results, RunSummary  # what retain run writes
    results = Results(
        name=args["name"], run_dir=run_dir, config_hash="fake", config={}, model="mlp",
        strategy="naive", scenario="fake", seed=int(args.get("seed", 0)), task_names=["t"],
        setting="class-il", task="classification", metric="accuracy", higher_is_better=True,
        matrices={"accuracy": [[1.0]]}, baseline=None,
        summary=RunSummary({"accuracy/avg": 1.0}, 0.0, 0.0, 0.0, 0.0, 0, 0), per_task=[{}],
        resumes=[], env={"argv": sys.argv[1:]})
    json.dump(results.to_dict(), open(os.path.join(run_dir, "results.json"), "w"))
''')


def write(path: Path, text: str) -> Path:
    path.write_text(textwrap.dedent(text))
    return path


@pytest.fixture
def fake_run(tmp_path, monkeypatch):
    script = write(tmp_path / "fake_run.py", FAKE_RUN)
    monkeypatch.setattr(sweep_mod, "RUN_COMMAND", [sys.executable, str(script)])
    return script


def calls(out: Path) -> list[str]:
    return (out / "calls.log").read_text().split() if (out / "calls.log").exists() else []


# ------------------------------------------------------------------------- W&B semantics

def test_grid_is_product_in_sorted_name_order_like_wandb(tmp_path):
    f = write(tmp_path / "s.yaml", """
        method: grid
        parameters:
          zeta: {values: [a, b]}
          alpha: {values: [1, 2, 3]}
          lr: {value: 0.1}
    """)
    runs = expand(load_sweep(f))
    # W&B's HyperParameterSet sorts names: alpha, lr, zeta; the last varies fastest.
    assert runs == [{"alpha": a, "lr": 0.1, "zeta": z} for a in (1, 2, 3) for z in ("a", "b")]


def test_grid_int_uniform_q_uniform_duplicates_and_run_cap(tmp_path):
    f = write(tmp_path / "s.yaml", """
        method: grid
        run_cap: 5
        parameters:
          k: {min: 1, max: 3}
          q: {distribution: q_uniform, min: 0, max: 1, q: 0.5}
          v: {values: [x, x]}
    """)
    sweep = load_sweep(f)
    assert [p.kind for p in sweep.params] == ["int_uniform", "q_uniform", "categorical"]
    full = expand(sweep, count=100)
    # int_uniform includes max; q_uniform is numpy.arange (max excluded); duplicates dropped.
    assert full == [{"k": k, "q": q, "v": "x"} for k in (1, 2, 3) for q in (0.0, 0.5)]
    assert expand(sweep) == full[:5]


@pytest.mark.parametrize("spec", [{"min": 0.1, "max": 1.0},
                                  {"distribution": "log_uniform_values", "min": 1e-4, "max": 1},
                                  {"values": [1, 2], "probabilities": [0.5, 0.5]}])
def test_grid_rejects_distributions_like_wandb(tmp_path, spec):
    f = tmp_path / "s.yaml"
    f.write_text(json.dumps({"method": "grid", "parameters": {"lr": spec}}))
    with pytest.raises(UserError, match="grid does not allow"):
        expand(load_sweep(f))


def test_random_is_reproducible_with_seed_and_respects_distributions(tmp_path):
    f = write(tmp_path / "s.yaml", """
        method: random
        run_cap: 20
        parameters:
          lr: {distribution: log_uniform_values, min: 0.0001, max: 0.1}
          layers: {min: 1, max: 4}
          opt: {values: [adam, sgd]}
          drop: {distribution: q_uniform, min: 0, max: 1, q: 0.25}
          seed: {value: 7}
    """)
    sweep = load_sweep(f)
    a, b, c = expand(sweep, seed=0), expand(sweep, seed=0), expand(sweep, seed=1)
    assert a == b and a != c and len(a) == 20
    for run in a:
        assert 1e-4 <= run["lr"] <= 0.1 and isinstance(run["lr"], float)
        assert run["layers"] in (1, 2, 3, 4) and isinstance(run["layers"], int)
        assert run["opt"] in ("adam", "sgd") and run["seed"] == 7
        assert run["drop"] in (0.0, 0.25, 0.5, 0.75, 1.0)
    assert len(expand(sweep, seed=0, count=3)) == 3


def test_random_needs_a_cap_and_bad_files_are_user_errors(tmp_path):
    f = write(tmp_path / "s.yaml", "method: random\nparameters: {lr: {min: 0.1, max: 1.0}}\n")
    with pytest.raises(UserError, match="run_cap"):
        expand(load_sweep(f))
    for text, match in [("method: bayes\nparameters: {a: {value: 1}}", "bayes"),
                        ("method: grid\nparamters: {a: {value: 1}}", "did you mean"),
                        ("method: grid\nparameters: {a: {min: 2, max: 1}}", "not less than"),
                        ("method: grid\nparameters: {a: {parameters: {b: {value: 1}}}}",
                         "dotted name")]:
        f.write_text(text)
        with pytest.raises(UserError, match=match):
            load_sweep(f)
    with pytest.raises(UserError, match="needs"):
        parse_param("x", {"distribution": "uniform", "min": 1})


@pytest.mark.parametrize("value", [0.001, 1e-05, 3, True, None, "adamw", "a b", "true", "1.5",
                                   "x:y", ["replay", "distill"],
                                   {"name": ["der"], "der": {"mem_size": 100}}])
def test_override_values_round_trip_through_omegaconf(value):
    parsed = OmegaConf.to_container(OmegaConf.from_dotlist([f"k={format_value(value)}"]))
    assert parsed["k"] == value


def test_command_items_become_experiment_and_fixed_overrides(tmp_path):
    exp = write(tmp_path / "exp.yaml", "seed: 3\n")
    f = tmp_path / "s.yaml"
    f.write_text(json.dumps({"method": "grid", "parameters": {"seed": {"values": [0, 1]}},
                             "command": ["${env}", "retain", "run", str(exp),
                                         "--trainer.max_epochs=1", "${args}"]}))
    sweep = load_sweep(f)
    assert sweep.experiment == exp
    runs = plan(sweep, extra=["logger=none"])
    assert runs[0].overrides == ["trainer.max_epochs=1", "seed=0", "logger=none"]
    assert runs[0].name.startswith("s0-") and runs[0].name != runs[1].name
    # the name is stable and depends on the experiment file's content
    assert plan(sweep, extra=["logger=none"])[0].name == runs[0].name
    exp.write_text("seed: 4\n")
    assert plan(load_sweep(f), extra=["logger=none"])[0].name != runs[0].name


def test_shipped_sweep_files_load_and_expand():
    root = Path(__file__).resolve().parents[1] / "configs" / "sweeps"
    strategies = plan(load_sweep(root / "strategies.yaml"))
    assert len(strategies) == 8 * 3
    assert {r.params["strategy"] for r in strategies} >= {"naive", "replay", "ewc", "joint"}
    sizes = plan(load_sweep(root / "replay_size.yaml"))
    assert len(sizes) == 8 * 3 and len({r.name for r in sizes}) == 24


# ---------------------------------------------------------------------------- the runner

def run_sweep(tmp_path, body: str, *argv: str) -> tuple[int, Path, dict]:
    f = write(tmp_path / "s.yaml", body)
    out = tmp_path / "out"
    code = sweep_mod.main([str(f), "--out", str(out), "--workers", "2", *argv])
    return code, out, json.loads((out / "sweep.json").read_text())


GRID = """
    method: grid
    name: t
    parameters:
      mode: {values: [ok, fail, flaky]}
      seed: {values: [0, 1]}
"""


def test_failing_run_does_not_stop_the_sweep(tmp_path, fake_run, capsys):
    code, out, summary = run_sweep(tmp_path, GRID)
    assert code == 1
    by_status = {r["name"]: r["status"] for r in summary["runs"]}
    assert sum(s == "complete" for s in by_status.values()) == 2
    assert sum(s == "failed" for s in by_status.values()) == 4
    failed = next(r for r in summary["runs"] if r["params"]["mode"] == "fail")
    assert failed["returncode"] == 3 and "RuntimeError: deliberate failure" in failed["error"]
    assert summary["status"] == "failed" and summary["counts"]["failed"] == 4
    err = capsys.readouterr().err
    assert "[6/6]" in err and "deliberate failure" in err and "ETA" in err


def test_rerun_skips_complete_and_retries_failed(tmp_path, fake_run):
    run_sweep(tmp_path, GRID)
    first = calls(tmp_path / "out")
    assert len(first) == 6
    code, out, summary = run_sweep(tmp_path, GRID)
    retried = calls(out)[6:]
    # ok runs are skipped; fail and flaky runs are retried, and flaky ones now succeed
    assert sorted(retried) == sorted(r["name"] for r in summary["runs"]
                                     if r["params"]["mode"] != "ok")
    assert {r["name"] for r in summary["runs"] if r["skipped"]} == {
        r["name"] for r in summary["runs"] if r["params"]["mode"] == "ok"}
    assert summary["counts"]["complete"] == 4 and code == 1


def test_dry_run_and_timeout(tmp_path, fake_run, capsys):
    f = write(tmp_path / "s.yaml", "method: grid\nparameters: {mode: {values: [ok, hang]}}\n")
    assert sweep_mod.main([str(f), "--out", str(tmp_path / "out"), "--dry-run"]) == 0
    assert "run" in capsys.readouterr().out and not (tmp_path / "out").exists()
    code, _, summary = run_sweep(tmp_path, f.read_text(), "--timeout", "2")
    hung = next(r for r in summary["runs"] if r["params"]["mode"] == "hang")
    assert code == 1 and hung["status"] == "failed" and "--timeout" in hung["error"]


def test_run_gets_overrides_out_dir_and_name(tmp_path, fake_run):
    code, out, summary = run_sweep(tmp_path, "method: grid\nparameters: {seed: {value: 5}}\n",
                                   "trainer.max_epochs=1")
    name = summary["runs"][0]["name"]
    argv = json.loads((out / name / "results.json").read_text())["env"]["argv"]
    assert code == 0 and argv == ["seed=5", "trainer.max_epochs=1", f"out_dir={out}",
                                  f"name={name}", "wandb.sweep='s'"]  # the sweep's W&B identity


@pytest.mark.slow
def test_end_to_end_two_real_runs_on_split_digits(tmp_path):
    """Two real `retain run`s (naive and joint on split-digits, one epoch) through the sweep."""
    f = write(tmp_path / "s.yaml", """
        method: grid
        parameters:
          strategy: {values: [naive, joint]}
          seed: {value: 0}
    """)
    out = tmp_path / "out"
    tiny = ["scenario.name=split-digits", "model.name=mlp", "trainer.max_epochs=1",
            "logger=none", "trainer.progress=false"]
    code = sweep_mod.main([str(f), "--out", str(out), "--workers", "2", *tiny])
    summary = json.loads((out / "sweep.json").read_text())
    assert code == 0, [r["error"] for r in summary["runs"]]
    results = [json.loads((out / r["name"] / "results.json").read_text()) for r in summary["runs"]]
    assert sorted(r["strategy"] for r in results) == ["joint", "naive"]
    assert all(r["scenario"] == "split-digits" and "accuracy/avg" in r["summary"]
               for r in results)
    assert sweep_mod.main([str(f), "--out", str(out), *tiny]) == 0  # everything skipped


def test_wandb_agent_arguments_resolve_to_the_same_configs():
    """What a W&B agent passes (its own ${args} formatting) must load in retain's config
    exactly like the local runner's key=value overrides."""
    from wandb.sdk.launch.sweeps.utils import create_sweep_command_args

    from harness import config

    root = Path(__file__).resolve().parents[1] / "configs" / "sweeps"
    for name in ("strategies", "replay_size"):
        for spec in plan(load_sweep(root / f"{name}.yaml"))[::5]:
            agent = create_sweep_command_args(
                {"args": {k: {"value": v} for k, v in spec.params.items()}})["args"]
            assert all(a.startswith("--") for a in agent)
            assert config.to_dict(config.load(None, agent)) == config.to_dict(
                config.load(None, spec.overrides))


def test_sigterm_stops_children_and_records_interrupted(tmp_path, fake_run):
    """A scheduler's SIGTERM (or Ctrl-C) must not leave runs behind or a stale sweep.json."""
    import signal
    import subprocess
    import time

    f = write(tmp_path / "s.yaml", "method: grid\nparameters: {mode: {values: [hang]},"
                                   " seed: {values: [0, 1, 2]}}\n")
    out = tmp_path / "out"
    code = ("import sys; from harness.sweeps import runner as sweep; "
            f"sweep.RUN_COMMAND = [sys.executable, {str(fake_run)!r}]; "
            "sys.exit(sweep.main(sys.argv[1:]))")
    proc = subprocess.Popen([sys.executable, "-c", code, str(f), "--out", str(out),
                             "--workers", "2"], cwd=Path(__file__).resolve().parents[1])
    deadline = time.time() + 20
    while len(calls(out)) < 2 and time.time() < deadline:
        time.sleep(0.1)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 143  # 128 + SIGTERM, as `retain run` exits
    summary = json.loads((out / "sweep.json").read_text())
    assert summary["status"] == "interrupted"
    assert summary["counts"]["interrupted"] == 2 and summary["counts"]["pending"] == 1
    time.sleep(0.5)
    assert len(calls(out)) == 2  # the pending run was never started
