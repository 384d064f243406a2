"""The avalanche scenario: a benchmark built by a factory the config names, items (x, y) or
(x, y, t), read into tensors exactly; Scenario.from_benchmark with (x, y) items; one error line
for each bad factory. Factories live in tests/data/avalanche_bench.py."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
import torch

from harness import config
from harness.api import DataSpec, Scenario
from harness.errors import UserError
from scenarios.avalanche import AvalancheConfig, build

BENCH = Path(__file__).resolve().parent / "data" / "avalanche_bench.py"


def scenario(factory: str, **options):
    return build(AvalancheConfig(factory=f"{BENCH}:{factory}", **options), seed=0)


def _bench():
    import sys

    from harness import plugins

    plugins.load([str(BENCH)])
    return sys.modules[plugins.module_name(str(BENCH))]


def test_xyt_items_are_read_exactly_with_the_experience_as_task_label():
    s = scenario("class_incremental", kwargs={"n_experiences": 2})
    bench = _bench().class_incremental(2)
    for i, experience in enumerate(bench.train_stream):
        items = [experience.dataset[j] for j in range(len(experience.dataset))]
        torch.testing.assert_close(s.train_data(i).x, torch.stack([it[0] for it in items]))
        assert s.train_data(i).y.tolist() == [int(it[1]) for it in items]
        assert set(s.train_data(i).t.tolist()) == {i}  # the items say 0 for every experience
    assert s.spec == DataSpec("vectors", "classification", input_dim=6, n_classes=4)
    assert s.classes_per_task == [[0, 1], [2, 3]] and s.setting == "class-il"
    assert s.task_names == ["experience 0", "experience 1"]


def test_xy_items_and_a_validation_stream(tmp_path):
    s = scenario("pairs", kwargs={"with_validation": True}, task_names=["a", "b"],
                 setting="task-il")
    assert s.n_experiences == 2 and s.task_names == ["a", "b"] and s.setting == "task-il"
    assert set(s.test_data(1).t.tolist()) == {1} and len(s.val_data(1)) == 25
    assert s.setting == "task-il" and s.classes_per_task == [[0, 1, 2, 3]] * 2
    assert scenario("pairs", n_experiences=1).n_experiences == 1


def test_the_run_seed_reaches_a_factory_that_takes_one(tmp_path):
    one = build(AvalancheConfig(factory=f"{BENCH}:class_incremental"), seed=1)
    again = build(AvalancheConfig(factory=f"{BENCH}:class_incremental"), seed=1)
    other = build(AvalancheConfig(factory=f"{BENCH}:class_incremental"), seed=2)
    fixed = build(AvalancheConfig(factory=f"{BENCH}:class_incremental", kwargs={"seed": 1}),
                  seed=2)
    assert torch.equal(one.train_data(0).x, again.train_data(0).x)
    assert not torch.equal(one.train_data(0).x, other.train_data(0).x)
    assert torch.equal(one.train_data(0).x, fixed.train_data(0).x)


def test_a_module_factory_and_kwargs_from_the_command_line(tmp_path, monkeypatch):
    (tmp_path / "my_benches.py").write_text(BENCH.read_text())
    monkeypatch.syspath_prepend(str(tmp_path))
    cfg = config.load(None, ["scenario.name=avalanche", "scenario.factory=my_benches:pairs",
                             "scenario.kwargs.with_validation=true", "model.name=mlp"])
    assert cfg.scenario.kwargs == {"with_validation": True}
    assert build(cfg.scenario, seed=0).val_data(0) is not None


def test_from_benchmark_accepts_xy_items():
    """Issue 17: a benchmark whose items are (x, y) without a task label raised ValueError."""
    bench = _bench().pairs()
    spec = DataSpec("vectors", "classification", input_dim=6, n_classes=4)
    s = Scenario.from_benchmark("mine", bench, spec, ["a", "b"], "class-il")
    assert set(s.train_data(1).t.tolist()) == {1} and len(s.test_data(0)) == 25


def _factory(tmp_path: Path, body: str) -> str:
    (tmp_path / "f.py").write_text(textwrap.dedent(body))
    return f"{tmp_path / 'f.py'}:make"


@pytest.mark.parametrize("body, expected", [
    ("make = 3\n", "is not a function"),
    ("def other(): pass\n", "has no 'make'"),
    ("def make():\n    raise RuntimeError('no data here')\n",
     "(**{}) failed: RuntimeError: no data here"),
    ("def make():\n    return [1]\n", "returned a list, not an Avalanche benchmark"),
    ("""\
     import types
     def make():
         return types.SimpleNamespace(train_stream=[1, 2], test_stream=[1])
     """, "its test_stream has 1 experiences, its train_stream 2"),
    ("""\
     import types
     def make():
         exp = types.SimpleNamespace(dataset=[("an image", 0)])
         return types.SimpleNamespace(train_stream=[exp], test_stream=[exp])
     """, "train_stream[0]: dataset items' x and y must be numbers or tensors"),
    ("""\
     import types
     def make():
         exp = types.SimpleNamespace(dataset=[(1.0,)])
         return types.SimpleNamespace(train_stream=[exp], test_stream=[exp])
     """, "dataset items must be (x, y) or (x, y, t), not 1-tuples (float)"),
    ("""\
     import types, torch
     def make():
         exp = types.SimpleNamespace(dataset=[(torch.ones(2), 0.5)])
         return types.SimpleNamespace(train_stream=[exp], test_stream=[exp])
     """, "targets must be integer labels or token ids"),
])
def test_a_bad_factory_is_one_error_line(tmp_path, body, expected):
    with pytest.raises(UserError) as err:
        build(AvalancheConfig(factory=_factory(tmp_path, body)), seed=0)
    assert expected in str(err.value) and "\n" not in str(err.value)
    assert "scenario.factory" in str(err.value)


@pytest.mark.parametrize("options, expected", [
    ({"factory": ""}, "needs scenario.factory=module:function"),
    ({"factory": "no_colon"}, "must be module:function or path/to/file.py:function"),
    ({"factory": f"{BENCH}:pairs", "kwargs": {"colour": 1}},
     "got an unexpected keyword argument 'colour'"),
    ({"factory": f"{BENCH}:pairs", "n_experiences": 3}, "but the benchmark has 2 experiences"),
    ({"factory": f"{BENCH}:not_a_benchmark"}, "returned a list"),
    ({"factory": "missing_file.py:make"}, "scenario.factory file not found: missing_file.py"),
])
def test_bad_options_are_one_error_line(options, expected):
    with pytest.raises(UserError, match=expected.replace("(", r"\(").replace(")", r"\)")):
        build(AvalancheConfig(**options), seed=0)
