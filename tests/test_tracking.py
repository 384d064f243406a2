"""W&B identity: a sweep's runs form one group named after the sweep, with job type and tag;
other runs are grouped by strategy; the sweep's name survives any characters."""

from __future__ import annotations

import sys
import types

import pytest

from harness import config
from harness.experiment import tracking
from harness.sweeps.runner import _quoted


@pytest.fixture
def fake_wandb(monkeypatch):
    """A stand-in ``wandb`` that records what ``wandb.init`` was given."""
    seen: dict = {}

    class Run:
        config = types.SimpleNamespace(update=lambda *a, **k: None)

        def define_metric(self, *a, **k):
            pass

    fake = types.ModuleType("wandb")
    fake.init = lambda **kwargs: seen.update(kwargs) or Run()
    fake.Settings = lambda **kwargs: kwargs
    monkeypatch.setitem(sys.modules, "wandb", fake)
    return seen


@pytest.mark.parametrize("overrides, group, job_type, tags", [
    ([], "replay", "run", []),
    (["wandb.sweep=strategies"], "strategies", "sweep", ["sweep:strategies"]),
    (["wandb.sweep=strategies", "wandb.group=mine", "wandb.tags=[a]"], "mine", "sweep",
     ["a", "sweep:strategies"]),
])
def test_runs_carry_their_sweeps_identity(overrides, group, job_type, tags, fake_wandb,
                                           tmp_path):
    cfg = config.load(None, ["strategy=replay", "wandb.mode=offline", *overrides])
    tracker = tracking.Tracker(cfg, tmp_path, config.to_dict(cfg), "replay")
    assert tracker.logger is not None
    assert (fake_wandb["group"], fake_wandb["job_type"], fake_wandb["tags"]) == (
        group, job_type, tags)


@pytest.mark.parametrize("name", ["strategies", "1e3", "it's: a=sweep", "null"])
def test_the_sweep_name_reaches_the_run_unchanged(name):
    cfg = config.load(None, [f"wandb.sweep={_quoted(name)}"])
    assert cfg.wandb.sweep == name
