"""Avalanche: your own Avalanche benchmark, built by a factory that the config names.

``scenario.factory`` is ``module:function`` or ``path/to/file.py:function``; the function is
called with ``scenario.kwargs`` (and the run's ``seed=`` when it takes one and the kwargs do
not set it) and returns a benchmark with ``train_stream`` and ``test_stream`` (and optionally
``valid_stream``) whose items are ``(x, y)`` or ``(x, y, t)``::

    # my_bench.py
    import torch
    from torch.utils.data import TensorDataset
    from avalanche.benchmarks import nc_benchmark

    def make_benchmark(n_experiences=2, seed=0):
        x, y = torch.randn(400, 16), torch.arange(400) % 4
        train, test = TensorDataset(x[:320], y[:320]), TensorDataset(x[320:], y[320:])
        train.targets, test.targets = y[:320].tolist(), y[320:].tolist()
        return nc_benchmark(train, test, n_experiences=n_experiences, task_labels=False,
                            seed=seed)

    retain run scenario.name=avalanche scenario.factory=my_bench.py:make_benchmark \\
        scenario.kwargs.n_experiences=2 model.name=mlp

Each experience is read once, item by item, into tensors (``TaskData.from_dataset``); the
task loop and ``scenario.benchmark`` then use those. retain's task label is the experience's
position in the stream, whatever ``t`` the items carry: task-incremental masks are per
experience. The DataSpec, each task's classes and the setting are inferred as for the
``tensors`` scenario (``scenarios.infer``).
"""

from __future__ import annotations

import inspect
import warnings
from dataclasses import dataclass, field
from typing import Any

import torch

from harness.api import Scenario, TaskData
from harness.errors import UserError
from harness.plugins import import_object
from harness.registry import register_scenario
from scenarios.infer import classes_of, data_option, infer_spec, setting_of

STREAMS = {"train": "train_stream", "test": "test_stream", "val": "valid_stream"}


@dataclass
class AvalancheConfig:
    name: str = "avalanche"
    factory: str = field(default="", metadata={
        "help": "module:function or path/to/file.py:function returning an Avalanche benchmark"})
    kwargs: dict[str, Any] = field(default_factory=dict, metadata={
        "help": "keyword arguments of the factory (scenario.kwargs.n_experiences=5)"})
    n_experiences: int = field(default=0, metadata={
        "help": "use the first n experiences (0 = all)", "min": 0})
    task_names: list[str] = field(default_factory=list, metadata={
        "help": "one name per experience (default: 'experience <i>')"})
    setting: str = data_option("setting")
    n_classes: int = data_option("n_classes")
    vocab_size: int = data_option("vocab_size")
    pad_id: int = data_option("pad_id")


def make_benchmark(cfg: AvalancheConfig, seed: int):
    """The factory's benchmark, built with the config's keyword arguments."""
    if not cfg.factory:
        raise UserError("scenario 'avalanche' needs scenario.factory=module:function (or "
                        "path/to/file.py:function)")
    with warnings.catch_warnings():
        # Avalanche imports qpsolvers for GEM, which warns on stderr when no QP solver is
        # installed; the warning would break one-line error output.
        warnings.filterwarnings("ignore", message="no QP solver found")
        factory = import_object(cfg.factory, "scenario.factory")
        if not callable(factory):
            raise UserError(f"scenario.factory {cfg.factory} is not a function")
        kwargs = dict(cfg.kwargs)
        if "seed" not in kwargs and _takes(factory, "seed"):
            kwargs["seed"] = seed
        try:
            bench = factory(**kwargs)
        except UserError:
            raise
        except Exception as err:
            first = (str(err).strip().splitlines() or [""])[0]
            raise UserError(f"scenario.factory {cfg.factory}(**{kwargs}) failed: "
                            f"{type(err).__name__}: {first}") from None
    missing = [s for s in ("train_stream", "test_stream") if not hasattr(bench, s)]
    if missing:
        raise UserError(f"scenario.factory {cfg.factory} returned a {type(bench).__name__}, "
                        f"not an Avalanche benchmark (no {', '.join(missing)})")
    return bench


def read_streams(bench, cfg: AvalancheConfig) -> dict[str, list[TaskData]]:
    """Each stream's experiences as TaskData, task label = position in the stream."""
    streams = {split: list(getattr(bench, attr)) for split, attr in STREAMS.items()
               if hasattr(bench, attr)}
    n = len(streams["train"])
    for split, stream in streams.items():
        if len(stream) != n:
            raise UserError(f"scenario.factory {cfg.factory}: its {STREAMS[split]} has "
                            f"{len(stream)} experiences, its train_stream {n}")
    if n == 0:
        raise UserError(f"scenario.factory {cfg.factory}: its train_stream is empty")
    if cfg.n_experiences > n:
        raise UserError(f"scenario.n_experiences={cfg.n_experiences} but the benchmark has "
                        f"{n} experiences")
    keep = cfg.n_experiences or n
    data = {}
    for split, stream in streams.items():
        data[split] = []
        for i, experience in enumerate(stream[:keep]):
            where = f"scenario.factory {cfg.factory}: {STREAMS[split]}[{i}]"
            try:
                d = TaskData.from_dataset(experience.dataset, task=i)
            except UserError as err:
                raise UserError(f"{where}: {err}") from None
            if split != "val" and not len(d):
                raise UserError(f"{where} is empty")
            data[split].append(TaskData(d.x, d.y, torch.full((len(d),), i, dtype=torch.long)))
    return data


def _takes(fn, name: str) -> bool:
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False
    return name in params


@register_scenario("avalanche", config=AvalancheConfig)
def build(cfg: AvalancheConfig, seed: int) -> Scenario:
    data = read_streams(make_benchmark(cfg, seed), cfg)
    spec = infer_spec(data, f"scenario.factory {cfg.factory}", cfg.n_classes, cfg.vocab_size,
                      cfg.pad_id)
    classes = classes_of(data["train"], data["test"]) if spec.task == "classification" else None
    names = list(cfg.task_names) or [f"experience {i}" for i in range(len(data["train"]))]
    if len(names) != len(data["train"]):
        raise UserError(f"scenario.task_names has {len(names)} names for "
                        f"{len(data['train'])} experiences")
    return Scenario.from_splits(cfg.name, spec, names, setting_of(cfg.setting, spec, classes),
                                data["train"], data["test"], data.get("val"),
                                classes_per_task=classes)
