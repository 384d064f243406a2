"""Stopping and resuming inside a task: step checkpoints, fast-forwarded loaders, Ctrl-C.

A run checkpoints after every experience (``harness.experiment.run.TaskLoop``) and, within
one, every ``checkpoint.every_n_steps`` optimizer steps and whenever it is asked to stop. A
checkpoint taken inside task ``i`` adds a ``TaskProgress``: the position (epoch, batch within
the epoch, optimizer steps), the optimizer's state and the RNG states at that step. Resuming
rebuilds the task exactly as the first attempt did (``before_task``, loaders), then

* ``FastForward`` replays the loader's first ``epoch`` passes and ``batch`` batches without
  training on them, so shuffles and replay-memory streams are where they were;
* ``StepCheckpoint.on_start`` loads the optimizer state and the RNG states,

and the first trained batch is the one the interrupted run would have trained next.

Ctrl-C (SIGINT) and SIGTERM ask the loop to stop at the next safe point: after the current
optimizer step, or after the current evaluation; a checkpoint is written, the run is marked
``interrupted`` and the process exits with 128 + the signal number. A second signal stops at
once.
"""

from __future__ import annotations

import dataclasses
import signal
import threading
import time

import torch

from harness.core.schedule import task_steps
from harness.errors import Interrupted, UserError
from harness.runtime import faults
from harness.runtime.distributed import DIST
from harness.runtime.progress import say
from harness.runtime.seed import rng_state, set_rng_state


