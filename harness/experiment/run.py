"""The task loop: ``run(cfg) -> results``, importable and plain.

For each experience of the scenario's stream::

    before_task hooks -> fit on that experience (harness.core.loop, or Lightning's Trainer: see
      harness.config.engine_for)
      -> after_task hooks
      -> evaluate on every test experience -> one row of the score matrix -> checkpoint

Inside a task a checkpoint is also written every ``checkpoint.every_n_steps`` optimizer steps
and on Ctrl-C / SIGTERM; ``harness.core.resume`` continues from one at the same batch.
Only rank zero writes the run directory and logs; every rank trains and evaluates its shard.
"""

from __future__ import annotations

import os
import platform
import resource
import sys
import time
from pathlib import Path

import torch

from harness.api import BatchLoader, Context
from harness.config import config_hash, engine_for, strategy_names, to_dict, to_yaml
from harness.core.evaluate import evaluate
from harness.core.loop import LeanLoop
from harness.core.metrics import LOWER_IS_BETTER, average_seen, summarize
from harness.core.network import Network, build_model
from harness.core.resume import FastForward, StepCheckpoint, StopSignals, resumed_trainer_cfg
from harness.core.system import ContinualSystem
from harness.errors import Interrupted, UserError
from harness.experiment import checkpoint
from harness.experiment.environment import environment
from harness.experiment.results import RunDir
from harness.registry import SCENARIOS, STRATEGIES
from harness.runtime import faults
from harness.runtime.devices import cuda_available
from harness.runtime.distributed import DIST, WATCHDOG, launch_rank, on_failure
from harness.runtime.progress import say
from harness.runtime.seed import rng_state, seed_everything, set_rng_state


def run(cfg, resume: RunDir | None = None) -> dict:
    """Train on the whole stream and return the results dict (also written to the run dir)."""
    started = time.time()
    seed_everything(cfg.seed)
    # Strategies first: their option errors need no data, so they come before the scenario
    # (and Avalanche's import) is paid for.
    names = strategy_names(cfg)
    strategies = [STRATEGIES.get(n).cls(getattr(cfg.strategy, n)) for n in names]
    scenario = SCENARIOS.get(cfg.scenario.name).cls(cfg.scenario, cfg.seed)
    spec = scenario.spec
    model = build_model(cfg.model, spec, cfg.scenario.name)
    task_classes = scenario.classes_per_task if scenario.setting == "task-il" else None
    net = Network(model, spec, task_classes)
    main = launch_rank() == 0
    # Every rank reads the checkpoint it resumes from; only rank zero writes the run dir.
    run_dir = (resume or RunDir.create(cfg.out_dir, cfg.name or default_name(cfg))) if main \
        else None
    chash = config_hash(cfg)
    if main:  # another rank died and rank zero cannot end by itself (harness.runtime.distributed)
        WATCHDOG.on_fatal = [lambda error: run_dir.fail(error, chash)]
    tracker = None
    writer = checkpoint.Writer()  # rank zero's checkpoints, written in the background
    with StopSignals() as stop:
        try:
            if main:
                run_dir.write_config(to_yaml(cfg))
                run_dir.set_status("running", config_hash=chash, pid=os.getpid(),
                                   host=platform.node())
                tracker = _tracker(cfg, run_dir, "+".join(names))
            sink = _metrics_sink(run_dir, tracker) if main else None
            system = ContinualSystem(net, strategies, cfg.trainer, on_metrics=sink)
            loop = TaskLoop(cfg, scenario, system, run_dir, stop, writer)
            loop.restore(resume.checkpoint_dir if resume else None)
            loop.train_all()
            results = loop.results(chash, names, started)
            if main:
                writer.flush()  # complete only once the last checkpoint is on disk
                run_dir.finish(results)
                if tracker:
                    tracker.log_results(results, system.stream_step)
                    results["wandb_dir"] = tracker.finish("complete")
            return results
        except BaseException as caught:
            err = on_failure(caught)  # DDP: names a rank that died; stops the other ranks
            try:  # the newest checkpoint lands: a resume starts from there
                lost = writer.wait()
            except BaseException:  # a second Ctrl-C: stop waiting, still record the stop
                lost = None
            if lost is not None:
                say(f"warning: the last checkpoint was not written ({lost})")
            if main:
                _record_stop(run_dir, tracker, err, chash, stop.signum)
            if err is not caught:
                raise err from caught
            raise


