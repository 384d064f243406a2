"""``LightningSystem`` is a LightningModule a Lightning user can take out: fitted by a plain
``lightning.Trainer`` with the user's own callback, outside retain's task loop, it trains as
retain's loop does. And ``trainer.callbacks`` adds Lightning callbacks to runs on the Trainer
engine (with a clear error on the lean engine)."""

import json
from pathlib import Path

import lightning as L
import pytest
from conftest import quick

from harness import config
from harness.cli import main
from harness.core.trainer import LightningSystem
from harness.experiment.run import run

DIGITS = ["scenario.name=split-digits", "scenario.n_experiences=2", "model.name=mlp",
          "trainer.max_epochs=2", "trainer.batch_size=64", "strategy=[replay,ewc]",
          "eval_init=false"]

pytestmark = pytest.mark.usefixtures("one_thread")


class CountBatches(L.Callback):
    """A user's own callback: counts the batches and records the loss of each."""

    def __init__(self):
        self.losses = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.losses.append(float(outputs["loss"]))


def plain_trainer(callback) -> L.Trainer:
    return L.Trainer(max_epochs=2, accelerator="cpu", devices=1, logger=False,
                     enable_checkpointing=False, enable_progress_bar=False,
                     enable_model_summary=False, deterministic=True, callbacks=[callback],
                     use_distributed_sampler=False)


def test_a_plain_trainer_with_a_users_callback_fits_it_as_retains_loop_does():
    cfg = config.load(None, quick(*DIGITS, "trainer.engine=lightning"))
    module = LightningSystem.from_config(cfg)
    rows, counted = [], CountBatches()
    for i in range(module.scenario.n_experiences):
        loader = module.begin_task(i)
        plain_trainer(counted).fit(module, train_dataloaders=loader)
        rows.append(module.end_task())
    replay = module.system.strategies[0]
    assert len(replay.buffer) > 0  # after_task ran: the memory holds the first task
    steps = module.system.stream_step
    assert len(counted.losses) == steps > 0  # the user's callback saw every batch
    assert counted.losses[-1] < counted.losses[0]

    reference = run(cfg)  # the same config through retain's own task loop (Trainer engine)
    assert [row["accuracy"] for row in rows] == reference["matrices"]["accuracy"]
    assert steps == sum(t["steps"] for t in reference["per_task"])


def test_trainer_callbacks_add_lightning_callbacks_whose_logs_reach_the_run_metrics(tmp_path):
    results = run(config.load(None, quick(
        *DIGITS, "trainer.callbacks=[lightning.pytorch.callbacks:LearningRateMonitor]",
        "name=lr")))
    lines = [json.loads(line) for line in
             Path(results["run_dir"], "metrics.jsonl").read_text().splitlines()]
    lr = [line for line in lines if any(k.startswith("lr-") for k in line)]
    assert lr and all(next(v for k, v in line.items() if k.startswith("lr-")) == 3e-3
                      for line in lr)
    steps = [line["step"] for line in lr]
    assert steps == sorted(steps) and steps[-1] > 0  # stream-wide steps, not per-fit ones


@pytest.mark.parametrize("callbacks, extra, message", [
    ("[lightning.pytorch.callbacks:Timer]", ["trainer.engine=lean"],
     "use trainer.engine=lightning"),
    ("[not_a_module:Thing]", [], "cannot load 'not_a_module:Thing'"),
    ("[lightning.pytorch.callbacks:NoSuchCallback]", [], "cannot load"),
    ("[harness.config:TrainerConfig]", [], "is not a Lightning Callback class"),
    ("[lightning.pytorch.callbacks:ModelPruning]", [], "cannot be built without arguments"),
    ("[lightning.pytorch.callbacks.Timer]", [], "is not of the form module:Class"),
])
def test_bad_callbacks_are_one_line_before_any_run_directory(callbacks, extra, message, capsys,
                                                             tmp_path):
    code = main(["run", *quick(*DIGITS, f"trainer.callbacks={callbacks}", *extra,
                               f"out_dir={tmp_path / 'runs'}")])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert err.startswith("retain: error:") and len(err.splitlines()) == 1
    assert message in err
    assert not (tmp_path / "runs").exists()
