"""The lean engine: one process trains the ContinualSystem without Lightning's Trainer.

Why: continual-learning benchmarks are mostly small models on short tasks, where the
Trainer's per-step machinery (closures, hook dispatch, progress tracking, data fetcher) and
per-experience set-up cost more than the step itself (``bench overhead``;
docs/performance.md), and a run on this engine never imports Lightning. For one process this
loop drives the ContinualSystem through the same hooks as the Trainer, in the Trainer's order:

    training_step -> zero_grad (first batch of an accumulation window) -> backward
      -> on_before_optimizer_step -> clip the gradient norm -> optimizer.step
      -> step checkpoint -> on_train_batch_end

with the loss divided by ``accumulate_grad_batches`` and a step forced on an epoch's last
batch, as Lightning does. It calls the hooks ``harness.core.trainer.LightningSystem`` hands to the
system under the Trainer (a test keeps the two lists equal) and is tested to give
bit-identical results to the Trainer. DDP, several devices
and the precisions it does not implement run on Lightning's Trainer (``harness.config.engine_for``).
"""

from __future__ import annotations

import contextlib
import os
import sys

import torch
from torch.optim.optimizer import _global_optimizer_post_hooks, _global_optimizer_pre_hooks

from harness.config import TrainerConfig
from harness.core.resume import StepCheckpoint

# The LightningModule hooks the lean loop calls; LightningSystem must override no others.
LEAN_HOOKS = ("training_step", "configure_optimizers", "on_before_optimizer_step",
              "on_train_batch_end")


class LeanLoop:
    """Fits a ContinualSystem on one experience's loader, in this process."""

    def __init__(self, cfg: TrainerConfig, device: torch.device, label: str):
        self.cfg, self.device, self.label = cfg, device, label
        _set_determinism(cfg.deterministic, device)

    def fit(self, system, loader, steps: StepCheckpoint) -> None:
        cfg = self.cfg
        system.to(self.device)
        system.train()
        optimizer = system.configure_optimizers()
        params = [p for group in optimizer.param_groups for p in group["params"]]
        step = bare_step(optimizer)
        steps.on_start(optimizer)
        k, done = cfg.accumulate_grad_batches, 0
        autocast = (torch.autocast(self.device.type, dtype=torch.bfloat16)
                    if cfg.precision == "bf16-mixed" else contextlib.nullcontext())
        bar = _Bar(self.label, cfg, len(loader))
        with torch.enable_grad(), bar:
            for epoch in range(cfg.max_epochs):
                bar.new_epoch(epoch)
                for batch_idx, batch, last in _with_last(loader):
                    if batch.x.device != self.device:
                        batch = batch.to(self.device)
                    with autocast:
                        loss = system.training_step(batch, batch_idx)
                    if batch_idx % k == 0:  # optimizer.zero_grad(), without its wrappers
                        for p in params:
                            p.grad = None
                    (loss / k if k > 1 else loss).backward()
                    stop = False
                    if (batch_idx + 1) % k == 0 or last:
                        system.on_before_optimizer_step(optimizer)
                        if cfg.grad_clip:
                            torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
                        step()
                        done += 1
                        stop = steps.after_step(done, epoch, batch_idx, optimizer, None,
                                                self.device, system.stream_step + 1)
                    system.on_train_batch_end(loss, batch, batch_idx)
                    bar.update(system.stream_step, loss)
                    if stop or 0 < cfg.max_steps <= done:
                        return


def _with_last(loader):
    """``(index, batch, is_last)``: one batch read ahead, as Lightning's fetcher does, so the
    epoch's last batch is known (it always steps) and loaders are read in the same order."""
    it = iter(loader)
    try:
        batch = next(it)
    except StopIteration:
        return
    index = 0
    for upcoming in it:
        yield index, batch, False
        batch, index = upcoming, index + 1
    yield index, batch, True


def bare_step(optimizer):
    """``optimizer.step`` without the wrapper torch puts around every optimizer's step (a
    profiler ``record_function`` and loops over step hooks), a visible share of a small
    model's step on CPU. The wrapper runs whenever it could matter: a hook is registered or a
    profiler is recording. An optimizer whose ``step`` was replaced on the instance (an LR
    scheduler's step counter, a Lookahead-style wrapper) keeps its own."""
    bare = getattr(type(optimizer).step, "__wrapped__", None)
    if bare is None or "step" in vars(optimizer):
        return optimizer.step

    def step():
        if (torch.autograd._profiler_enabled() or _global_optimizer_pre_hooks
                or _global_optimizer_post_hooks or optimizer._optimizer_step_pre_hooks
                or optimizer._optimizer_step_post_hooks):
            optimizer.step()
        else:
            bare(optimizer)

    return step


def _set_determinism(deterministic: bool, device: torch.device) -> None:
    """What Lightning's ``Trainer(deterministic=...)`` sets, so both engines compute alike."""
    torch.use_deterministic_algorithms(deterministic,
                                       warn_only=deterministic and device.type == "cuda")
    if deterministic:
        os.environ["CUBLAS_WORKSPACE_CONFIG"] = ":4096:8"
        torch.backends.cudnn.benchmark = False


class _Bar:
    """An epoch progress bar on a terminal (nothing in CI logs and files), loss as postfix."""

    def __init__(self, label: str, cfg: TrainerConfig, n_batches: int):
        self.label, self.cfg, self.n = label, cfg, n_batches
        self.bar = None
        if cfg.progress and sys.stderr.isatty():
            from tqdm import tqdm

            self.bar = tqdm(total=n_batches, leave=False, dynamic_ncols=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        if self.bar is not None:
            self.bar.close()

    def new_epoch(self, epoch: int) -> None:
        if self.bar is not None:
            self.bar.reset(total=self.n)
            self.bar.set_description(f"{self.label} epoch {epoch + 1}/{self.cfg.max_epochs}")

    def update(self, stream_step: int, loss: torch.Tensor) -> None:
        if self.bar is None:
            return
        self.bar.update()
        if stream_step % self.cfg.log_every_n_steps == 0:  # .item() waits for the GPU
            self.bar.set_postfix(loss=f"{loss.item():.4g}", refresh=False)
