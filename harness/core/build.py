"""The components a resolved config names, built from the registries: its strategies, its
scenario (encoded with the model's tokenizer when it asks for it), and the network (the model
for the scenario's data, with its heads)."""

from __future__ import annotations

from harness.api import Scenario, Strategy
from harness.config import strategy_names
from harness.core.network import Network, build_model
from harness.errors import UserError
from harness.registry import MODELS, SCENARIOS, STRATEGIES

LEND = ("auto", "model")  # scenario.tokenizer values that take the model's tokenizer


def build(cfg) -> tuple[list[Strategy], Scenario, Network]:
    # Strategies first: their option errors need no data, so they come before the scenario
    # (and Avalanche's import) is paid for.
    strategies = [STRATEGIES.get(n).cls(getattr(cfg.strategy, n)) for n in strategy_names(cfg)]
    for strategy in strategies:  # e.g. sparse_memory with weight decay: one line, no data yet
        if hasattr(strategy, "check_config"):  # a plug-in need not subclass Strategy
            strategy.check_config(cfg)
    scenario = build_scenario(cfg)
    model = build_model(cfg.model, scenario.spec, cfg.scenario.name)
    task_classes = scenario.classes_per_task if scenario.setting == "task-il" else None
    net = Network(model, scenario.spec, task_classes)
    for strategy in strategies:  # e.g. olora without adapters: one line, before any run dir
        if hasattr(strategy, "check"):  # a plug-in need not subclass Strategy
            strategy.check(net)
    return strategies, scenario, net


def build_scenario(cfg) -> Scenario:
    """The scenario; a text scenario gets ``tokenizer=`` the model's own when its
    ``tokenizer`` option is ``model``, or ``auto`` and the model has one."""
    builder = SCENARIOS.get(cfg.scenario.name).cls
    tokenizer = model_tokenizer(cfg)
    if tokenizer is None:
        return builder(cfg.scenario, cfg.seed)
    return builder(cfg.scenario, cfg.seed, tokenizer=tokenizer)


def model_tokenizer(cfg):
    """The model's ``TextTokenizer`` (``harness.api.tokenizer``) if the scenario takes it."""
    choice = getattr(cfg.scenario, "tokenizer", None)
    if choice not in LEND:
        return None
    lend = getattr(MODELS.get(cfg.model.name).cls, "text_tokenizer", None)
    if lend is not None:
        return lend(cfg.model)
    if choice == "model":
        raise UserError(f"scenario.tokenizer=model, but model {cfg.model.name} has no tokenizer "
                        f"of its own (models with one: {', '.join(lending_models())}); choose "
                        "another scenario.tokenizer")
    return None


def lending_models() -> list[str]:
    names = []
    for name in MODELS.names():
        try:
            if getattr(MODELS.get(name).cls, "text_tokenizer", None) is not None:
                names.append(name)
        except (ImportError, UserError):
            continue
    return names
