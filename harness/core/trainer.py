"""Lightning's side of retain: ``LightningSystem`` (the LightningModule a Lightning user can take
out and fit with any Trainer) and the Trainer engine (one Trainer per experience).

A fresh Trainer per experience keeps each task's fit independent (epochs, step counts,
optimizer state), while the process group, the model and the W&B run persist across fits.
Lightning's own checkpointing and sanity checks are off: the task loop writes its own
checkpoints. Its logger is ``StreamLogger``, which hands whatever Lightning callbacks log
(``trainer.callbacks``: a learning-rate monitor, say) to the run's metrics, stepped by the
stream-wide step.

Only the Trainer engine (``harness.config.engine_for``) and ``LightningSystem``'s users import
this module; with the DDP strategy ``harness.runtime.distributed`` builds it is all of retain
that imports Lightning, which a run on the lean engine never pays for.
"""

from __future__ import annotations

import importlib
import logging
import os
import sys
import warnings

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback, TQDMProgressBar
from lightning.pytorch.loggers.logger import Logger

from harness.api import Scenario
from harness.config import TrainerConfig
from harness.core.build import build
from harness.core.evaluate import evaluate
from harness.core.resume import StepCheckpoint
from harness.core.system import ContinualSystem
from harness.core.task import begin_task, end_task
from harness.errors import UserError
from harness.runtime.distributed import FAULT_ENV, fault_point, make_strategy
from harness.runtime.seed import seed_everything

for _name in ("lightning.pytorch.utilities.rank_zero", "lightning.pytorch.accelerators.cuda",
              "lightning.fabric.utilities.seed", "lightning.pytorch.utilities.distributed"):
    logging.getLogger(_name).setLevel(logging.WARNING)
# Our loader slices in-memory tensors: worker processes would only add overhead.
warnings.filterwarnings("ignore", ".*does not have many workers.*")
warnings.filterwarnings("ignore", ".*`training_step` returned `None`.*")
warnings.filterwarnings("ignore", ".*treespec, LeafSpec.*")  # torch/Lightning version skew


class LightningSystem(L.LightningModule):
    """A ``ContinualSystem`` as a LightningModule: a memory-augmented LM (or any registered
    model) with its heads and continual-learning strategies, fitted one experience at a time.

    It overrides the hooks of ``harness.core.loop.LEAN_HOOKS``, each handed to the system, and
    no other Lightning hook (a test keeps it so), so it trains the same under retain's loop and
    under a plain ``lightning.Trainer`` with your own callbacks, loggers and profilers::

        cfg = config.load(None, ["model.name=gpt", "strategy=[replay,distill]"])
        module = LightningSystem.from_config(cfg)
        for i in range(module.scenario.n_experiences):
            loader = module.begin_task(i)          # strategies' before_task and train_loader
            L.Trainer(max_epochs=1, callbacks=[MyCallback()]).fit(module, loader)
            scores = module.end_task()             # after_task; every test experience scored
    """

    def __init__(self, system: ContinualSystem, scenario: Scenario | None = None,
                 trainer_cfg: TrainerConfig | None = None, seed: int = 0):
        super().__init__()
        self.system = system
        self.scenario = scenario  # the task stream begin_task reads (optional in retain's loop)
        self.trainer_cfg = trainer_cfg or system.trainer_cfg
        self.seed = seed

    @classmethod
    def from_config(cls, cfg) -> LightningSystem:
        """The model, scenario and strategies a resolved ``harness.config`` names."""
        seed_everything(cfg.seed)
        strategies, scenario, net = build(cfg)
        return cls(ContinualSystem(net, strategies, cfg.trainer), scenario, cfg.trainer, cfg.seed)

    def begin_task(self, i: int):
        """Start experience ``i`` of ``self.scenario``: returns its training loader."""
        if self.scenario is None:
            raise ValueError("begin_task needs the LightningSystem's scenario")
        return begin_task(self.system, self.scenario, self.trainer_cfg, self.seed, i)

    def end_task(self) -> dict[str, list[float]]:
        """Finish the experience just fitted (the strategies' ``after_task``) and score every
        test experience: ``{metric: [score on experience j, ...]}``, one row of the matrix."""
        end_task(self.system)
        tests = [self.scenario.test_data(j) for j in range(self.scenario.n_experiences)]
        return evaluate(self.system.net, tests, self.trainer_cfg.eval_batch_size,
                        self.trainer_cfg.precision)

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        loss = self.system.training_step(batch, batch_idx)
        if self.system.logging_step() and self._trainer is not None and \
                self._trainer.progress_bar_callback is not None:
            # Lightning's self.log costs more than a small model's step: log at intervals.
            self.log("loss", loss.detach(), prog_bar=True, logger=False)
        return loss

    def configure_optimizers(self):
        schedule = self.system.schedule
        if schedule.active and not schedule.total and self._trainer is not None:
            # a fit under a Trainer of your own: the schedule spans what that Trainer will run
            # (retain's loop starts it again, with a resume's position, when training starts)
            schedule.start(int(self._trainer.estimated_stepping_batches))
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


