"""The stability gap reproduced (De Lange et al., ICLR 2023) with the shipped experiment: on
class-incremental Split-Digits with replay, task 1's accuracy falls far below its end-of-task
value right after task 2 starts, then recovers, and the end-of-task matrix never shows it."""

from pathlib import Path

import pytest
from conftest import quick

from harness import config
from harness.experiment.run import run

EXPERIMENT = Path(__file__).resolve().parents[1] / "configs" / "experiments" / "stability_gap.yaml"


@pytest.mark.usefixtures("one_thread")
def test_replay_dips_right_after_the_task_switch_and_recovers():
    # The shipped settings, shrunk: two tasks of five classes, two epochs (44 steps) each.
    cfg = config.load(str(EXPERIMENT), quick("scenario.n_experiences=2", "trainer.max_epochs=2",
                                             "name=gap"))
    assert config.strategy_names(cfg) == ["replay"] and cfg.eval.every_n_steps == 5
    results = run(cfg)
    (dip,) = results["stability_gap"]["accuracy"]  # the transition to task 2, on task 1
    steps = results["per_task"][1]["steps"]
    assert dip["boundary"] >= 0.8  # task 1 learned
    assert dip["worst"] <= dip["boundary"] - 0.3  # clearly below its end-of-task value ...
    assert dip["worst_steps"] <= steps / 3  # ... right after task 2 begins ...
    assert dip["recovery_steps"] is not None and dip["end"] >= dip["boundary"] - 0.1  # ... back
    s = results["summary"]
    assert s["accuracy/worst"] < dip["boundary"]  # min-ACC below the boundary accuracy
    # the end-of-task matrix (full test set) sees none of it
    assert results["matrices"]["accuracy"][1][0] >= dip["boundary"] - 0.1
    print(f"task 1: {dip['boundary']:.2f} at the switch, {dip['worst']:.2f} after "
          f"{dip['worst_steps']} steps, {dip['end']:.2f} at the end of task 2")
