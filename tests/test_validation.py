"""Config ranges: every numeric option of the run, the trainer and every registered component
declares its valid values in its dataclass's metadata, ``--help`` shows them, and one validator
(``harness.ranges``, called by ``config.load``) refuses anything else with one line naming the
key, before any run directory or model exists. Validation only: nothing here trains."""

from __future__ import annotations

import contextlib
import dataclasses
import io
import math
import subprocess
import sys
import typing

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from harness import config, ranges
from harness.cli import format_fields, main, run_help
from harness.config import CheckpointConfig, RunConfig, TrainerConfig
from harness.errors import UserError
from harness.experiment import results
from harness.registry import MODELS, SCENARIOS, STRATEGIES

DIGITS = ["scenario.name=split-digits", "model.name=mlp"]
REGISTRIES = {"model": MODELS, "scenario": SCENARIOS, "strategy": STRATEGIES}
# What a component needs besides the option under test for its own check() to pass.
NEEDS = {("scenario", "files"): ["scenario.path=data"],
         ("scenario", "hf"): ["scenario.datasets=[a,b,c]"]}
# Numeric options whose range is a rule across fields (check()), or any finite number.
NO_OWN_RANGE = {"model.knn_layer": "-n_layer <= knn_layer < n_layer, in KNNConfig.check",
                "scenario.alpha": "mqar's power-law exponent: any finite number"}


class Accepted(BaseException):
    """The command got as far as creating the run directory."""


def run_cli(args: list[str], monkeypatch) -> tuple[int | None, str]:
    """``retain run ARGS`` in-process, stopped where the run directory would be made."""
    monkeypatch.setattr(results.RunDir, "create", lambda *a, **k: (_ for _ in ()).throw(
        Accepted()))
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            code = main(["run", *args, "logger=none"])
        except Accepted:
            code = None
    return code, err.getvalue()


# ----------------------------------------------------------------------- issue 17, item 6/7

@pytest.mark.parametrize("args, named", [
    (["scenario.seq_len=0"], "'scenario.seq_len'"),  # was a ZeroDivisionError traceback
    ([*DIGITS, "model.hidden=[-5]"], "'model.hidden[0]'"),  # a RuntimeError traceback
    ([*DIGITS, "model.hidden=[64,0]"], "'model.hidden[1]'"),
    (["model.name=knn", "model.capacity=-1"], "'model.capacity'"),  # a RuntimeError traceback
    (["model.d_model=0"], "'model.d_model'"),  # trained to "complete"
    ([*DIGITS, "strategy=ewc", "strategy.ewc.gamma=-1"], "'strategy.ewc.gamma'"),  # completed
    ([*DIGITS, "strategy=ewc", "strategy.ewc.lam=nan"], "'strategy.ewc.lam'"),  # failed at task 2
    ([*DIGITS, "strategy=ewc", "strategy.ewc.lam=inf"], "'strategy.ewc.lam'"),
    (["model.d_model=10", "model.n_head=4"], "divisible"),  # a rule across fields: check()
])
def test_nonsense_is_one_line_exit_2_before_anything_is_built(args, named, monkeypatch):
    code, err = run_cli(args, monkeypatch)
    assert code == 2, err
    assert err.startswith("retain: error: ") and len(err.strip().splitlines()) == 1, err
    assert named in err


def test_a_refused_option_leaves_no_run_directory_in_a_real_process(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "harness", "run", "model.d_model=0",
                           "logger=none"], capture_output=True, text=True, cwd=tmp_path,
                          timeout=300)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr == ("retain: error: invalid value 0 for 'model.d_model': must be at "
                           "least 1\n")
    assert not (tmp_path / "runs").exists()


def test_learned_positions_shorter_than_the_sequences_are_refused_at_construction():
    from harness.api import DataSpec
    from harness.models.gpt import GPT, GPTConfig

    spec = DataSpec("tokens", "lm", vocab_size=258, seq_len=64)
    with pytest.raises(UserError, match="model.max_len=32 is shorter"):
        GPT(GPTConfig(positions="learned", max_len=32, d_model=16, n_head=2), spec)
    GPT(GPTConfig(positions="learned", max_len=64, d_model=16, n_head=2), spec)


