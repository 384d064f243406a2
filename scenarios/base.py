"""The Scenario every builder returns: an Avalanche benchmark plus what the harness needs to use it.

Builders prepare their splits as tensors (``TaskData``), then ``Scenario.from_splits`` wraps each
split in an ``AvalancheDataset`` and calls ``benchmark_from_datasets``, so Avalanche users get a
normal benchmark (``train_stream``, ``test_stream`` and, when built, ``valid_stream``) whose items
are ``(x, y, t)``.

Why keep the tensors: materialising an experience through Avalanche's per-item ``__getitem__``
costs seconds for a few thousand sequences, and every task loop asks for every split several
times. ``train_data(i)`` returns the tensors the experience was built from, after checking that
they still are what the experience holds (length and a few items), and caches the result. A
benchmark whose datasets were replaced or subset falls back to the generic, slow path.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from harness.data import TaskData
from harness.models.base import DataSpec
from scenarios.tokenize import IGNORE, PAD

SETTINGS = ("class-il", "domain-il", "task-il")
STREAMS = {"train": "train_stream", "test": "test_stream", "val": "valid_stream"}


@dataclass
class Scenario:
    """A task stream: the Avalanche benchmark, its data spec, task names and setting."""

    name: str
    benchmark: Any  # avalanche CLScenario with train_stream, test_stream (and valid_stream)
    spec: DataSpec
    task_names: list[str]
    setting: str  # "class-il" | "domain-il" | "task-il"
    classes_per_task: list[list[int]] | None = None  # classification only
    info: dict = field(default_factory=dict)  # preparation facts: seconds, bytes, cache hits
    _cache: dict = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self):
        if self.setting not in SETTINGS:
            raise ValueError(f"setting must be one of {SETTINGS}, got {self.setting!r}")
        if len(self.task_names) != self.n_experiences:
            raise ValueError(f"{len(self.task_names)} task names for "
                             f"{self.n_experiences} experiences")

    @property
    def n_experiences(self) -> int:
        return len(self.benchmark.train_stream)

    def train_data(self, i: int) -> TaskData:
        return self._materialise("train", i)

    def test_data(self, i: int) -> TaskData:
        return self._materialise("test", i)

    def val_data(self, i: int) -> TaskData | None:
        if not hasattr(self.benchmark, STREAMS["val"]):
            return None
        return self._materialise("val", i)

    def _materialise(self, split: str, i: int) -> TaskData:
        if (split, i) not in self._cache:
            stream = getattr(self.benchmark, STREAMS[split])
            self._cache[split, i] = materialise(stream[i].dataset)
        return self._cache[split, i]

    @classmethod
    def from_splits(cls, name: str, spec: DataSpec, task_names: list[str], setting: str,
                    train: list[TaskData], test: list[TaskData],
                    val: list[TaskData] | None = None,
                    classes_per_task: list[list[int]] | None = None,
                    info: dict | None = None) -> Scenario:
        """Build the Avalanche benchmark from per-experience tensors (one TaskData each)."""
        with warnings.catch_warnings():
            # Avalanche imports qpsolvers for GEM, which warns on stderr when no QP solver is
            # installed; retain uses no QP, and the warning broke one-line error output.
            warnings.filterwarnings("ignore", message="no QP solver found")
            from avalanche.benchmarks.scenarios.dataset_scenario import benchmark_from_datasets
            from avalanche.benchmarks.scenarios.task_aware import with_task_labels

        streams = {"train": train, "test": test}
        if val is not None:
            streams["valid"] = val
        lengths = {k: len(v) for k, v in streams.items()}
        if len(set(lengths.values())) != 1:
            raise ValueError(f"streams differ in length: {lengths}")
        bench = benchmark_from_datasets(
            **{k: [avalanche_dataset(d, classification=spec.task == "classification")
                   for d in v] for k, v in streams.items()})
        return cls(name, with_task_labels(bench), spec, list(task_names), setting,
                   classes_per_task, dict(info or {}))


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


def materialise(dataset) -> TaskData:
    """The TaskData of an experience dataset: its kept tensors if they still match, else built."""
    kept = getattr(dataset, "task_data", None)
    if isinstance(kept, TaskData) and _matches(kept, dataset):
        return kept
    return TaskData.from_dataset(dataset)


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


def lm_task_data(windows, task: int, pad_id: int = PAD) -> TaskData:
    """Next-token TaskData from packed ``(N, T + 1)`` windows (see scenarios.tokenize.pack).

    A padding target is never a token to predict: it becomes -100 (no loss).
    """
    w = torch.from_numpy(np.asarray(windows).astype(np.int64))
    y = w[:, 1:].clone()
    y[y == pad_id] = IGNORE
    return TaskData(w[:, :-1].contiguous(), y, torch.full((len(w),), task, dtype=torch.long))


def class_task_data(x, y, task: int) -> TaskData:
    """Classification TaskData: inputs as given (float features or long tokens), long labels.

    Arrays are copied: memory-mapped cache arrays are read-only and torch needs writable memory.
    """
    x = x if isinstance(x, torch.Tensor) else torch.from_numpy(np.array(x))
    y = torch.from_numpy(np.array(y, dtype=np.int64))
    return TaskData(x, y, torch.full((len(y),), task, dtype=torch.long))
