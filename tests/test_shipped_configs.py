"""Every experiment file shipped in configs/experiments loads into a valid configuration."""

from pathlib import Path

import pytest

from harness import config

EXPERIMENTS = sorted((Path(__file__).resolve().parents[1] / "configs" / "experiments")
                     .glob("*.yaml"))


def test_there_are_experiment_files():
    assert EXPERIMENTS


@pytest.mark.parametrize("path", EXPERIMENTS, ids=lambda p: p.stem)
def test_experiment_file_loads(path):
    cfg = config.load(str(path))
    assert cfg.scenario.name and cfg.model.name and config.strategy_names(cfg)
