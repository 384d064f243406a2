"""Name -> component registries for models, strategies and scenarios.

Each package's ``__init__`` declares its components lazily (name, module, one-line summary),
so ``retain list`` and ``retain --help`` answer without importing torch. The component's own
file registers the class and its config dataclass with a decorator::

    @register_strategy("ewc", config=EWCConfig)
    class EWC(Strategy): ...

Adding a component is one file plus one ``declare`` line.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, is_dataclass

from harness.errors import UserError, did_you_mean


@dataclass
class Entry:
    name: str
    module: str
    summary: str
    cls: type | None = None
    config: type | None = None


class Registry:
    def __init__(self, kind: str, package: str):
        self.kind = kind
        self.package = package  # imported on first use to run its ``declare`` lines
        self._entries: dict[str, Entry] = {}
        self._declared = False

    def declare(self, name: str, module: str, summary: str) -> None:
        if name in self._entries:
            raise ValueError(f"{self.kind} '{name}' is declared twice")
        self._entries[name] = Entry(name, module, summary)

    def register(self, name: str, config: type):
        """Class decorator: binds a declared name to its class and config dataclass."""
        if not is_dataclass(config):
            raise TypeError(f"{self.kind} '{name}': config must be a dataclass")

        def bind(cls):
            entry = self._entries.get(name)
            if entry is None:  # registered from user code without a declare line
                entry = self._entries[name] = Entry(name, cls.__module__, _summary(cls))
            elif entry.cls is not None and entry.cls is not cls:
                raise ValueError(f"{self.kind} '{name}' is registered twice")
            entry.cls, entry.config = cls, config
            return cls

        return bind

    def names(self) -> list[str]:
        self._load_declarations()
        return sorted(self._entries)

    def summaries(self) -> dict[str, str]:
        self._load_declarations()
        return {n: self._entries[n].summary for n in sorted(self._entries)}

    def get(self, name: str) -> Entry:
        """The entry for ``name`` with its class imported; a UserError if unknown."""
        self._load_declarations()
        entry = self._entries.get(name)
        if entry is None:
            raise UserError(f"unknown {self.kind} '{name}'{did_you_mean(name, self._entries)}")
        if entry.cls is None:
            importlib.import_module(entry.module)
            if entry.cls is None:
                raise RuntimeError(f"{entry.module} does not register {self.kind} '{name}'")
        return entry

    def _load_declarations(self) -> None:
        if not self._declared:
            self._declared = True
            importlib.import_module(self.package)


def _summary(cls) -> str:
    return (cls.__doc__ or "").strip().splitlines()[0] if cls.__doc__ else ""


MODELS = Registry("model", "harness.models")
STRATEGIES = Registry("strategy", "strategies")
SCENARIOS = Registry("scenario", "scenarios")

register_model = MODELS.register
register_strategy = STRATEGIES.register
register_scenario = SCENARIOS.register
