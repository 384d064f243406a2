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

from harness.api import UNCOUNTED
from harness.config import config_hash, engine_for, strategy_names, to_dict, to_yaml
from harness.core.build import build
from harness.core.curves import ContinualEval, check_subsample
from harness.core.evaluate import eval_batches, evaluate
from harness.core.flops import FlopProbe, count_flops, task_flops
from harness.core.general import GeneralEval
from harness.core.general import summary as general_summary
from harness.core.loop import LeanLoop
from harness.core.metrics import LOWER_IS_BETTER, average_seen, fwt_note, summarize, summary_metric
from harness.core.resume import (
    FastForward,
    StepCheckpoint,
    StopSignals,
    TaskProgress,
    resumed_trainer_cfg,
)
from harness.core.stability import gap_summary
from harness.core.system import ContinualSystem
from harness.core.task import begin_task, end_task
from harness.errors import Interrupted, UserError
from harness.experiment import checkpoint
from harness.experiment.environment import environment
from harness.experiment.records import Results, RunSummary
from harness.experiment.results import RunDir
from harness.experiment.state import Checkpoint
from harness.experiment.weights import NetWeights
from harness.runtime import faults
from harness.runtime.devices import cuda_available
from harness.runtime.distributed import WATCHDOG, launch_rank, on_failure
from harness.runtime.progress import Ticker, say
from harness.runtime.seed import rng_state, seed_everything, set_rng_state


def run(cfg, resume: RunDir | None = None, restart: bool = False) -> dict:
    """Train on the whole stream and return the results dict (also written to the run dir).

    ``resume``: the run directory to continue, from its newest checkpoint (``harness.cli``
    finds it); ``restart``: start that run over from task 1 instead, whatever it holds.
    """
    started = time.time()
    seed_everything(cfg.seed)
    strategies, scenario, net = build(cfg)
    check_subsample(cfg.eval, [len(scenario.test_data(j)) for j in range(scenario.n_experiences)],
                    scenario.task_names)
    if cfg.trainer.callbacks:  # a bad callback name is one line before the run directory exists
        from harness.core.trainer import callback_classes

        callback_classes(cfg.trainer.callbacks)
    chash = config_hash(cfg)
    # Only rank zero writes (and locks) the run dir; every rank reads the checkpoint.
    run_dir = _claim(cfg, resume, restart) if launch_rank() == 0 else None
    try:
        start = None
        if resume is not None and not restart:
            start = _newest_checkpoint(resume.checkpoint_dir, chash, scenario.n_experiences,
                                       len(strategies), cfg.trainer)
        if run_dir is not None and start is None and (resume is not None or restart):
            run_dir.start_over()  # from task 1: what an earlier attempt logged goes
        system = ContinualSystem(net, strategies, cfg.trainer)
        return _train(cfg, scenario, system, run_dir, start, chash, started)
    finally:
        if run_dir is not None:
            run_dir.unlock()


def _claim(cfg, resume: RunDir | None, restart: bool) -> RunDir:
    """Rank zero's run directory, locked: the one to continue, or a new one. A new one is
    checked again under the lock: another process may have started this run since harness.cli
    looked. (A run completed meanwhile resumes from its last checkpoint: same results.)"""
    run_dir = resume or RunDir.create(cfg.out_dir, cfg.name or default_name(cfg))
    run_dir.lock()
    try:
        run_dir.make_folders()  # checkpoints/ again, if it was deleted
        if restart:
            return run_dir
        if resume is None and run_dir.holds_run():
            raise UserError(f"{run_dir.root} already holds a run: continue it (retain run "
                            f"--resume {run_dir.root}), start it over (--restart) or choose "
                            "another name=")
    except BaseException:
        run_dir.unlock()
        raise
    return run_dir


