"""Lightning's side of a run: one Trainer per experience, configured from ``TrainerConfig``.

A fresh Trainer per experience keeps each task's fit independent (epochs, step counts,
optimizer state), while the process group, the model and the W&B run persist across fits.
Lightning's own logger, checkpointing and sanity checks are off: the task loop logs with a
stream-wide step and writes its own checkpoints. The Trainer fits ``LightningSystem``, which
hands the hooks to the ``ContinualSystem``, as the lean loop calls them.

Only the Trainer engine (``harness.config.engine_for``) imports this module, which with the
DDP strategy ``harness.runtime.distributed`` builds is all of retain that imports Lightning:
``import lightning`` takes 4.6-6.2 s beyond torch here (torchmetrics, torchvision,
torch._dynamo); 3-5 s of it a run saves, since torch's optimizers import torch._dynamo
anyway (~1.4 s).
"""

from __future__ import annotations

import logging
import os
import sys
import warnings

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback, TQDMProgressBar

from harness.config import TrainerConfig
from harness.core.resume import StepCheckpoint
from harness.core.system import ContinualSystem
from harness.runtime.distributed import FAULT_ENV, fault_point, make_strategy

for _name in ("lightning.pytorch.utilities.rank_zero", "lightning.pytorch.accelerators.cuda",
              "lightning.fabric.utilities.seed", "lightning.pytorch.utilities.distributed"):
    logging.getLogger(_name).setLevel(logging.WARNING)
# Our loader slices in-memory tensors: worker processes would only add overhead.
warnings.filterwarnings("ignore", ".*does not have many workers.*")
warnings.filterwarnings("ignore", ".*`training_step` returned `None`.*")
warnings.filterwarnings("ignore", ".*treespec, LeafSpec.*")  # torch/Lightning version skew


class LightningSystem(L.LightningModule):
    """A ``ContinualSystem`` as a LightningModule: the hooks of ``harness.core.loop.LEAN_HOOKS``,
    each handed to the system, and nothing else (a test keeps it so)."""

    def __init__(self, system: ContinualSystem):
        super().__init__()
        self.system = system

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        loss = self.system.training_step(batch, batch_idx)
        if self.system.logging_step() and self._trainer is not None and \
                self._trainer.progress_bar_callback is not None:
            # Lightning's self.log costs more than a small model's step: log at intervals.
            self.log("loss", loss.detach(), prog_bar=True, logger=False)
        return loss

    def configure_optimizers(self):
        return self.system.configure_optimizers()

    def on_before_optimizer_step(self, optimizer) -> None:
        self.system.on_before_optimizer_step(optimizer)

    def on_train_batch_end(self, outputs, batch, batch_idx: int) -> None:
        self.system.on_train_batch_end(outputs, batch, batch_idx)


class LightningStepCheckpoint(Callback):
    """``harness.core.resume.StepCheckpoint`` as a callback of Lightning's Trainer."""

    def __init__(self, steps: StepCheckpoint):
        self.steps, self.last_step = steps, 0

    def on_train_start(self, trainer, pl_module) -> None:
        self.steps.on_start(trainer.optimizers[0], _scaler(trainer))

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step == self.last_step:  # accumulating gradients: no step yet
            return
        self.last_step = trainer.global_step
        # the module's own on_train_batch_end (which counts this batch) runs after ours
        if self.steps.after_step(trainer.global_step, trainer.current_epoch, batch_idx,
                                 trainer.optimizers[0], _scaler(trainer), pl_module.device,
                                 pl_module.system.stream_step + 1):
            trainer.should_stop = True


def _scaler(trainer):
    return getattr(trainer.precision_plugin, "scaler", None)


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
        ctx = pl_module.system.ctx
        if batch_idx == 0 and trainer.current_epoch == 0 and ctx is not None:
            fault_point(ctx.task_id)


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
