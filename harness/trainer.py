"""One Lightning Trainer per experience, configured from ``TrainerConfig``.

A fresh Trainer per experience keeps each task's fit independent (epochs, step counts,
optimizer state), while the process group, the model and the W&B run persist across fits.
Lightning's own logger, checkpointing and sanity checks are off: the task loop logs with a
stream-wide step and writes its own checkpoints.
"""

from __future__ import annotations

import logging
import os
import sys
import warnings

import lightning as L
from lightning.pytorch.callbacks import Callback, TQDMProgressBar

from harness.config import TrainerConfig
from harness.distributed import FAULT_ENV, fault_point, make_strategy

for _name in ("lightning.pytorch.utilities.rank_zero", "lightning.pytorch.accelerators.cuda",
              "lightning.fabric.utilities.seed", "lightning.pytorch.utilities.distributed"):
    logging.getLogger(_name).setLevel(logging.WARNING)
# Our loader slices in-memory tensors: worker processes would only add overhead.
warnings.filterwarnings("ignore", ".*does not have many workers.*")
warnings.filterwarnings("ignore", ".*`training_step` returned `None`.*")
warnings.filterwarnings("ignore", ".*treespec, LeafSpec.*")  # torch/Lightning version skew


class TaskProgressBar(TQDMProgressBar):
    """Epoch bars labelled with the experience: ``task 2/5 (bible) epoch 1/2``."""

    def __init__(self, label: str, max_epochs: int):
        super().__init__(leave=False)
        self.label, self.max_epochs = label, max_epochs

    def on_train_epoch_start(self, trainer, *args) -> None:
        super().on_train_epoch_start(trainer, *args)
        self.train_progress_bar.set_description(
            f"{self.label} epoch {trainer.current_epoch + 1}/{self.max_epochs}")


class FaultHook(Callback):
    """``RETAIN_RANK_FAULT`` (tests only): fail one rank at the first batch of one task."""

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if batch_idx == 0 and trainer.current_epoch == 0 and pl_module.ctx is not None:
            fault_point(pl_module.ctx.task_id)


def make_trainer(cfg: TrainerConfig, label: str, uses_gpu: bool) -> L.Trainer:
    deterministic = cfg.deterministic and ("warn" if uses_gpu else True)
    # Bars only on a terminal: in CI logs and files they are thousands of carriage returns.
    bars = cfg.progress and sys.stderr.isatty()
    callbacks = [TaskProgressBar(label, cfg.max_epochs)] if bars else []
    if os.environ.get(FAULT_ENV):
        callbacks.append(FaultHook())
    return L.Trainer(
        accelerator=cfg.accelerator, devices=cfg.devices, num_nodes=cfg.num_nodes,
        strategy=make_strategy(cfg),
        precision=cfg.precision, max_epochs=cfg.max_epochs, max_steps=cfg.max_steps,
        gradient_clip_val=cfg.grad_clip or None,
        accumulate_grad_batches=cfg.accumulate_grad_batches, deterministic=deterministic,
        logger=False, enable_checkpointing=False, enable_model_summary=False,
        enable_progress_bar=bars, num_sanity_val_steps=0, limit_val_batches=0,
        use_distributed_sampler=False, callbacks=callbacks,
    )