@pytest.mark.parametrize("args, fragment", [
    (["model.d_model=6", "model.n_head=2"], "must be even"),  # RoPE rotates pairs
    (["model.name=knn", "model.knn_layer=2"], "model.knn_layer=2 must be a block"),
    (["model.name=knn", "model.knn_lm_layer=3"], "at most model.n_layer=2"),
    (["scenario.name=mqar", "scenario.n_pairs=33"], "4*n_pairs <= seq_len"),
    (["scenario.name=passkey", "scenario.n_facts=200"], "at most 400 facts"),
    (["scenario.domains=[python,docs]"], "between 1 and the 2 entries"),
    (["scenario.domains=[python,python,docs]"], "lists a domain twice"),
    (["scenario.train_tokens=64", "scenario.seq_len=128"], "at least seq_len=128"),
    ([*DIGITS, "scenario.n_experiences=3"], "must divide the 10 classes"),
    ([*DIGITS, "scenario.class_order=[0,1,2,3,4,5,6,7,8,8]"], "permutation"),
    (["scenario.name=files"], "needs scenario.path"),
    (["scenario.name=files", "scenario.path=x", "scenario.test_fraction=0.6",
      "scenario.val_fraction=0.4"], "must be below 1"),
    (["scenario.name=hf", "scenario.datasets=[a]", "scenario.n_experiences=2"], "between 0"),
    (["scenario.name=text-topics", "scenario.n_experiences=3"], "must divide the 10"),
    (["scenario.name=text-topics", "scenario.classes=[english,english]",
      "scenario.n_experiences=1"], "distinct"),
    (["trainer.engine=lean", "trainer.devices=2"], "trainer.engine=lean runs one process"),
])
def test_rules_across_fields_are_checked_by_the_same_validator(args, fragment):
    with pytest.raises(UserError) as err:
        config.load(None, args)
    assert fragment in str(err.value) and "\n" not in str(err.value)


def test_sentinels_and_defaults_are_valid():
    cfg = config.load(None, [*DIGITS, "strategy=[ewc,replay]", "trainer.max_steps=-1",
                             "strategy.ewc.fisher_batches=-1", "strategy.replay.mem_size=0",
                             "model.hidden=[]"])
    assert cfg.trainer.max_steps == -1 and cfg.model.hidden == []
    for bad, named in (("trainer.max_steps=0", "-1 or at least 1"),
                       ("strategy.ewc.fisher_batches=-2", "-1 or at least 1")):
        with pytest.raises(UserError, match=named):
            config.load(None, [*DIGITS, "strategy=ewc", bad])


# ------------------------------------------------------------------ --help shows the ranges

def test_help_and_list_show_each_range_beside_its_help():
    text = run_help()
    assert "trainer.batch_size" in text and "training mini-batch size [>= 1]" in text
    assert "cap on steps per experience (-1: none) [-1 or >= 1]" in text
    assert "[adamw | adam | sgd]" in text and "[0 <= x <= 4294967295]" in text
    gpt = format_fields(MODELS.get("gpt").config, "model.")
    assert "hidden size [>= 1]" in gpt and "[0 <= x < 1]" in gpt and "[rope | learned]" in gpt
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["list", "strategy", "ewc"]) == 0
    assert "online mode: decay of the old Fisher [0 <= x <= 1]" in out.getvalue()


@pytest.mark.parametrize("rules, text", [
    ({"min": 1}, ">= 1"), ({"above": 0}, "> 0"), ({"max": 5}, "<= 5"), ({"below": 2}, "< 2"),
    ({"min": 0, "below": 1}, "0 <= x < 1"), ({"above": 0, "max": 1}, "0 < x <= 1"),
    ({"min": 1, "or": (-1,)}, "-1 or >= 1"), ({"choices": (None, "a")}, "null | a"), ({}, ""),
])
def test_describe(rules, text):
    assert ranges.describe(rules) == text


def test_a_misspelt_rule_is_a_bug_not_a_silent_pass():
    @dataclasses.dataclass
    class Bad:
        size: int = dataclasses.field(default=1, metadata={"mni": 1})

    with pytest.raises(TypeError, match="unknown metadata"):
        ranges.check(Bad())


# ------------------------------------------------------- every numeric option has a range

