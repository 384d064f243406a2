"""Name -> component registries for models, strategies and scenarios.

Each package's ``__init__`` declares its components lazily (name, module, one-line summary),
so ``retain list`` and ``retain --help`` answer without importing torch. The component's own
file registers the class and its config dataclass with a decorator::

    @register_strategy("ewc", config=EWCConfig)
    class EWC(Strategy): ...

Adding a component is one file plus one ``declare`` line. A component from outside the
repository (``harness.plugins``) registers without one; the ``retain.plugins`` entry points of
installed packages are imported the first time a registry is read.

A model's or scenario's config names its component (``model.name``): the registry adds a
``name`` field to a config dataclass that lacks one. Every field needs a default, since the
defaults are the configuration a run starts from.
"""

from __future__ import annotations

import dataclasses
import importlib
import re
from dataclasses import dataclass, is_dataclass

from harness import plugins
from harness.errors import UserError, did_you_mean


@dataclass
class Entry:
    name: str
    module: str
    summary: str
    cls: type | None = None
    config: type | None = None


class Registry:
    def __init__(self, kind: str, package: str, named: bool = False):
        self.kind = kind
        self.package = package  # imported on first use to run its ``declare`` lines
        self.named = named  # configs carry the component's name (model.name, scenario.name)
        self._entries: dict[str, Entry] = {}
        self._declared = False

    def declare(self, name: str, module: str, summary: str) -> None:
        if name in self._entries:
            raise ValueError(f"{self.kind} '{name}' is declared twice")
        self._entries[name] = Entry(name, module, summary)

    def register(self, name: str, config: type):
        """Class decorator: binds a name to its class and config dataclass."""
        if not is_dataclass(config):
            raise TypeError(f"{self.kind} '{name}': config must be a dataclass")
        if not self.named and not name.isidentifier():  # its options are strategy.<name>.*
            raise UserError(f"{self.kind} name '{name}' must be a Python identifier (letters, "
                            f"digits, _): its options live under {self.kind}.<name>.*")
        no_default = [f.name for f in dataclasses.fields(config)
                      if f.default is dataclasses.MISSING
                      and f.default_factory is dataclasses.MISSING]
        if no_default:
            raise UserError(f"{self.kind} '{name}': config field(s) {', '.join(no_default)} of "
                            f"{config.__name__} need a default")
        if self.named:
            config = _with_name(self.kind, name, config)

        def bind(cls):
            self._declare_builtins()  # a built-in name is taken before a plug-in can take it
            entry = self._entries.get(name)
            if entry is None:  # registered without a declare line: a plug-in
                entry = self._entries[name] = Entry(name, cls.__module__, _summary(cls))
            elif entry.module != cls.__module__:
                raise UserError(f"{self.kind} '{name}' is registered twice: by "
                                f"{_where(cls.__module__)} and by {_where(entry.module)}")
            entry.cls, entry.config = cls, config
            return cls

        return bind

    def names(self) -> list[str]:
        self._load()
        return sorted(self._entries)

    def summaries(self) -> dict[str, str]:
        self._load()
        return {n: self._entries[n].summary for n in sorted(self._entries)}

    def origin(self, name: str) -> str | None:
        """The plug-in a component comes from (None for a built-in one)."""
        self._load()
        return plugins.origin(self._entries[name].module)

    def get(self, name: str) -> Entry:
        """The entry for ``name`` with its class imported; a UserError if unknown."""
        self._load()
        entry = self._entries.get(name)
        if entry is None:
            raise UserError(f"unknown {self.kind} '{name}'{did_you_mean(name, self._entries)}")
        if entry.cls is None:
            importlib.import_module(entry.module)
            if entry.cls is None:
                raise RuntimeError(f"{entry.module} does not register {self.kind} '{name}'")
        return entry

    def _load(self) -> None:
        """Before a read: the built-in declarations, then the installed plug-ins."""
        self._declare_builtins()
        plugins.load_entry_points()

    def _declare_builtins(self) -> None:
        # Not the entry points: registering happens while a module is being imported, and a
        # plug-in importing that very module (to subclass a built-in) would find it half made.
        if not self._declared:
            self._declared = True
            importlib.import_module(self.package)


def _where(module: str) -> str:
    found = plugins.origin(module)
    return f"plugin {found}" if found else module


class NamedConfigs:
    """Where the config classes the registry gives a ``name`` field live, so that pickle
    finds them by module and qualified name (``harness.registry.NamedConfigs.<attr>``)."""


def _with_name(kind: str, name: str, config: type) -> type:
    """``config`` with a ``name`` field defaulting to ``name``; checked if it has one."""
    fields = {f.name: f for f in dataclasses.fields(config)}
    if "name" in fields:
        if fields["name"].default != name:
            raise UserError(f"{kind} '{name}': its config {config.__name__}.name defaults to "
                            f"{fields['name'].default!r}; make it {name!r} or leave the field "
                            "out (the registry adds it)")
        return config
    # The name comes first, as in the built-in configs: dataclasses order the fields of the
    # bases from the last one in the MRO, so the base holding only ``name`` goes second.
    frozen = config.__dataclass_params__.frozen
    attr = re.sub(r"\W", "_", f"{kind}_{name}_{config.__name__}")
    name_field = dataclasses.field(default=name, metadata={"help": f"the {kind}"})
    name_only = dataclasses.make_dataclass(f"{config.__name__}Name", [("name", str, name_field)],
                                           frozen=frozen)
    named = dataclasses.make_dataclass(config.__name__, [], bases=(config, name_only),
                                       frozen=frozen)
    for cls, suffix in ((name_only, "_name"), (named, "")):
        cls.__module__, cls.__qualname__ = __name__, f"NamedConfigs.{attr}{suffix}"
        setattr(NamedConfigs, attr + suffix, cls)
    return named


def _summary(cls) -> str:
    return (cls.__doc__ or "").strip().splitlines()[0] if cls.__doc__ else ""


MODELS = Registry("model", "harness.models", named=True)
STRATEGIES = Registry("strategy", "strategies")
SCENARIOS = Registry("scenario", "scenarios", named=True)

register_model = MODELS.register
register_strategy = STRATEGIES.register
register_scenario = SCENARIOS.register