def _record_stop(run_dir: RunDir, tracker, err: BaseException, chash: str, signum) -> None:
    """Mark the run interrupted (Ctrl-C, SIGTERM) or failed; never mask the original error."""
    interrupted = isinstance(err, (Interrupted, KeyboardInterrupt)) or (
        signum is not None and isinstance(err, SystemExit))  # Lightning's exit on Ctrl-C
    try:
        if interrupted:
            run_dir.set_status("interrupted", error=str(err) or "interrupted",
                               config_hash=chash)
        else:
            run_dir.fail(f"{type(err).__name__}: {err}", chash)
    except Exception as write_err:  # e.g. the disk is full: the status stays "running"
        say(f"warning: could not record the run's status: {write_err}")
    if tracker:
        tracker.finish("failed")


class TaskLoop:
    """The state of one pass over the stream: position, score rows, timings."""

    def __init__(self, cfg, scenario, system: ContinualSystem, run_dir: RunDir | None,
                 stop: StopSignals, writer: checkpoint.Writer):
        self.cfg, self.scenario, self.system, self.run_dir = cfg, scenario, system, run_dir
        self.writer = writer
        self.n = scenario.n_experiences
        self.device = _run_device(cfg)
        self.engine = engine_for(cfg.trainer, self.device.type)
        self.lightning = None  # the system as a LightningModule, for the Trainer engine
        self.stop = stop
        self.position = 0  # next experience to train
        self.partial: dict | None = None  # how far into task `position` a checkpoint was taken
        self.rows: dict[str, list[list[float]]] = {}
        self.baseline: dict[str, list[float]] | None = None
        self.per_task: list[dict] = []
        self.resumes: list[dict] = []  # where each resume started: task, epoch, batch

    def restore(self, checkpoint_dir: Path | None) -> None:
        """Continue from the newest good checkpoint in ``checkpoint_dir``, if there is one."""
        found = checkpoint.load_latest(checkpoint_dir) if checkpoint_dir else None
        if found is None:
            return
        state, path = found
        try:
            self.system.net.load_state_dict(state["net"])
        except RuntimeError as err:  # missing / unexpected / mis-shaped tensors
            raise UserError(f"cannot resume from {path}: its network does not match this "
                            f"version of retain's model ({str(err).splitlines()[-1].strip()}); "
                            "start a new run (another name=)") from None
        for strategy, s_state in zip(self.system.strategies, state["strategies"]):
            strategy.load_state_dict(s_state)
        self.position, self.rows = state["position"], state["rows"]
        self.baseline, self.per_task = state["baseline"], state["per_task"]
        self.system.stream_step = state["stream_step"]
        self.partial = state["partial"]
        if self.partial is None:
            set_rng_state(state["rng"])
        else:  # set when training resumes, after the task has been rebuilt
            self.partial["rng"] = state["rng"]
        where = {"task": self.position, **{k: (self.partial or {}).get(k, 0)
                                           for k in ("epoch", "batch", "steps")}}
        self.resumes = [*state["resumes"], {**where, "checkpoint": path.name}]
        if self.run_dir:  # inside a task, its evaluation row (at the step before) is not kept
            step = self.system.stream_step
            self.run_dir.truncate_metrics(step, step - 1 if self.partial else None)
        inside = "" if not self.partial else (
            ", after its training" if self.partial["trained"]
            else f", epoch {where['epoch'] + 1}, batch {where['batch']}")
        say(f"resuming {checkpoint_dir.parent} at task {self.position + 1}/{self.n}{inside}"
            + ("" if path.name == "last.ckpt" else f" (from {path.name}: last.ckpt is damaged)"))

    def train_all(self) -> None:
        tests = [self.scenario.test_data(j) for j in range(self.n)]
        if self.cfg.eval_init and self.baseline is None:
            self.system.net.to(self.device)
            self.baseline = evaluate(self.system.net, _eval_sets(tests),
                                     self.cfg.trainer.eval_batch_size, self.cfg.trainer.precision)
            self._save_checkpoint()
            self.stop.check()
        for i in range(self.position, self.n):
            self.train_task(i, tests)

    def train_task(self, i: int, tests) -> None:
        name = self.scenario.task_names[i]
        say(f"task {i + 1}/{self.n}: {name}")
        ctx = self._context(i)
        self.system.ctx = ctx
        for strategy in self.system.strategies:
            strategy.before_task(ctx)
        # the experience's own batches say where their examples sit in it (Batch.index)
        loader = ctx.make_loader(self.scenario.train_data(i), with_index=True)
        for strategy in self.system.strategies:
            loader = strategy.train_loader(ctx, loader)
        if cuda_available():
            torch.cuda.reset_peak_memory_stats()
        start, self.partial = self.partial, None
        t0 = time.time() - (start["train_time_s"] if start else 0.0)
        step0 = start["task_start_step"] if start else self.system.stream_step
        if start is None or not start["trained"]:
            self._fit(i, loader, start, t0, step0)
        else:  # killed after the last step, before the task's checkpoint
            set_rng_state(start["rng"])
        self.stop.check()
        for strategy in self.system.strategies:
            strategy.after_task(ctx)
        t1 = time.time()
        row = evaluate(self.system.net, _eval_sets(tests), self.cfg.trainer.eval_batch_size,
                       self.cfg.trainer.precision)
        for metric, scores in row.items():
            self.rows.setdefault(metric, []).append(scores)
        self._log_row(i, row)
        self.per_task.append({
            "task": i, "name": name, "steps": self.system.stream_step - step0,
            "train_time_s": t1 - t0, "eval_time_s": time.time() - t1,
            "peak_rss_mb": _peak_rss_mb(), "peak_gpu_mb": _peak_gpu_mb(), "rss_mb": _rss_mb(),
            "strategy_memory_bytes": sum(s.memory_bytes() for s in self.system.strategies),
        })
        self.position = i + 1
        self._save_checkpoint()
        faults.point("task")
        self.stop.check()

    def _log_row(self, i: int, row: dict[str, list[float]]) -> None:
        """Each task's scores after training task i, as metrics: per-task curves over the
        stream in W&B (and metrics.jsonl), next to the matrices logged as tables at the end."""
        if self.system.on_metrics is None:
            return
        names = self.scenario.task_names
        metrics = {f"eval/{metric}/{names[j]}": value
                   for metric, scores in row.items() for j, value in enumerate(scores)}
        metrics.update({f"eval/{metric}/average_seen": average_seen(scores, i)
                        for metric, scores in row.items()})
        # At the task's last training step: a resume from the task's checkpoint (taken at
        # stream_step) keeps lines below that step, so this row is neither lost nor repeated.
        self.system.on_metrics(max(self.system.stream_step - 1, 0), {**metrics, "task": i})

    def _fit(self, i: int, loader, start: dict | None, t0: float, step0: int) -> None:
        """Fit task i, from its start or from a checkpoint inside it, with the run's engine."""
        trainer_cfg = self.cfg.trainer
        if start is not None:
            trainer_cfg = resumed_trainer_cfg(trainer_cfg, start)
            loader = FastForward(loader, start["epoch"], start["batch"])

        def save(position: dict) -> None:
            stream_step = position.pop("stream_step")
            position.update(task_start_step=step0, train_time_s=time.time() - t0)
            self._save_checkpoint(position, stream_step)

        label = f"task {i + 1}/{self.n} ({self.scenario.task_names[i]})"
        steps = StepCheckpoint(save, loader, self.cfg.trainer, self.cfg.checkpoint.every_n_steps,
                               self.stop, start, poll=self.writer.check)
        if self.engine == "lean":
            LeanLoop(trainer_cfg, self.device, label).fit(self.system, loader, steps)
            return
        from harness.core.trainer import LightningStepCheckpoint, LightningSystem, make_trainer

        if self.lightning is None:  # one per run: Lightning keeps state on its module
            self.lightning = LightningSystem(self.system)
        trainer = make_trainer(trainer_cfg, label, self.device.type == "cuda")
        trainer.callbacks.append(LightningStepCheckpoint(steps))
        trainer.fit(self.lightning, train_dataloaders=loader)
        self.system.net.to(self.device)  # Lightning's teardown moves the module to CPU

    def _context(self, i: int) -> Context:
        cfg = self.cfg

        def make_loader(data, shuffle: bool = True, with_index: bool = False):
            # Reads rank and world size when iterated: under DDP the process group only
            # exists once Lightning's first fit has started.
            return DistLoader(data, cfg.trainer.batch_size, shuffle=shuffle,
                              seed=cfg.seed * 1000 + i, with_index=with_index)

        return Context(system=self.system, task_id=i, n_tasks=self.n,
                       train_data=self.scenario.train_data, make_loader=make_loader,
                       batch_size=cfg.trainer.batch_size, dist=DIST, seed=cfg.seed,
                       max_epochs=cfg.trainer.max_epochs,
                       eval_batch_size=cfg.trainer.eval_batch_size)

    def _save_checkpoint(self, partial: dict | None = None,
                         stream_step: int | None = None) -> None:
        """Everything needed to continue: after a task, or inside one (``partial``)."""
        states = [s.state_dict() for s in self.system.strategies]  # may be collective
        if self.run_dir is None:
            return
        self.writer.save(self.run_dir.checkpoint_dir / "last.ckpt", {
            "position": self.position, "partial": partial, "net": self.system.net.state_dict(),
            "strategies": states, "rows": self.rows, "baseline": self.baseline,
            "per_task": self.per_task, "resumes": self.resumes,
            "stream_step": self.system.stream_step if stream_step is None else stream_step,
            "rng": rng_state(),
        })

    def results(self, chash: str, names: list[str], started: float) -> dict:
        spec = self.scenario.spec
        metric = "perplexity" if spec.task == "lm" else "accuracy"
        summary = summarize(self.rows, self.baseline)
        summary.update({
            "wall_time_s": time.time() - started,
            "train_time_s": sum(t["train_time_s"] for t in self.per_task),
            "eval_time_s": sum(t["eval_time_s"] for t in self.per_task),
            "peak_rss_mb": _peak_rss_mb(),
            "strategy_memory_bytes": sum(s.memory_bytes() for s in self.system.strategies),
            "parameters": sum(p.numel() for p in self.system.net.parameters()),
        })
        cfg = self.cfg
        return {
            "name": self.run_dir.root.name if self.run_dir else cfg.name,
            "run_dir": str(self.run_dir.root) if self.run_dir else None,
            "config_hash": chash, "config": to_dict(cfg), "model": cfg.model.name,
            "strategy": "+".join(names), "scenario": cfg.scenario.name, "seed": cfg.seed,
            "task_names": list(self.scenario.task_names), "setting": self.scenario.setting,
            "task": spec.task, "metric": metric, "higher_is_better": metric not in LOWER_IS_BETTER,
            "matrices": self.rows, "baseline": self.baseline, "summary": summary,
            "per_task": self.per_task, "resumes": self.resumes,
            "env": environment(cfg, self.device),
        }


