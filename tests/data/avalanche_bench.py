"""Avalanche benchmark factories for tests/test_scenario_avalanche.py and the conformance suite
(``scenario.factory=tests/data/avalanche_bench.py:<name>``)."""

from __future__ import annotations

import torch
from torch.utils.data import TensorDataset


def blobs(n: int = 200, dim: int = 6, n_classes: int = 4, seed: int = 0):
    """Labelled Gaussian blobs, split 3:1 into train and test (targets set for Avalanche)."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % n_classes
    x = 2 * torch.randn(n_classes, dim, generator=g)[y] + torch.randn(n, dim, generator=g)
    cut = 3 * n // 4
    train, test = TensorDataset(x[:cut], y[:cut]), TensorDataset(x[cut:], y[cut:])
    train.targets, test.targets = y[:cut].tolist(), y[cut:].tolist()
    return train, test


def class_incremental(n_experiences: int = 2, seed: int = 0):
    """Avalanche's nc_benchmark: items (x, y, t), every t 0."""
    from avalanche.benchmarks import nc_benchmark

    train, test = blobs(seed=seed)
    return nc_benchmark(train, test, n_experiences=n_experiences, task_labels=False, seed=seed,
                        fixed_class_order=list(range(4)))


def pairs(with_validation: bool = False):
    """Items (x, y) without a task label: benchmark_from_datasets over plain tensor datasets."""
    from avalanche.benchmarks import benchmark_from_datasets
    from avalanche.benchmarks.utils import AvalancheDataset

    train, test = blobs()
    halves = [slice(0, 75), slice(75, 150)], [slice(0, 25), slice(25, 50)]
    streams = {name: [AvalancheDataset([TensorDataset(*data.tensors[0:2])]).subset(
        range(part.start, part.stop)) for part in parts]
        for name, data, parts in (("train", train, halves[0]), ("test", test, halves[1]))}
    if with_validation:
        streams["valid"] = streams["test"]
    return benchmark_from_datasets(**streams)


def not_a_benchmark():
    return [1, 2, 3]
