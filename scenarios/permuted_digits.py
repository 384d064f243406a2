"""Permuted-Digits: domain-incremental digits, each task a fixed permutation of the 64 pixels.

Every experience holds all ten classes of the same 1,400 / 397 split as Split-Digits, with its
own pixel permutation: the labels never change, the input distribution does (the small-scale
counterpart of Permuted MNIST). As in Avalanche's PermutedMNIST every task, the first included,
is permuted; set ``identity_first=true`` to keep the original images as task 0.

    retain run scenario.name=permuted-digits scenario.n_experiences=10
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from harness.api import DataSpec, Scenario
from harness.registry import register_scenario
from scenarios.cache import cache_dir_option, cache_flag
from scenarios.split_digits import DIGITS_CACHE_HELP, digits_split
from scenarios.splits import class_task_data


@dataclass
class PermutedDigitsConfig:
    name: str = "permuted-digits"
    n_experiences: int = field(default=5, metadata={"help": "number of permutations (tasks)",
                                                    "min": 1})
    identity_first: bool = field(default=False, metadata={
        "help": "task 0 uses the unpermuted images"})
    perm_seed: int = field(default=0, metadata={
        "help": "seed of the permutations; fixed so every run sees the same tasks",
        "min": 0, "max": 2**32 - 1})
    cache: bool = cache_flag(DIGITS_CACHE_HELP)
    cache_dir: str = cache_dir_option()


def permutations(n: int, dim: int, seed: int, identity_first: bool) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    perms = [rng.permutation(dim) for _ in range(n)]
    if identity_first and n:
        perms[0] = np.arange(dim)
    return perms


@register_scenario("permuted-digits", config=PermutedDigitsConfig)
def build(cfg: PermutedDigitsConfig, seed: int) -> Scenario:
    x_tr, y_tr, x_te, y_te = digits_split(cfg.cache, cfg.cache_dir)
    perms = permutations(cfg.n_experiences, 64, cfg.perm_seed, cfg.identity_first)
    train = [class_task_data(x_tr[:, p], y_tr, i) for i, p in enumerate(perms)]
    test = [class_task_data(x_te[:, p], y_te, i) for i, p in enumerate(perms)]
    spec = DataSpec(kind="vectors", task="classification", input_dim=64, n_classes=10)
    return Scenario.from_splits(cfg.name, spec, [f"permutation {i}" for i in range(len(perms))],
                                "domain-il", train, test,
                                classes_per_task=[list(range(10))] * len(perms))
