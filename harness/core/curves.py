"""Evaluation during training: every test task scored on a fixed subsample every n steps.

The score matrix is read at task boundaries only, which hides the *stability gap* (De Lange,
van de Ven and Tuytelaars, ICLR 2023): an old task's score falls sharply right after a new task
starts and then recovers. With ``eval.every_n_steps=n`` the task loop also scores every test
task after every n-th optimizer step of the stream and after each task's last step (so every
task's curve ends at its boundary), each time on the same ``eval.subsample`` examples per task,
drawn once from the run's seed. ``harness.core.stability`` turns the curves into min-ACC,
WC-ACC and the depth and recovery of each dip.

Evaluation must not change training, so a run's curves are the same whether it was stopped
and resumed or not, and its matrices the same as with evaluation off:

* it runs inside ``StepCheckpoint.after_step``, after the optimizer step and *before* a
  checkpoint of that step is written, so a checkpoint holds every point up to its own step and
  a resumed run never evaluates a step twice or skips one;
* it consumes no random numbers training uses (the generators' states are restored after it)
  and leaves a model's carried memory (recurrent state, a kNN store) as it found it;
* under DDP every rank takes the same decision at the same step (it depends on the step only)
  and scores its shard of the subsample; ``evaluate`` all-reduces, so each example counts once.
"""

from __future__ import annotations

import contextlib
import time

import numpy as np
import torch

from harness.api import TaskData, carries_memory
from harness.config import EvalConfig
from harness.core.evaluate import evaluate
from harness.errors import UserError
from harness.runtime import faults
from harness.runtime.seed import rng_state, set_rng_state

PREFIX = "curve/"  # metrics.jsonl and W&B keys: curve/<metric>/<task name>


def subsample(data: TaskData, size: int | None, seed: int, task: int) -> TaskData:
    """``size`` examples of ``data`` drawn without replacement from a generator seeded by
    (seed, task) alone, kept in their original order; all of it when ``size`` is None."""
    if size is None or size >= len(data):
        return data
    rng = np.random.default_rng([seed, task])
    index = torch.from_numpy(np.sort(rng.choice(len(data), size, replace=False)))
    return TaskData(data.x[index], data.y[index], data.t[index])


def check_subsample(cfg: EvalConfig, sizes: list[int], names: list[str]) -> None:
    """A subsample larger than a test set is refused before anything is written."""
    if cfg.every_n_steps is None or cfg.subsample is None:
        return
    small = [(n, s) for n, s in zip(names, sizes) if s < cfg.subsample]
    if small:
        name, size = min(small, key=lambda item: item[1])
        raise UserError(f"eval.subsample={cfg.subsample} is larger than test task '{name}' "
                        f"({size} examples); use eval.subsample <= {min(sizes)} or "
                        "eval.subsample=null (whole test sets)")


class ContinualEval:
    """The periodic evaluator and its curves (``state_dict`` goes into every checkpoint).

    ``curves`` is column-oriented: ``step`` (optimizer steps done over the stream), ``task``
    (the experience being trained at that step) and, per metric, one row of per-test-task
    scores per point. ``time_s[i]`` is the time spent evaluating while task i trained.
    """

    def __init__(self, cfg: EvalConfig, tests: list[TaskData], seed: int, batch_size: int,
                 precision: str, names: list[str], log=None, token_bytes=None):
        self.every = cfg.every_n_steps
        self.size = cfg.subsample
        self.sets = [subsample(data, cfg.subsample, seed, j) for j, data in enumerate(tests)]
        self.batch_size, self.precision, self.names, self.log = batch_size, precision, names, log
        self.token_bytes = token_bytes  # bits per byte for a non-byte tokenizer (evaluate)
        self.curves: dict = {"step": [], "task": [], "scores": {}}
        self.time_s: list[float] = [0.0] * len(tests)

    @property
    def on(self) -> bool:
        return self.every is not None

    def due(self, stream_step: int, last_of_task: bool) -> bool:
        if not self.on or (self.curves["step"] and self.curves["step"][-1] == stream_step):
            return False
        return stream_step % self.every == 0 or last_of_task

    def __call__(self, net, stream_step: int, task: int) -> None:
        """Score every test subsample now (after ``stream_step`` optimizer steps)."""
        start = time.perf_counter()
        state = rng_state()
        try:
            with _memory_kept(net.model):
                faults.point("eval")
                row = evaluate(net, self.sets, self.batch_size, self.precision,
                               self.token_bytes)
        finally:
            set_rng_state(state)
        self.curves["step"].append(stream_step)
        self.curves["task"].append(task)
        for metric, scores in row.items():
            self.curves["scores"].setdefault(metric, []).append(scores)
        self.time_s[task] += time.perf_counter() - start
        if self.log is not None:
            metrics = {f"{PREFIX}{metric}/{self.names[j]}": value
                       for metric, scores in row.items() for j, value in enumerate(scores)}
            self.log(stream_step, {**metrics, "task": task})

    def state_dict(self) -> dict:
        return {"curves": self.curves, "time_s": list(self.time_s)}

    def load_state_dict(self, state: dict | None) -> None:
        if state:
            self.curves, self.time_s = state["curves"], list(state["time_s"])

    def results(self) -> dict | None:
        """What results.json keeps: the curves and how they were taken."""
        if not self.on:
            return None
        return {"every_n_steps": self.every, "subsample": self.size,
                "examples": [len(s) for s in self.sets], **self.curves}


@contextlib.contextmanager
def _memory_kept(model):
    """A model that carries memory between calls (recurrent state, a kNN store) gets it back
    after evaluation, which clears it (``reset_memory``) and runs its own batches through it.
    Plain attributes are restored by reference (models replace their state, e.g.
    ``self.state = ...``); buffers by value (a store is written in place)."""
    if not carries_memory(model):
        yield
        return
    saved = []
    for module in model.modules():
        attrs = {k: list(v) if isinstance(v, list) else v for k, v in vars(module).items()
                 if k not in ("_parameters", "_buffers", "_modules") and not callable(v)}
        buffers = {k: None if v is None else v.clone() for k, v in module._buffers.items()}
        saved.append((module, attrs, buffers))
    try:
        yield
    finally:
        for module, attrs, buffers in saved:
            for key in [k for k in vars(module) if k not in attrs and not k.startswith("_")
                        and not callable(vars(module)[k])]:
                delattr(module, key)
            module.__dict__.update(attrs)
            for key, value in buffers.items():
                current = module._buffers.get(key)
                if value is not None and current is not None and current.shape == value.shape:
                    current.copy_(value)
                else:
                    module._buffers[key] = value
