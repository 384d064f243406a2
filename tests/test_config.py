"""Configuration: precedence, component sections, and one clear error per bad input."""

import subprocess
import sys

import pytest

from harness import config
from harness.errors import UserError

DIGITS = ["scenario.name=split-digits", "model.name=mlp"]


def test_defaults_build_the_default_experiment():
    cfg = config.load()
    assert (cfg.model.name, cfg.scenario.name, config.strategy_names(cfg)) == (
        "gpt", "text-domains", ["naive"])
    assert cfg.trainer.batch_size == 32


def test_precedence_defaults_then_yaml_then_overrides(tmp_path):
    exp = tmp_path / "exp.yaml"
    exp.write_text("seed: 5\ntrainer:\n  lr: 0.1\n  max_epochs: 3\nmodel: mlp\n"
                   "scenario: {name: split-digits}\n")
    cfg = config.load(str(exp), ["trainer.lr=0.5", "--trainer.batch_size=8"])
    assert cfg.seed == 5  # from the file
    assert cfg.trainer.max_epochs == 3  # from the file
    assert cfg.trainer.lr == 0.5  # the command line wins
    assert cfg.trainer.batch_size == 8  # --key=value, as a W&B agent passes it
    assert cfg.trainer.optimizer == "adamw"  # default


def test_strategy_shorthand_and_composition():
    one = config.load(None, [*DIGITS, "strategy=naive"])
    assert config.strategy_names(one) == ["naive"]
    two = config.load(None, [*DIGITS, "strategy=[naive,joint]"])
    assert config.strategy_names(two) == ["naive", "joint"]
    plus = config.load(None, [*DIGITS, "strategy=naive+joint"])
    assert config.strategy_names(plus) == ["naive", "joint"]


def test_component_options_become_typed_fields():
    cfg = config.load(None, [*DIGITS, "model.hidden=[64,32]"])
    assert cfg.model.hidden == [64, 32]


@pytest.mark.parametrize("override, fragment", [
    ("strategy=nope", "unknown strategy 'nope'; valid choices: "),
    ("model.name=nope", "unknown model 'nope'"),
    ("scenario.name=nope", "unknown scenario 'nope'"),
    ("trainer.max_epochs=abc", "'trainer.max_epochs'"),
    ("no.such.key=1", "unknown config key 'no'"),
    ("trainer.bach_size=3", "did you mean 'batch_size'"),
    ("trainer.optimizer=adamx", "valid choices: adam, adamw, sgd"),
    ("trainer.batch_size=0", "must be at least 1"),
    ("trainer=3", "is a section"),
    ("model.hidden=5", "expected a list"),
    ("strategy.joint.x=1", "not among strategy.name"),
    ("justtext", "not of the form key=value"),
    ("name=${oc.env:HOME}", "interpolations are not allowed"),
])
def test_bad_overrides_name_the_problem(override, fragment):
    with pytest.raises(UserError, match=None) as err:
        config.load(None, [*DIGITS, override])
    assert fragment in str(err.value)
    assert "\n" not in str(err.value)


def test_bad_yaml_files(tmp_path):
    missing = tmp_path / "missing.yaml"
    with pytest.raises(UserError, match="not found"):
        config.load(str(missing))
    broken = tmp_path / "broken.yaml"
    broken.write_text("trainer: [unclosed\n")
    with pytest.raises(UserError, match="cannot parse"):
        config.load(str(broken))
    a_list = tmp_path / "list.yaml"
    a_list.write_text("- 1\n- 2\n")
    with pytest.raises(UserError, match="mapping"):
        config.load(str(a_list))


def test_config_hash_ignores_name_and_logging_but_not_training():
    a = config.load(None, [*DIGITS, "name=a", "logger=none"])
    b = config.load(None, [*DIGITS, "name=b"])
    c = config.load(None, [*DIGITS, "trainer.lr=0.1"])
    assert config.config_hash(a) == config.config_hash(b) != config.config_hash(c)


@pytest.mark.parametrize("args", [
    ["strategy=nope"], ["trainer.max_epochs=abc"], ["no.such.key=1"],
])
def test_cli_user_errors_exit_2_with_one_line_and_no_run_dir(tmp_path, args):
    proc = subprocess.run([sys.executable, "-m", "harness", "run", *args],
                          capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.startswith("retain: error: ")
    assert "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "runs").exists()


def test_a_command_run_leaves_no_leak_reports_at_exit(tmp_path):
    """`retain run` freezes its import-time heap (harness.cli._import_run) and unfreezes it
    at exit: a heap still frozen then makes native extensions (triton's nanobind) print
    leak reports."""
    proc = subprocess.run([sys.executable, "-m", "harness", "run", *DIGITS, "logger=none",
                           "trainer.max_steps=1", "eval_init=false", f"out_dir={tmp_path}"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "leaked" not in proc.stderr, proc.stderr[-2000:]


def test_only_a_command_freezes_the_heap(tmp_path, monkeypatch):
    """`retain` (main() reading sys.argv) freezes; main([...]) called from code (tests,
    notebooks) leaves the caller's garbage collector alone."""
    import gc

    from harness import cli

    asked = []
    monkeypatch.setattr(cli, "_import_run", lambda freeze_heap: asked.append(freeze_heap)
                        or (lambda cfg, resume, restart=False: {}))
    args = ["run", *DIGITS, "logger=none", f"out_dir={tmp_path}"]
    assert cli.main(args) == 0
    monkeypatch.setattr(sys, "argv", ["retain", *args])
    assert cli.main() == 0
    assert asked == [False, True]
    monkeypatch.undo()

    before = gc.get_freeze_count()
    cli._import_run(freeze_heap=False)
    assert gc.get_freeze_count() == before
    cli._import_run(freeze_heap=True)
    try:
        assert gc.get_freeze_count() > before and gc.isenabled()
    finally:
        gc.unfreeze()


def test_help_and_list_do_not_import_torch():
    code = ("import sys; from harness.cli import main; main(['list']); main(['--help']); "
            "main(['run', '--help']); bad = [m for m in ('torch', 'lightning', 'avalanche', "
            "'wandb') if m in sys.modules]; print('IMPORTED', bad)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60).stdout
    assert "IMPORTED []" in out
    assert "naive" in out and "split-digits" in out and "trainer.max_epochs" in out
    assert "trainer.strategy" in out and "checkpoint.every_n_steps" in out


def test_config_yaml_reads_back_as_the_same_config(tmp_path):
    """config.yaml is what --resume loads: strings that look like numbers stay strings."""
    cfg = config.load(None, ["strategy=[replay,ewc]", "trainer.lr=1e-4"])
    cfg.name, cfg.wandb.tags = "1e3", ["1e-4", "true"]
    path = tmp_path / "config.yaml"
    path.write_text(config.to_yaml(cfg))
    again = config.load(str(path), [])
    assert again == cfg and config.config_hash(again) == config.config_hash(cfg)