class DistLoader(BatchLoader):
    """A training BatchLoader whose shard is decided when it is iterated.

    ``batch_size`` is the global batch: each of W ranks takes ``batch_size / W`` examples
    from its interleaved shard, so the union of the ranks' k-th batches is exactly the k-th
    batch of a single-process run, and DDP's gradient average equals its gradient.
    """

    def __init__(self, data, batch_size: int, *, shuffle: bool, seed: int,
                 with_index: bool = False):
        super().__init__(data, batch_size, shuffle=shuffle, seed=seed, with_index=with_index)
        self.global_batch_size = batch_size

    def _shard(self) -> None:
        self.rank, self.world_size = DIST.rank, DIST.world_size
        if self.global_batch_size % self.world_size:
            raise UserError(f"trainer.batch_size={self.global_batch_size} must be divisible "
                            f"by the number of processes ({self.world_size})")
        self.batch_size = self.global_batch_size // self.world_size

    def __iter__(self):
        self._shard()
        return super().__iter__()

    def __len__(self) -> int:
        self._shard()
        return super().__len__()


def default_name(cfg) -> str:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    strategies = "+".join(strategy_names(cfg))
    return f"{cfg.scenario.name}-{strategies}-{cfg.model.name}-s{cfg.seed}-{stamp}"


