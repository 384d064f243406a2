"""Split-Digits: scikit-learn's 8x8 handwritten digits, class-incremental, two classes per task.

The 1,797 images are split once into 1,400 train / 397 test, stratified with random state 0,
as in the Avalanche reference run (NOTES.md: Naive 0.19, Replay(200) 0.91 final accuracy), so
strategies can be checked against those numbers. Pixels are scaled from 0..16 to [0, 1].

    retain run scenario.name=split-digits scenario.class_order=[1,0,3,2,5,4,7,6,9,8]
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

import numpy as np

from harness.models.base import DataSpec
from harness.registry import register_scenario
from scenarios.base import Scenario
from scenarios.classes import class_groups, group_names, split_by_class

N_TRAIN, N_TEST, SPLIT_SEED = 1400, 397, 0


@dataclass
class SplitDigitsConfig:
    name: str = "split-digits"
    n_experiences: int = field(default=5, metadata={"help": "number of tasks; must divide the "
                                                            "number of classes in class_order"})
    class_order: list[int] = field(default_factory=lambda: list(range(10)), metadata={
        "help": "classes in the order they arrive, consecutive groups form the tasks"})
    shuffle_classes: bool = field(default=False, metadata={
        "help": "permute class_order with the run seed (the reference setup keeps 0..9)"})


@functools.cache
def digits_split() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The fixed reference split: (x_train, y_train, x_test, y_test), x float32 in [0, 1].

    Read-only and made once per process: parsing the CSV and splitting takes 8 ms, 5% of a
    whole Split-Digits run, and a sweep or a notebook builds the scenario again and again.
    """
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    x, y = load_digits(return_X_y=True)
    x = (x / 16.0).astype(np.float32)
    x_tr, x_te, y_tr, y_te = train_test_split(x, y, train_size=N_TRAIN, test_size=N_TEST,
                                              stratify=y, random_state=SPLIT_SEED)
    for array in (x_tr, y_tr, x_te, y_te):
        array.flags.writeable = False
    return x_tr, y_tr, x_te, y_te


@register_scenario("split-digits", config=SplitDigitsConfig)
def build(cfg: SplitDigitsConfig, seed: int) -> Scenario:
    x_tr, y_tr, x_te, y_te = digits_split()
    groups = class_groups(list(cfg.class_order), cfg.n_experiences, 10, seed, cfg.shuffle_classes)
    spec = DataSpec(kind="vectors", task="classification", input_dim=64, n_classes=10)
    return Scenario.from_splits(
        cfg.name, spec, group_names("digits", groups), "class-il",
        split_by_class(x_tr, y_tr, groups), split_by_class(x_te, y_te, groups),
        classes_per_task=groups)
