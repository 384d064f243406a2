"""Do the regularisers reduce forgetting where they should? Mean over seeds, with std.

* Domain-IL, ``configs/experiments/permuted_digits.yaml``: naive against EWC (separate and
  online) and SI. The classes never change, so a penalty that keeps the weights important for
  earlier permutations should keep their accuracy.
* Task-IL: naive against LwF (``distill``) on Permuted-Digits with one head per task (task k
  predicts its own ten classes 10k..10k+9, the usual multi-head task-IL form of Permuted
  MNIST), and on Split-Digits with one two-class head per task. No scenario has a task-IL
  switch yet, so this bench builds both from the same splits with ``setting="task-il"``.

    python bench/strategy_forgetting.py
    python bench/strategy_forgetting.py --seeds 0 --part permuted
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from harness import config  # noqa: E402
from harness.registry import SCENARIOS, register_scenario  # noqa: E402

EXPERIMENTS = ROOT / "configs" / "experiments"
PARTS = {
    "permuted": (EXPERIMENTS / "permuted_digits.yaml", [], {
        "naive": ["strategy=naive"],
        "ewc": ["strategy.name=[ewc]", "strategy.ewc.lam=1000"],
        "ewc online": ["strategy.name=[ewc]", "strategy.ewc.lam=1000", "strategy.ewc.mode=online",
                       "strategy.ewc.gamma=0.9"],
        "si": ["strategy.name=[si]", "strategy.si.c=1", "strategy.si.xi=0.1"],
    }),
    "permuted task-il": (EXPERIMENTS / "permuted_digits.yaml",
                         ["scenario.name=permuted-digits-task-il"], {
        "naive": ["strategy=naive"],
        "distill": ["strategy.name=[distill]", "strategy.distill.alpha=1",
                    "strategy.distill.temperature=2"],
    }),
    "split task-il": (EXPERIMENTS / "split_digits.yaml", ["scenario.name=split-digits-task-il"], {
        "naive": ["strategy=naive"],
        "distill": ["strategy.name=[distill]", "strategy.distill.alpha=1",
                    "strategy.distill.temperature=2"],
    }),
}


@dataclass
class TaskILDigitsConfig:
    name: str = "split-digits-task-il"
    n_experiences: int = field(default=5, metadata={"help": "number of tasks"})


def register_task_il_digits() -> None:
    if "split-digits-task-il" in SCENARIOS.names():
        return
    from harness.api import DataSpec, Scenario
    from scenarios.permuted_digits import permutations
    from scenarios.split_digits import build, class_groups, digits_split, split_by_class
    from scenarios.splits import class_task_data

    @register_scenario("permuted-digits-task-il", config=TaskILDigitsConfig)
    def build_permuted(cfg: TaskILDigitsConfig, seed: int) -> Scenario:
        x_tr, y_tr, x_te, y_te = digits_split()
        perms = permutations(cfg.n_experiences, 64, 0, False)
        train = [class_task_data(x_tr[:, p], y_tr + 10 * i, i) for i, p in enumerate(perms)]
        test = [class_task_data(x_te[:, p], y_te + 10 * i, i) for i, p in enumerate(perms)]
        spec = DataSpec(kind="vectors", task="classification", input_dim=64,
                        n_classes=10 * cfg.n_experiences)
        heads = [list(range(10 * i, 10 * i + 10)) for i in range(cfg.n_experiences)]
        return Scenario.from_splits(cfg.name, spec, [f"permutation {i}" for i in range(
            cfg.n_experiences)], "task-il", train, test, classes_per_task=heads)

    @register_scenario("split-digits-task-il", config=TaskILDigitsConfig)
    def build_task_il(cfg: TaskILDigitsConfig, seed: int) -> Scenario:
        class_il = build(SCENARIOS.get("split-digits").config(n_experiences=cfg.n_experiences),
                         seed)
        x_tr, y_tr, x_te, y_te = digits_split()
        groups = class_groups(list(range(10)), cfg.n_experiences, 10, seed, False)
        return Scenario.from_splits(cfg.name, class_il.spec, class_il.task_names, "task-il",
                                    split_by_class(x_tr, y_tr, groups),
                                    split_by_class(x_te, y_te, groups), classes_per_task=groups)


def main(argv: list[str] | None = None) -> None:
    from harness.experiment.run import run

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--part", nargs="+", default=list(PARTS), choices=list(PARTS))
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    register_task_il_digits()
    for part in args.part:
        experiment, common, strategies = PARTS[part]
        print(f"\n{part}: {experiment.name}{' ' + ' '.join(common) if common else ''}, "
              f"seeds {args.seeds}")
        print(f"{'strategy':<11} {'final avg acc':>15} {'forgetting':>15} {'bwt':>7}")
        for name, overrides in strategies.items():
            accs, fgts, bwts = [], [], []
            for seed in args.seeds:
                cfg = config.load(str(experiment), [
                    *common, *overrides, f"seed={seed}", "logger=none", "trainer.progress=false",
                    "trainer.accelerator=cpu", f"out_dir={tempfile.mkdtemp()}"])
                summary = run(cfg)["summary"]
                accs.append(summary["accuracy/avg"])
                fgts.append(summary["accuracy/forgetting"])
                bwts.append(summary["accuracy/bwt"])
            print(f"{name:<11} {statistics.mean(accs):>7.3f} ± {statistics.pstdev(accs):.3f} "
                  f"{statistics.mean(fgts):>7.3f} ± {statistics.pstdev(fgts):.3f} "
                  f"{statistics.mean(bwts):>+7.3f}", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
