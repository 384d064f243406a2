"""The components a resolved config names, built from the registries: its strategies, its
scenario, and the network (the model for the scenario's data, with its heads)."""

from __future__ import annotations

from harness.api import Scenario, Strategy
from harness.config import strategy_names
from harness.core.network import Network, build_model
from harness.registry import SCENARIOS, STRATEGIES


def build(cfg) -> tuple[list[Strategy], Scenario, Network]:
    # Strategies first: their option errors need no data, so they come before the scenario
    # (and Avalanche's import) is paid for.
    strategies = [STRATEGIES.get(n).cls(getattr(cfg.strategy, n)) for n in strategy_names(cfg)]
    scenario = SCENARIOS.get(cfg.scenario.name).cls(cfg.scenario, cfg.seed)
    model = build_model(cfg.model, scenario.spec, cfg.scenario.name)
    task_classes = scenario.classes_per_task if scenario.setting == "task-il" else None
    return strategies, scenario, Network(model, scenario.spec, task_classes)