def _newest_checkpoint(folder: Path, chash: str, n_tasks: int, n_strategies: int,
                       trainer_cfg) -> tuple[Checkpoint, Path] | None:
    """The checkpoint to continue from, checked against this run; None: start at task 1."""
    found = checkpoint.load_latest(folder)
    if found is None:
        say(f"no checkpoint in {folder}: starting from task 1")
        return None
    ckpt, path = found
    if ckpt.config_hash != chash:
        raise UserError(f"{path} was written by a run with a different configuration (config "
                        f"hash {ckpt.config_hash}, this one {chash}); choose another name= or "
                        "out_dir, or start it over with --restart")
    ckpt.fits(path, n_tasks, n_strategies, trainer_cfg)
    return found


def _train(cfg, scenario, system: ContinualSystem, run_dir: RunDir | None,
           start: tuple[Checkpoint, Path] | None, chash: str, started: float) -> dict:
    """The task loop over the stream, with the run's status, W&B run and checkpoints."""
    main, names = run_dir is not None, strategy_names(cfg)
    if main:  # another rank died and rank zero cannot end by itself (harness.runtime.distributed)
        WATCHDOG.on_fatal = [lambda error: run_dir.fail(error, chash)]
    tracker = None
    writer = checkpoint.Writer(cfg.checkpoint.keep)  # rank zero's, written in the background
    with StopSignals() as stop:
        try:
            if main:
                run_dir.write_config(to_yaml(cfg))
                run_dir.set_status("running", config_hash=chash, pid=os.getpid(),
                                   host=platform.node())
                tracker = _tracker(cfg, run_dir, "+".join(names))
                system.on_metrics = _metrics_sink(run_dir, tracker)
            loop = TaskLoop(cfg, scenario, system, run_dir, stop, writer, chash)
            loop.restore(start)
            loop.train_all()
            results = loop.results(names, started)
            if main:
                writer.flush()  # complete only once the last checkpoint is on disk
                run_dir.finish(results)
            out = results.to_dict()
            if tracker:
                tracker.log_results(out, system.stream_step)
                out["wandb_dir"] = tracker.finish("complete")
                out["wandb_mode"] = tracker.mode
            return out
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
                 stop: StopSignals, writer: checkpoint.Writer, chash: str):
        self.cfg, self.scenario, self.system, self.run_dir = cfg, scenario, system, run_dir
        self.writer, self.chash = writer, chash
        self.weights = NetWeights(system.net)  # what checkpoints hold of the network
        self.n = scenario.n_experiences
        self.device = _run_device(cfg)
        self.engine = engine_for(cfg.trainer, self.device.type)
        self.lightning = None  # the system as a LightningModule, for the Trainer engine
        self.stop = stop
        self.position = 0  # next experience to train
        self.partial: TaskProgress | None = None  # how far into task `position` it got
        self.rows: dict[str, list[list[float]]] = {}
        self.baseline: dict[str, list[float]] | None = None
        self.per_task: list[dict] = []
        self.resumes: list[dict] = []  # where each resume started: task, epoch, batch
        self.compute: list[dict] = [{} for _ in range(self.n)]  # FLOPs (harness.core.flops)
        tests = [scenario.test_data(j) for j in range(self.n)]
        self.token_bytes = scenario.info.get("token_bytes")  # bits per byte (non-byte tokens)
        # a held-out set that is no task: general ability before training and after each task
        self.general = GeneralEval(*scenario.general) if scenario.general else None
        self.continual = ContinualEval(cfg.eval, tests, cfg.seed, cfg.trainer.eval_batch_size,
                                       cfg.trainer.precision, scenario.task_names,
                                       log=system.on_metrics, token_bytes=self.token_bytes)

    def restore(self, found: tuple[Checkpoint, Path] | None) -> None:
        """Continue from a checkpoint (``run._newest_checkpoint``), if there is one."""
        if found is None:
            return
        ckpt, path = found
        self._load_states(ckpt, path)
        self.position, self.rows = ckpt.position, ckpt.rows
        self.baseline, self.per_task = ckpt.baseline, ckpt.per_task
        self.system.stream_step = ckpt.stream_step
        self.partial = ckpt.partial  # its RNG states are set once the task has been rebuilt
        self.continual.load_state_dict(ckpt.curves)
        self.compute = ckpt.compute or self.compute
        if self.general is not None:
            self.general.load(ckpt.general)
        if ckpt.rng is not None:
            set_rng_state(ckpt.rng)
        p = self.partial
        where = {"task": self.position, "epoch": p.epoch if p else 0,
                 "batch": p.batch if p else 0, "steps": p.steps if p else 0}
        self.resumes = [*ckpt.resumes, {**where, "checkpoint": path.name}]
        if self.run_dir:  # inside a task, its evaluation row (at the step before) is not kept
            step = self.system.stream_step
            self.run_dir.truncate_metrics(step, step - 1 if p else None)
        inside = "" if not p else (", after its training" if p.trained
                                   else f", epoch {p.epoch + 1}, batch {p.batch}")
        at = (f"at task {self.position + 1}/{self.n}{inside}" if self.position < self.n
              else f"after its last task ({self.n}/{self.n})")
        say(f"resuming {path.parent.parent} {at}"
            + ("" if path.name == "last.ckpt" else f" (from {path.name}: last.ckpt is damaged)"))

    def _load_states(self, ckpt: Checkpoint, path: Path) -> None:
        """The network's and the strategies' states, or one line on what does not match."""
        try:
            self.weights.load_state_dict(ckpt.net, ckpt.base, path)
        except RuntimeError as err:  # missing / unexpected / mis-shaped tensors
            raise UserError(f"cannot resume from {path}: its network does not match this "
                            f"version of retain's model ({str(err).splitlines()[-1].strip()}); "
                            "start a new run (another name=)") from None
        for strategy, state in zip(self.system.strategies, ckpt.strategies):
            try:
                strategy.load_state_dict(state)
            except (KeyError, TypeError, ValueError, IndexError, RuntimeError) as err:
                raise UserError(f"cannot resume from {path}: the state of strategy "
                                f"{type(strategy).__name__} does not match it "
                                f"({type(err).__name__}: {err}); start it over with --restart"
                                ) from None

    def train_all(self) -> None:
        tests = [self.scenario.test_data(j) for j in range(self.n)]
        untrained = self.cfg.eval_init and self.baseline is None
        general = self.general is not None and self.general.before is None
        if untrained or general:
            self.system.net.to(self.device)
            if untrained:
                self.baseline = evaluate(self.system.net, _eval_sets(tests),
                                         self.cfg.trainer.eval_batch_size,
                                         self.cfg.trainer.precision, self.token_bytes,
                                         self._ticker("untrained evaluation", tests))
            if general:  # its "before", whether or not eval_init scores the tasks
                self._score_general(0)
            self._save_checkpoint()
            self.stop.check()
        for i in range(self.position, self.n):
            self.train_task(i, tests)

    def train_task(self, i: int, tests) -> None:
        name = self.scenario.task_names[i]
        say(f"task {i + 1}/{self.n}: {name}")
        loader = begin_task(self.system, self.scenario, self.cfg.trainer, self.cfg.seed, i)
        # what the optimizer holds this task (an adapter, unfrozen slots), after strategies froze
        trained = sum(p.numel() for p in self.system.net.parameters() if p.requires_grad)
        if cuda_available():
            torch.cuda.reset_peak_memory_stats()
        start, self.partial = self.partial, None
        t0 = time.time() - (start.train_time_s if start else 0.0)
        step0 = start.task_start_step if start else self.system.stream_step
        if start is None or not start.trained:
            self._fit(i, loader, start, t0, step0)
        else:  # killed after the last step, before the task's checkpoint
            set_rng_state(start.rng)
        self.stop.check()
        with count_flops(self.compute[i], "after_task_flops", self.device) as flops:
            end_task(self.system, flops)
        t1 = time.time()
        row = evaluate(self.system.net, _eval_sets(tests), self.cfg.trainer.eval_batch_size,
                       self.cfg.trainer.precision, self.token_bytes,
                       self._ticker(f"evaluation after task {i + 1}/{self.n}", tests))
        for metric, scores in row.items():
            self.rows.setdefault(metric, []).append(scores)
        self._log_row(i, row)
        if self.general is not None:
            self._score_general(max(self.system.stream_step - 1, 0))
        steps, curve_s = self.system.stream_step - step0, self.continual.time_s[i]
        self.per_task.append({
            "task": i, "name": name, "steps": steps, "train_time_s": t1 - t0 - curve_s,
            "eval_time_s": time.time() - t1, "curve_eval_time_s": curve_s,
            "train_flops": task_flops(self.compute[i], steps), **self.compute[i],
            "trained_parameters": trained,
            "peak_rss_mb": _peak_rss_mb(), "peak_gpu_mb": _peak_gpu_mb(), "rss_mb": _rss_mb(),
            "strategy_memory_bytes": sum(s.memory_bytes() for s in self.system.strategies),
        })
        self.position = i + 1
        self._save_checkpoint()
        faults.point("task")
        self.stop.check()

    def _ticker(self, label: str, tests) -> Ticker | None:
        """Progress lines for an evaluation that runs long (a pretrained LM on a CPU)."""
        if not self.cfg.trainer.progress:
            return None
        return Ticker(label, eval_batches(self.system.net, tests,
                                          self.cfg.trainer.eval_batch_size))

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

    def _score_general(self, step: int) -> None:
        """Score the general set and log it (``general/<metric>``) at ``step``."""
        faults.point("eval")
        scores = self.general.score(
            self.system.net, self.cfg.trainer.eval_batch_size, self.cfg.trainer.precision,
            self.token_bytes, self._ticker(f"general evaluation ({self.general.name})",
                                           [self.general.data]))
        self.general.add(scores)
        if self.system.on_metrics is not None:
            self.system.on_metrics(step, {f"general/{m}": v for m, v in scores.items()})

    def _fit(self, i: int, loader, start: TaskProgress | None, t0: float, step0: int) -> None:
        """Fit task i, from its start or from a checkpoint inside it, with the run's engine."""
        trainer_cfg = self.cfg.trainer
        if start is not None:
            trainer_cfg = resumed_trainer_cfg(trainer_cfg, start)
            loader = FastForward(loader, start.epoch, start.batch)

        def evaluate_now(stream_step: int, last_of_task: bool) -> None:
            if self.continual.due(stream_step, last_of_task):
                self.continual(self.system.net, stream_step, i)

        if "step_flops" not in self.compute[i]:  # one sample step per task, its first
            self.system.flop_probe = FlopProbe(self.compute[i], "step_flops", self.device)
        try:
            self._fit_with_engine(i, loader, start, trainer_cfg, evaluate_now, t0, step0)
        finally:  # a step that failed mid-count must not leave the counter's hooks behind
            if self.system.flop_probe is not None:
                self.system.flop_probe.abort()
                self.system.flop_probe, self.system.ctx.flops = None, UNCOUNTED

    def _fit_with_engine(self, i, loader, start, trainer_cfg, evaluate_now, t0, step0) -> None:
        label = f"task {i + 1}/{self.n} ({self.scenario.task_names[i]})"
        steps = StepCheckpoint(self._save_checkpoint, loader, self.cfg.trainer,
                               self.cfg.checkpoint.every_n_steps, self.stop, start,
                               poll=self.writer.check, task_start_step=step0, started_at=t0,
                               on_step=evaluate_now if self.continual.on else None,
                               schedule=self.system.schedule)
        if self.engine == "lean":
            LeanLoop(trainer_cfg, self.device, label).fit(self.system, loader, steps)
            return
        from harness.core.trainer import LightningStepCheckpoint, LightningSystem, make_trainer

        if self.lightning is None:  # one per run: Lightning keeps state on its module
            self.lightning = LightningSystem(self.system)
        trainer = make_trainer(trainer_cfg, label, self.device.type == "cuda", self.system)
        trainer.callbacks.append(LightningStepCheckpoint(steps))
        trainer.fit(self.lightning, train_dataloaders=loader)
        self.system.net.to(self.device)  # Lightning's teardown moves the module to CPU

    def _save_checkpoint(self, partial: TaskProgress | None = None,
                         stream_step: int | None = None) -> None:
        """Everything needed to continue: after a task, or inside one (``partial``)."""
        states = [s.state_dict() for s in self.system.strategies]  # may be collective
        if self.run_dir is None or self.cfg.checkpoint.keep == 0:
            return
        ckpt = Checkpoint(
            config_hash=self.chash, position=self.position, partial=partial,
            net=self.weights.state_dict(), base=self.weights.base(), strategies=states,
            rows=self.rows,
            baseline=self.baseline, per_task=self.per_task, resumes=self.resumes,
            stream_step=self.system.stream_step if stream_step is None else stream_step,
            rng=None if partial else rng_state(), compute=self.compute,
            curves=self.continual.state_dict(),
            general=self.general.record() if self.general is not None else None)
        self.writer.save(self.run_dir.checkpoint_dir / "last.ckpt", ckpt.to_dict())

    def results(self, names: list[str], started: float) -> Results:
        spec = self.scenario.spec
        metric = "perplexity" if spec.task == "lm" else "accuracy"
        pretrained = bool(getattr(self.system.net.model, "pretrained", False))
        curves = self.continual.results()
        general = self.general.record() if self.general is not None else None
        gaps, transitions = gap_summary(curves, LOWER_IS_BETTER)
        # a task finished before FLOPs were counted (an older checkpoint) has none
        flops = [t.get("train_flops") for t in self.per_task]
        trained = [t.get("trained_parameters") for t in self.per_task]
        summary = RunSummary(
            scores={**summarize(self.rows, self.baseline, spec.task, self.scenario.setting,
                                pretrained), **gaps, **general_summary(general)},
            wall_time_s=time.time() - started,
            train_time_s=sum(t["train_time_s"] for t in self.per_task),
            eval_time_s=sum(t["eval_time_s"] for t in self.per_task),
            peak_rss_mb=_peak_rss_mb(),
            strategy_memory_bytes=sum(s.memory_bytes() for s in self.system.strategies),
            parameters=sum(p.numel() for p in self.system.net.parameters()),
            curve_eval_time_s=sum(self.continual.time_s) if curves else None,
            train_flops=sum(flops) if None not in flops else None,
            trained_parameters=max(trained) if trained and None not in trained else None)
        cfg = self.cfg
        return Results(
            name=self.run_dir.root.name if self.run_dir else cfg.name,
            run_dir=str(self.run_dir.root) if self.run_dir else None,
            config_hash=self.chash, config=to_dict(cfg), model=cfg.model.name,
            strategy="+".join(names), scenario=cfg.scenario.name, seed=cfg.seed,
            task_names=list(self.scenario.task_names), setting=self.scenario.setting,
            task=spec.task, metric=metric, higher_is_better=metric not in LOWER_IS_BETTER,
            matrices=self.rows, baseline=self.baseline, summary=summary,
            per_task=self.per_task, resumes=self.resumes, env=environment(cfg, self.device),
            summary_metric=summary_metric(spec.task, metric, "bits_per_byte" in self.rows),
            pretrained=pretrained,
            fwt_note=fwt_note(spec.task, self.scenario.setting, pretrained),
            curves=curves, stability_gap=transitions, general=general)


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