def make_trainer(cfg: TrainerConfig, label: str, uses_gpu: bool,
                 system: ContinualSystem | None = None) -> L.Trainer:
    deterministic = cfg.deterministic and ("warn" if uses_gpu else True)
    # Bars only on a terminal: in CI logs and files they are thousands of carriage returns.
    bars = cfg.progress and sys.stderr.isatty()
    callbacks = [TaskProgressBar(label, cfg.max_epochs)] if bars else []
    if os.environ.get(FAULT_ENV):
        callbacks.append(FaultHook())
    callbacks += [cls() for cls in callback_classes(cfg.callbacks)]
    # Callbacks such as LearningRateMonitor need a logger; without them there is nothing to log
    logger = StreamLogger(system) if cfg.callbacks and system is not None else False
    return L.Trainer(
        accelerator=cfg.accelerator, devices=cfg.devices, num_nodes=cfg.num_nodes,
        strategy=make_strategy(cfg),
        precision=cfg.precision, max_epochs=cfg.max_epochs, max_steps=cfg.max_steps,
        gradient_clip_val=cfg.grad_clip or None,
        accumulate_grad_batches=cfg.accumulate_grad_batches, deterministic=deterministic,
        logger=logger, log_every_n_steps=cfg.log_every_n_steps, enable_checkpointing=False,
        enable_model_summary=False, enable_progress_bar=bars, num_sanity_val_steps=0,
        limit_val_batches=0, use_distributed_sampler=False, callbacks=callbacks,
    )


def callback_classes(specs: list[str]) -> list[type[Callback]]:
    """The Lightning callback classes ``trainer.callbacks`` names (``module:Class``), each
    checked to build without arguments: a bad name is one line before the run starts."""
    classes = []
    for spec in specs:
        module, _, name = spec.partition(":")
        try:
            cls = getattr(importlib.import_module(module), name)
        except (ImportError, AttributeError) as err:
            raise UserError(f"trainer.callbacks: cannot load '{spec}' "
                            f"({type(err).__name__}: {err})") from None
        if not (isinstance(cls, type) and issubclass(cls, Callback)):
            raise UserError(f"trainer.callbacks: '{spec}' is not a Lightning Callback class")
        try:
            cls()
        except Exception as err:
            raise UserError(f"trainer.callbacks: '{spec}' cannot be built without arguments "
                            f"({type(err).__name__}: {err}); subclass it with its arguments "
                            "in a module of your own") from None
        classes.append(cls)
    return classes


class StreamLogger(Logger):
    """The Trainer's logger: hands what Lightning callbacks log to the run's metrics sink
    (metrics.jsonl and W&B on rank zero), at the stream-wide step like every retain metric."""

    def __init__(self, system: ContinualSystem):
        super().__init__()
        self.system = system

    @property
    def name(self) -> str:
        return "retain"

    @property
    def version(self) -> int:
        return 0

    def log_hyperparams(self, params, *args, **kwargs) -> None:
        pass  # the run's config is logged by retain itself

    def log_metrics(self, metrics: dict, step: int | None = None) -> None:
        if self.system.on_metrics is not None:
            self.system.on_metrics(self.system.stream_step,
                                   {k: float(v) for k, v in metrics.items()})