def _eval_sets(tests):
    """The test sets, one at a time, with a fault point before each (see harness.runtime.faults)."""
    for data in tests:
        faults.point("eval")
        yield data


def _run_device(cfg) -> torch.device:
    acc = cfg.trainer.accelerator
    if acc in ("gpu", "cuda") or (acc == "auto" and cuda_available()):
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    if acc == "mps" or (acc == "auto" and torch.backends.mps.is_available()):
        return torch.device("mps")  # where Lightning's auto accelerator trains on a Mac
    return torch.device("cpu")


def _tracker(cfg, run_dir: RunDir, group: str):
    if cfg.logger == "none" or cfg.wandb.mode == "disabled":
        return None
    from harness.experiment.tracking import Tracker

    return Tracker(cfg, run_dir.root, to_dict(cfg), group)


def _metrics_sink(run_dir: RunDir, tracker):
    def sink(step: int, metrics: dict) -> None:
        run_dir.append_metrics(step, metrics)
        if tracker:
            tracker.log_metrics(step, metrics)

    return sink


def _peak_rss_mb() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


def _rss_mb() -> float | None:
    """The resident set size now (Linux), unlike ru_maxrss which only ever grows."""
    try:
        return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf(
            "SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, IndexError):
        return None


def _peak_gpu_mb() -> float | None:
    return torch.cuda.max_memory_allocated() / 2**20 if cuda_available() else None
