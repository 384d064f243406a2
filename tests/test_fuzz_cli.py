"""Bad input, property-based: any command line or experiment YAML either is accepted (the run
would start) or ends with exit code 2 and one ``retain: error:`` line; never a traceback, and
never a run directory for an input that is refused.

Most examples run in-process through ``harness.cli.main``, stopped where the run directory
would be created (``RunDir.create``), so the scenario, model and strategies are built and
validate their options too; a few run as real subprocesses.
"""

import contextlib
import io
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from harness.cli import main
from harness.experiment import results

BASE = ["scenario.name=split-digits", "model.name=mlp", "logger=none", "trainer.progress=false"]
KEYS = ["seed", "name", "out_dir", "logger", "eval_init", "trainer.max_epochs",
        "trainer.max_steps", "trainer.batch_size", "trainer.eval_batch_size", "trainer.lr",
        "trainer.optimizer", "trainer.momentum", "trainer.grad_clip", "trainer.precision",
        "trainer.accelerator", "trainer.devices", "trainer.deterministic",
        "trainer.accumulate_grad_batches", "trainer.log_every_n_steps", "wandb.mode",
        "wandb.tags", "checkpoint.every_n_steps", "model", "model.name", "model.hidden",
        "scenario", "scenario.name", "scenario.n_experiences", "strategy", "strategy.name",
        "strategy.replay.mem_size", "strategy.ewc.lam", "strategy.ewc.mode",
        "strategy.distill.temperature", "trainer", "no.such.key", "trainer.nope"]
NASTY = ["", " ", "null", "~", "[", "]", "{", "}", "[1,[2]]", "{a: 1}", "a=b", "=", "'", '"',
         "\\", "${oc.env:HOME}", "${nope}", "${trainer.lr}", "!!python/object/apply:os.system",
         "1e400", "-1", "0", "nan", "inf", "-inf", "true", "replay", "[replay,replay]",
         "mlp", "split-digits", "gpt", "text-domains", "\u00e9\u4e2d", "$(touch pwned)",
         "`touch pwned`", "; touch pwned", "../../etc", "/dev/null/x"]
values = st.one_of(st.sampled_from(NASTY), st.integers(-10**12, 10**12).map(str),
                   st.floats(allow_nan=True, allow_infinity=True).map(repr),
                   st.text(max_size=12), st.lists(st.integers(-3, 300), max_size=3).map(str))
override = st.one_of(
    st.builds(lambda k, v, dash: f"{'--' if dash else ''}{k}={v}",
              st.sampled_from(KEYS), values, st.booleans()),
    st.text(max_size=15),  # anything at all: no '=', spaces, control characters
)


class Accepted(BaseException):
    """The input got as far as creating the run directory: it is valid."""


def _refuse_run_dir(*args, **kwargs):
    raise Accepted


def call(argv: list[str]) -> tuple[int | None, str]:
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            code = main(argv)
        except Accepted:
            code = None
    return code, err.getvalue()


def check_outcome(argv: list[str]) -> None:
    before = set(os.listdir("."))
    code, err = call(argv)
    assert code in (None, 2), (argv, code, err)
    if code == 2:
        lines = [line for line in err.splitlines() if line.strip()]
        assert lines[-1].startswith("retain: error: "), (argv, err)
        assert "Traceback" not in err, (argv, err)
        assert set(os.listdir(".")) - {"cache"} <= before, argv  # no run directory
    assert not Path("pwned").exists()


def _slow_name(overrides: list[str]) -> bool:
    for item in overrides:
        key, _, value = item.removeprefix("--").partition("=")
        if key in ("scenario", "scenario.name") and value.strip() not in (
                "split-digits", "permuted-digits"):
            return value.strip() in ("text-domains", "text-topics", "split-mnist", "mqar",
                                     "passkey", "files", "hf")
        if key in ("model", "model.name") and value.strip() in ("minilm", "smollm2"):
            return True
    return False


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.lists(override, min_size=1, max_size=3))
def test_any_command_line_is_accepted_or_one_line_exit_2(monkeypatch_session, overrides):
    if _slow_name(overrides):
        return
    check_outcome(["run", *BASE, *overrides])


yaml_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-5, 10**6), st.floats(), st.text(max_size=8),
              st.sampled_from(NASTY)),
    lambda inner: st.one_of(st.lists(inner, max_size=3),
                            st.dictionaries(st.sampled_from(KEYS + ["lr", "x"]), inner,
                                            max_size=3)),
    max_leaves=6)
yaml_docs = st.one_of(
    st.dictionaries(st.sampled_from(KEYS), yaml_values, max_size=4).map(
        lambda d: yaml.safe_dump(d, allow_unicode=True)),
    st.text(max_size=60),  # not necessarily YAML at all
    st.sampled_from(["!!python/object/apply:os.system ['touch pwned']\n",
                     "seed: !!python/object/apply:os.system ['touch pwned']\n",
                     "a: &x [*x]\n", "trainer: {lr: 0.1\n", "- 1\n- 2\n", "\x00\x01"]),
)


@settings(max_examples=100, deadline=None, suppress_health_check=list(HealthCheck))
@given(yaml_docs)
def test_any_experiment_file_is_accepted_or_one_line_exit_2(monkeypatch_session, text):
    path = Path("exp.yaml")
    path.write_text(text)
    try:
        if _slow_name([f"scenario={_scenario_of(path)}", f"model={_model_of(path)}"]):
            return
        check_outcome(["run", str(path), *BASE[2:]])
    finally:
        path.unlink(missing_ok=True)


def _scenario_of(path: Path) -> str:
    return _section_name(path, "scenario")


def _model_of(path: Path) -> str:
    return _section_name(path, "model")


def _section_name(path: Path, section: str) -> str:
    try:
        data = yaml.safe_load(path.read_text())
        value = data.get(section) if isinstance(data, dict) else None
        return str(value.get("name") if isinstance(value, dict) else value)
    except Exception:
        return ""


@pytest.fixture
def monkeypatch_session(monkeypatch):
    """Every example stops where the run directory would be created."""
    monkeypatch.setattr(results.RunDir, "create", _refuse_run_dir)
    yield monkeypatch


@pytest.mark.parametrize("args", [
    ["seed=-1", "x.yaml", "y.yaml"],  # refused by the config, before torch is imported
    ["scenario.n_experiences=3"],  # by the scenario's builder
    ["strategy.ewc.mode=sometimes", "strategy=ewc"],  # by the strategy's constructor
])
def test_bad_input_in_a_real_process_is_one_line_and_leaves_nothing(tmp_path, args):
    proc = subprocess.run([sys.executable, "-m", "harness", "run", *BASE, *args],
                          capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith("retain: error: ") and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "runs").exists()
