"""The Scenario every builder returns: a task stream as tensors, and as an Avalanche benchmark.

Builders prepare their splits as tensors (``TaskData``) and call ``Scenario.from_splits``.
``scenario.benchmark`` is a normal Avalanche benchmark over those tensors (``train_stream``,
``test_stream`` and, when built, ``valid_stream``; items are ``(x, y, t)``), built the first
time it is asked for. The task loop reads the tensors: materialising an experience through
Avalanche's per-item ``__getitem__`` costs seconds for a few thousand sequences, and building
the benchmark (and importing Avalanche) is paid only by code that uses it.

Once the benchmark exists, ``train_data(i)`` reads through it: it returns the tensors the
experience was built from after checking that they still are what the experience holds (length
and a few items), so a benchmark whose datasets were replaced or subset falls back to the
generic, slow path. ``Scenario.from_benchmark`` wraps any Avalanche benchmark the same way
(items ``(x, y, t)``, or ``(x, y)`` labelled with the experience's position).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any

import torch

from harness.api.data import DataSpec, TaskData

SETTINGS = ("class-il", "domain-il", "task-il")
STREAMS = {"train": "train_stream", "test": "test_stream", "val": "valid_stream"}


@dataclass
class Scenario:
    """A task stream: its splits (tensors) or Avalanche benchmark, data spec, names, setting."""

    name: str
    spec: DataSpec
    task_names: list[str]
    setting: str  # "class-il" | "domain-il" | "task-il"
    classes_per_task: list[list[int]] | None = None  # classification only
    info: dict = field(default_factory=dict)  # preparation facts: seconds, bytes, cache hits
    # split ("train", "test", "val") -> one TaskData per experience; empty for from_benchmark
    splits: dict[str, list[TaskData]] = field(default_factory=dict, repr=False, compare=False)
    _benchmark: Any = field(default=None, repr=False, compare=False)
    _cache: dict = field(default_factory=dict, repr=False, compare=False)
    # a held-out general evaluation set that is no task: (its name, its test data labelled
    # task -1), scored before training and after every task (the loss of general ability)
    general: tuple[str, TaskData] | None = field(default=None, repr=False, compare=False)

    def __post_init__(self):
        if self.setting not in SETTINGS:
            raise ValueError(f"setting must be one of {SETTINGS}, got {self.setting!r}")
        if not self.splits and self._benchmark is None:
            raise ValueError("a Scenario needs its splits or an Avalanche benchmark")
        lengths = {k: len(v) for k, v in self.splits.items()}
        if len(set(lengths.values())) > 1:
            raise ValueError(f"streams differ in length: {lengths}")
        if len(self.task_names) != self.n_experiences:
            raise ValueError(f"{len(self.task_names)} task names for "
                             f"{self.n_experiences} experiences")

    @property
    def benchmark(self):
        """The Avalanche benchmark (CLScenario with train_stream, test_stream, valid_stream)."""
        if self._benchmark is None:
            self._benchmark = _avalanche_benchmark(self.splits, self.spec)
        return self._benchmark

    @property
    def n_experiences(self) -> int:
        if self._benchmark is None:
            return len(self.splits["train"])
        return len(self._benchmark.train_stream)

    def train_data(self, i: int) -> TaskData:
        return self._materialise("train", i)

    def test_data(self, i: int) -> TaskData:
        return self._materialise("test", i)

    def val_data(self, i: int) -> TaskData | None:
        has_val = ("val" in self.splits if self._benchmark is None
                   else hasattr(self._benchmark, STREAMS["val"]))
        return self._materialise("val", i) if has_val else None

    def _materialise(self, split: str, i: int) -> TaskData:
        if self._benchmark is None:  # nobody has touched the benchmark: the tensors are it
            return self.splits[split][i]
        if (split, i) not in self._cache:
            stream = getattr(self._benchmark, STREAMS[split])
            self._cache[split, i] = materialise(stream[i].dataset, task=i)
        return self._cache[split, i]

    @classmethod
    def from_splits(cls, name: str, spec: DataSpec, task_names: list[str], setting: str,
                    train: list[TaskData], test: list[TaskData],
                    val: list[TaskData] | None = None,
                    classes_per_task: list[list[int]] | None = None,
                    info: dict | None = None,
                    general: tuple[str, TaskData] | None = None) -> Scenario:
        """A scenario of per-experience tensors (one TaskData each); the benchmark comes later."""
        splits = {"train": list(train), "test": list(test)}
        if val is not None:
            splits["val"] = list(val)
        return cls(name, spec, list(task_names), setting, classes_per_task, dict(info or {}),
                   splits, general=general)

    @classmethod
    def from_benchmark(cls, name: str, benchmark, spec: DataSpec, task_names: list[str],
                       setting: str, classes_per_task: list[list[int]] | None = None,
                       info: dict | None = None) -> Scenario:
        """A scenario over an Avalanche benchmark whose items are ``(x, y, t)``, or ``(x, y)``
        (the task label is then the experience's position in its stream)."""
        return cls(name, spec, list(task_names), setting, classes_per_task, dict(info or {}),
                   _benchmark=benchmark)


def _avalanche_benchmark(splits: dict[str, list[TaskData]], spec: DataSpec):
    with warnings.catch_warnings():
        # Avalanche imports qpsolvers for GEM, which warns on stderr when no QP solver is
        # installed; retain uses no QP, and the warning broke one-line error output.
        warnings.filterwarnings("ignore", message="no QP solver found")
        from avalanche.benchmarks.scenarios.dataset_scenario import benchmark_from_datasets
        from avalanche.benchmarks.scenarios.task_aware import with_task_labels

    classification = spec.task == "classification"
    bench = benchmark_from_datasets(**{  # Avalanche names a split by its stream, less "_stream"
        STREAMS[k].removesuffix("_stream"): [avalanche_dataset(d, classification) for d in v]
        for k, v in splits.items()})
    return with_task_labels(bench)


class _Pairs(torch.utils.data.Dataset):
    """(x, y) items of two aligned tensors; Avalanche appends the task label."""

    def __init__(self, x, y):
        self.x, self.y = x, y

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return self.x[i], self.y[i]


def avalanche_dataset(data: TaskData, classification: bool):
    """An AvalancheDataset over ``data`` yielding ``(x, y, t)``, carrying its tensors.

    ``targets`` is only set for classification (Avalanche's class-aware utilities read it);
    ``targets_task_labels`` is always set and appended to each item.
    """
    from avalanche.benchmarks.utils import AvalancheDataset, DataAttribute

    attributes = [DataAttribute(data.t.tolist(), "targets_task_labels", use_in_getitem=True)]
    if classification:
        attributes.append(DataAttribute(data.y.tolist(), "targets"))
    dataset = AvalancheDataset([_Pairs(data.x, data.y)], data_attributes=attributes)
    # materialise() takes this fast path; subsets and concatenations made later by Avalanche
    # are new objects without it and are materialised item by item.
    dataset.task_data = data
    return dataset


def materialise(dataset, task: int | None = None) -> TaskData:
    """The TaskData of an experience dataset: its kept tensors if they still match, else built
    (``(x, y)`` items take the task label ``task``)."""
    kept = getattr(dataset, "task_data", None)
    if isinstance(kept, TaskData) and _matches(kept, dataset):
        return kept
    return TaskData.from_dataset(dataset, task)


def _matches(data: TaskData, dataset) -> bool:
    n = len(data)
    if len(dataset) != n:
        return False
    for i in sorted({0, n // 2, n - 1}) if n else []:
        x, y, t = dataset[i][:3]
        if not (torch.equal(torch.as_tensor(x), data.x[i])
                and torch.equal(torch.as_tensor(y), data.y[i]) and int(t) == int(data.t[i])):
            return False
    return True