def numeric_options() -> list[tuple[str | None, str, type, bool, dict]]:
    """(component, key, number type, whether a list, metadata) of every int/float option."""
    found = []
    sections = [(None, "", RunConfig), (None, "trainer.", TrainerConfig),
                (None, "checkpoint.", CheckpointConfig)]
    for kind, registry in REGISTRIES.items():
        for name in registry.names():
            prefix = f"strategy.{name}." if kind == "strategy" else f"{kind}."
            sections.append(((kind, name), prefix, registry.get(name).config))
    for component, prefix, cls in sections:
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            is_list = typing.get_origin(hints[f.name]) is list
            number = typing.get_args(hints[f.name])[0] if is_list else hints[f.name]
            if number in (int, float):
                found.append((component, prefix + f.name, number, is_list, dict(f.metadata)))
    return found


NUMERIC = numeric_options()


def test_every_numeric_option_of_every_component_has_a_range():
    assert len(NUMERIC) > 100  # run, trainer and every registered component were found
    missing = [key for _, key, _, _, rules in NUMERIC
               if not {"min", "above", "choices"} & set(rules) and key not in NO_OWN_RANGE]
    assert not missing, f"options without a lower bound: {missing}"


@pytest.mark.parametrize("kind, registry", REGISTRIES.items())
def test_every_default_is_within_its_own_range(kind, registry):
    for name in registry.names():
        cfg = registry.get(name).config()
        for f in dataclasses.fields(cfg):
            value = getattr(cfg, f.name)
            for i, item in enumerate(value if isinstance(value, list) else [value]):
                ranges.check_value(f"{kind}.{f.name}[{i}]", item, f.metadata)


def selection(component) -> list[str]:
    """Overrides that pick the component whose option is under test."""
    if component is None:
        return DIGITS
    kind, name = component
    if kind == "strategy":
        return [f"strategy={name}"]
    vectors = ["model.name=mlp"] if name in ("split-digits", "permuted-digits",
                                             "split-mnist") else []
    return [*vectors, f"{kind}.name={name}", *NEEDS.get(component, [])]


def in_declared_range(value, rules) -> bool:
    """An independent reading of the rules, to judge what the validator accepted."""
    if value in rules.get("or", ()):
        return True
    if isinstance(value, float) and not math.isfinite(value):
        return not rules.get("finite", True)
    return (rules.get("min", value) <= value <= rules.get("max", value)
            and ("above" not in rules or value > rules["above"])
            and ("below" not in rules or value < rules["below"])
            and (isinstance(value, float) or -(2**63) <= value <= 2**63 - 1))


ints = st.one_of(st.sampled_from([0, -1, 1, -(2**63) - 1, 2**63, 10**30, 2**32, 2**32 - 1]),
                 st.integers(-10**6, 10**6))
floats = st.one_of(st.sampled_from([0.0, -0.0, -1.0, 1.0, 0.5, math.nan, math.inf, -math.inf,
                                    1e300, 1e-300]),
                   st.floats(allow_nan=True, allow_infinity=True))


@settings(max_examples=400, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.data())
def test_any_number_in_any_option_is_refused_in_one_line_or_valid(data):
    component, key, number, is_list, rules = data.draw(st.sampled_from(NUMERIC))
    numbers = ints if number is int else floats
    value = data.draw(st.lists(numbers, min_size=1, max_size=3) if is_list else numbers)
    values = value if is_list else [value]
    text = "[" + ",".join(map(_literal, values)) + "]" if is_list else _literal(value)
    args = [*selection(component), f"{key}={text}"]
    try:
        cfg = config.load(None, args)
    except UserError as err:
        message = str(err)
        assert message and "\n" not in message, args
        if not all(in_declared_range(v, rules) for v in values):
            assert f"'{key}" in message, (args, message)  # names the option (and element)
        return
    loaded = _get(cfg, key)
    assert all(in_declared_range(v, rules) for v in (loaded if is_list else [loaded])), args


def _literal(v) -> str:
    """A number as an override writes it (OmegaConf reads nan, inf and -inf)."""
    return repr(v) if not isinstance(v, float) or math.isfinite(v) else str(v)


def _get(cfg, key: str):
    for part in key.split("."):
        cfg = getattr(cfg, part)
    return cfg