@dataclasses.dataclass
class TaskProgress:
    """How far into a task a checkpoint was taken: everything needed to train its next batch
    as if the run had never stopped (``harness.experiment.state`` reads and writes it)."""

    epoch: int  # the next batch's epoch, counted within the task
    batch: int  # the next batch, counted within that epoch
    steps: int  # optimizer steps taken in the task
    trained: bool  # its training is over: stopped after the last step, before evaluation
    optimizer: dict
    scaler: dict | None
    rng: dict  # Python's, NumPy's and torch's generator states at that step
    task_start_step: int  # the stream step at which the task began
    train_time_s: float  # training time spent on the task so far

    def to_dict(self) -> dict:
        """Shallow: the tensors of the optimizer and RNG states are not copied."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}


class StopSignals:
    """While active, the first SIGINT/SIGTERM sets ``signum``; a second one stops at once."""

    def __init__(self):
        self.signum: int | None = None
        self._old: dict = {}

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)

    def _handle(self, signum, frame) -> None:
        if self.signum is not None:
            raise KeyboardInterrupt
        self.signum = signum
        say(f"{signal.Signals(signum).name}: stopping after the current step and saving a "
            "checkpoint (send it again to stop at once)")

    def requested(self, device: torch.device | None = None) -> bool:
        """Whether to stop; under DDP, whether any rank was asked (all ranks must agree)."""
        if DIST.world_size == 1 or device is None:
            return self.signum is not None
        flag = torch.tensor([float(self.signum or 0)], device=device)
        DIST.all_reduce_(flag)
        asked = bool(flag.item())  # one device sync a step
        if asked and self.signum is None:
            self.signum = signal.SIGTERM
        return asked

    def check(self) -> None:
        if self.signum is not None:
            raise Interrupted(self.signum)


class FastForward:
    """A training loader resumed at (epoch, batch): the first iteration skips what was done."""

    def __init__(self, loader, epoch: int, batch: int):
        self.loader, self.skip = loader, (epoch, batch)

    def __len__(self) -> int:
        return len(self.loader)  # the full epoch: Lightning sizes every epoch by it

    def __iter__(self):
        if self.skip is None:
            yield from self.loader
            return
        (epochs, batches), self.skip = self.skip, None
        if batches >= len(self.loader):  # a checkpoint of another stream, or a crafted one
            raise UserError(f"cannot resume at batch {batches} of an epoch of "
                            f"{len(self.loader)} batches: the checkpoint is not from this run")
        for _ in range(epochs):
            for _ in self.loader:
                pass
        it = iter(self.loader)
        for _ in range(batches):
            next(it)
        yield from it


def resumed_trainer_cfg(cfg, start: TaskProgress):
    """The trainer settings for what is left of a task started at ``start``."""
    steps = cfg.max_steps - start.steps if cfg.max_steps > 0 else cfg.max_steps
    return dataclasses.replace(cfg, max_epochs=cfg.max_epochs - start.epoch, max_steps=steps)


class StepCheckpoint:
    """Restores a task's optimizer and RNG on resume; checkpoints every n optimizer steps.

    Engine-neutral: the lean loop (``harness.core.loop``) calls it directly, Lightning's Trainer
    through ``harness.core.trainer.LightningStepCheckpoint``. ``save(progress, stream_step)``
    writes a checkpoint; ``task_start_step`` and ``started_at`` (the task's training clock,
    ``time.time()`` less the time already spent) go into every ``TaskProgress``.
    """

    def __init__(self, save, loader, trainer_cfg, every: int, stop: StopSignals,
                 start: TaskProgress | None = None, poll=None, task_start_step: int = 0,
                 started_at: float | None = None, on_step=None, schedule=None):
        self.save, self.loader, self.cfg = save, loader, trainer_cfg
        # schedule: the system's TaskSchedule (harness.core.schedule), started with the task's
        # length once the loader's is known, at the step a resume continues from
        self.schedule = schedule
        self.poll = poll  # called after every step: e.g. raise a failed background write
        # on_step(stream_step, last_of_task): evaluation during training, before any checkpoint
        # of the step, so the checkpoint holds its result (harness.core.curves)
        self.on_step = on_step
        self.every, self.stop = every, stop
        self.start = start
        self.task_start_step = task_start_step
        self.started_at = time.time() if started_at is None else started_at
        self.n_batches = 0

    def on_start(self, optimizer, scaler=None) -> None:
        self.n_batches = len(self.loader)  # under DDP the shard is known only now
        if self.schedule is not None:
            self.schedule.start(task_steps(self.n_batches, self.cfg),
                                self.start.steps if self.start else 0)
        if self.start is None:
            return
        try:
            optimizer.load_state_dict(self.start.optimizer)
        except (ValueError, KeyError, TypeError, RuntimeError) as err:
            raise UserError(f"cannot resume from the checkpoint: its optimizer state does not "
                            f"match this run's optimizer ({err})") from None
        if scaler is not None and self.start.scaler:
            scaler.load_state_dict(self.start.scaler)
        set_rng_state(self.start.rng)

    def after_step(self, step: int, epoch: int, batch_idx: int, optimizer, scaler,
                   device: torch.device, stream_step: int) -> bool:
        """After optimizer step ``step`` of this fit (epoch and batch counted within the fit);
        ``stream_step`` counts this step. Returns whether training must stop now."""
        faults.point("step")
        if self.poll is not None:
            self.poll()
        steps = (self.start.steps if self.start else 0) + step
        if self.on_step is not None:
            self.on_step(stream_step, self._next(epoch, batch_idx, steps)[2])
        stop = self.stop.requested(device)
        if stop or (self.every and steps % self.every == 0):
            self.save(self.position(epoch, batch_idx, steps, optimizer, scaler), stream_step)
        return stop

    def position(self, epoch: int, batch_idx: int, steps: int, optimizer,
                 scaler) -> TaskProgress:
        """Where the next batch is, with everything needed to train it as if never stopped."""
        epoch, batch, trained = self._next(epoch, batch_idx, steps)
        return TaskProgress(
            epoch=epoch, batch=batch, steps=steps, trained=trained,
            optimizer=optimizer.state_dict(),
            scaler=scaler.state_dict() if scaler is not None else None,
            rng=rng_state(), task_start_step=self.task_start_step,
            train_time_s=time.time() - self.started_at)

    def _next(self, epoch: int, batch_idx: int, steps: int) -> tuple[int, int, bool]:
        """The task's (epoch, batch) after this one, and whether the task is trained."""
        first_epoch, first_batch = (self.start.epoch, self.start.batch) if self.start else (0, 0)
        batch = batch_idx + 1 + (first_batch if epoch == 0 else 0)
        epoch = first_epoch + epoch
        if batch >= self.n_batches:
            epoch, batch = epoch + 1, 0
        return epoch, batch, epoch >= self.cfg.max_epochs or 0 < self.cfg.max_steps <= steps
