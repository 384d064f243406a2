"""Class-incremental splitting shared by the image-like scenarios: class order -> task groups."""

from __future__ import annotations

import numpy as np

from harness.errors import UserError
from scenarios.splits import class_task_data


def check_class_order(order: list[int], n_experiences: int, n_classes: int) -> None:
    """``order`` is a permutation of 0..n_classes-1 that ``n_experiences`` groups split evenly."""
    if sorted(order) != list(range(n_classes)):
        raise UserError(f"scenario.class_order must be a permutation of 0..{n_classes - 1}, "
                        f"got {order}")
    if n_experiences < 1 or n_classes % n_experiences:
        raise UserError(f"scenario.n_experiences={n_experiences} must divide the "
                        f"{n_classes} classes")


def class_groups(order: list[int], n_experiences: int, n_classes: int, seed: int,
                 shuffle: bool) -> list[list[int]]:
    """Consecutive groups of ``order`` (checked to be a permutation of 0..n_classes-1)."""
    check_class_order(order, n_experiences, n_classes)
    if shuffle:
        order = list(np.random.default_rng(seed).permutation(order))
    k = n_classes // n_experiences
    return [[int(c) for c in order[i * k:(i + 1) * k]] for i in range(n_experiences)]


def split_by_class(x, y, groups: list[list[int]]):
    """One classification TaskData per group of classes, task label = group index."""
    return [class_task_data(x[np.isin(y, g)], y[np.isin(y, g)], i) for i, g in enumerate(groups)]


def group_names(prefix: str, groups: list[list[int]]) -> list[str]:
    return [f"{prefix} {'+'.join(map(str, g))}" for g in groups]
