"""Split-Digits: scikit-learn's 8x8 handwritten digits, class-incremental, two classes per task.

The 1,797 images are split once into 1,400 train / 397 test, stratified with random state 0,
as in the Avalanche reference run (NOTES.md: Naive 0.19, Replay(200) 0.91 final accuracy), so
strategies can be checked against those numbers. Pixels are scaled from 0..16 to [0, 1].

    retain run scenario.name=split-digits scenario.class_order=[1,0,3,2,5,4,7,6,9,8]
"""

from __future__ import annotations

import functools
import importlib.util
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from harness.api import DataSpec, Scenario
from harness.registry import register_scenario
from scenarios.cache import cache_dir_option, cache_flag, file_fingerprint, prepare
from scenarios.classes import check_class_order, class_groups, group_names, split_by_class

N_TRAIN, N_TEST, SPLIT_SEED = 1400, 397, 0
DIGITS_CACHE_HELP = ("keep the digits' split in the preparation cache (a run then skips "
                     "importing scikit-learn)")


@dataclass
class SplitDigitsConfig:
    name: str = "split-digits"
    n_experiences: int = field(default=5, metadata={"help": "number of tasks; must divide the "
                                                            "number of classes in class_order",
                                                    "min": 1})
    class_order: list[int] = field(default_factory=lambda: list(range(10)), metadata={
        "help": "classes in the order they arrive, consecutive groups form the tasks",
        "min": 0, "max": 9})
    shuffle_classes: bool = field(default=False, metadata={
        "help": "permute class_order with the run seed (the reference setup keeps 0..9)"})
    cache: bool = cache_flag(DIGITS_CACHE_HELP)
    cache_dir: str = cache_dir_option()

    def check(self) -> None:
        check_class_order(list(self.class_order), self.n_experiences, 10)


def digits_csv() -> Path:
    """scikit-learn's copy of the digits, found without importing scikit-learn."""
    spec = importlib.util.find_spec("sklearn")
    return Path(spec.submodule_search_locations[0]) / "datasets" / "data" / "digits.csv.gz"


def digits_split(cache: bool = True, cache_dir: str = "") -> tuple[np.ndarray, ...]:
    """The fixed reference split: (x_train, y_train, x_test, y_test), x float32 in [0, 1].

    Read-only and made once per process (a sweep or a notebook builds the scenario again and
    again). It is kept in the preparation cache, so a run does not import scikit-learn (1-1.5
    s) once it is there.
    """
    return _digits_split(bool(cache), str(cache_dir))  # one process cache key per setting


@functools.cache
def _digits_split(cache: bool, cache_dir: str) -> tuple[np.ndarray, ...]:
    from importlib.metadata import version

    def build() -> dict[str, np.ndarray]:
        from sklearn.datasets import load_digits
        from sklearn.model_selection import train_test_split

        x, y = load_digits(return_X_y=True)
        x_tr, x_te, y_tr, y_te = train_test_split(x, y, train_size=N_TRAIN, test_size=N_TEST,
                                                  stratify=y, random_state=SPLIT_SEED)
        return {"x_train": x_tr, "y_train": y_tr, "x_test": x_te, "y_test": y_te}

    # scikit-learn's version is in the key in case its split algorithm changes
    key = {"n_train": N_TRAIN, "n_test": N_TEST, "seed": SPLIT_SEED,
           "scikit-learn": version("scikit-learn")}
    arrays = prepare("digits", key, file_fingerprint([digits_csv()]), build, cache_dir,
                     cache).arrays
    x_tr, x_te = ((np.asarray(arrays[k]) / 16.0).astype(np.float32) for k in ("x_train", "x_test"))
    split = x_tr, np.asarray(arrays["y_train"]), x_te, np.asarray(arrays["y_test"])
    for array in split:
        array.flags.writeable = False
    return split


@register_scenario("split-digits", config=SplitDigitsConfig)
def build(cfg: SplitDigitsConfig, seed: int) -> Scenario:
    x_tr, y_tr, x_te, y_te = digits_split(cfg.cache, cfg.cache_dir)
    groups = class_groups(list(cfg.class_order), cfg.n_experiences, 10, seed, cfg.shuffle_classes)
    spec = DataSpec(kind="vectors", task="classification", input_dim=64, n_classes=10)
    return Scenario.from_splits(
        cfg.name, spec, group_names("digits", groups), "class-il",
        split_by_class(x_tr, y_tr, groups), split_by_class(x_te, y_te, groups),
        classes_per_task=groups)
