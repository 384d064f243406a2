"""The task loop: ``run(cfg) -> results``, importable and plain.

For each experience of the scenario's stream::

    before_task hooks -> Lightning fit on that experience -> after_task hooks
      -> evaluate on every test experience -> one row of the score matrix -> checkpoint

Only rank zero writes the run directory and logs; every rank trains and evaluates its shard.
"""

from __future__ import annotations

import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

import lightning as L
import torch

from harness import checkpoint
from harness.config import config_hash, strategy_names, to_dict, to_yaml
from harness.console import say
from harness.data import BatchLoader
from harness.distributed import DIST, launch_rank
from harness.errors import UserError
from harness.evaluate import evaluate
from harness.metrics import LOWER_IS_BETTER, summarize
from harness.network import Network
from harness.registry import MODELS, SCENARIOS, STRATEGIES
from harness.results import RunDir
from harness.system import ContinualSystem
from harness.trainer import make_trainer
from strategies.base import Context


def run(cfg, resume: RunDir | None = None) -> dict:
    """Train on the whole stream and return the results dict (also written to the run dir)."""
    started = time.time()
    L.seed_everything(cfg.seed, verbose=False)
    scenario = SCENARIOS.get(cfg.scenario.name).cls(cfg.scenario, cfg.seed)
    spec = scenario.spec
    model = MODELS.get(cfg.model.name).cls(cfg.model, spec)
    task_classes = scenario.classes_per_task if scenario.setting == "task-il" else None
    net = Network(model, spec, task_classes)
    names = strategy_names(cfg)
    strategies = [STRATEGIES.get(n).cls(getattr(cfg.strategy, n)) for n in names]
    main = launch_rank() == 0
    # Every rank reads the checkpoint it resumes from; only rank zero writes the run dir.
    run_dir = (resume or RunDir.create(cfg.out_dir, cfg.name or default_name(cfg))) if main \
        else None
    chash = config_hash(cfg)
    tracker = None
    try:
        if main:
            run_dir.write_config(to_yaml(cfg))
            run_dir.set_status("running", config_hash=chash)
            tracker = _tracker(cfg, run_dir, "+".join(names))
        sink = _metrics_sink(run_dir, tracker) if main else None
        system = ContinualSystem(net, strategies, cfg.trainer, on_metrics=sink)
        loop = TaskLoop(cfg, scenario, system, run_dir)
        loop.restore(resume.checkpoint_dir if resume else None)
        loop.train_all()
        results = loop.results(chash, names, started)
        if main:
            run_dir.finish(results)
            if tracker:
                tracker.log_results(results, system.stream_step)
                results["wandb_dir"] = tracker.finish("complete")
        return results
    except BaseException as err:
        if main:
            run_dir.fail(f"{type(err).__name__}: {err}", chash)
            if tracker:
                tracker.finish("failed")
        raise


class TaskLoop:
    """The state of one pass over the stream: position, score rows, timings."""

    def __init__(self, cfg, scenario, system: ContinualSystem, run_dir: RunDir | None):
        self.cfg, self.scenario, self.system, self.run_dir = cfg, scenario, system, run_dir
        self.n = scenario.n_experiences
        self.device = _run_device(cfg)
        self.position = 0  # next experience to train
        self.rows: dict[str, list[list[float]]] = {}
        self.baseline: dict[str, list[float]] | None = None
        self.per_task: list[dict] = []

    def restore(self, checkpoint_dir: Path | None) -> None:
        """Continue from the last good checkpoint in ``checkpoint_dir``, if there is one."""
        if checkpoint_dir is None:
            return
        state = checkpoint.load(checkpoint_dir / "last.ckpt")
        if state is None:
            return
        self.system.net.load_state_dict(state["net"])
        for strategy, s_state in zip(self.system.strategies, state["strategies"]):
            strategy.load_state_dict(s_state)
        self.position, self.rows = state["position"], state["rows"]
        self.baseline, self.per_task = state["baseline"], state["per_task"]
        self.system.stream_step = state["stream_step"]
        checkpoint.set_rng_state(state["rng"])
        say(f"resuming {checkpoint_dir.parent} at task {self.position + 1}/{self.n}")

    def train_all(self) -> None:
        tests = [self.scenario.test_data(j) for j in range(self.n)]
        if self.cfg.eval_init and self.baseline is None:
            self.system.net.to(self.device)
            self.baseline = evaluate(self.system.net, tests, self.cfg.trainer.eval_batch_size,
                                     self.cfg.trainer.precision)
        for i in range(self.position, self.n):
            self.train_task(i, tests)

    def train_task(self, i: int, tests) -> None:
        name = self.scenario.task_names[i]
        say(f"task {i + 1}/{self.n}: {name}")
        ctx = self._context(i)
        self.system.ctx = ctx
        for strategy in self.system.strategies:
            strategy.before_task(ctx)
        loader = ctx.make_loader(self.scenario.train_data(i))
        for strategy in self.system.strategies:
            loader = strategy.train_loader(ctx, loader)
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()
        t0, step0 = time.time(), self.system.stream_step
        trainer = make_trainer(self.cfg.trainer, f"task {i + 1}/{self.n} ({name})",
                               self.device.type == "cuda")
        trainer.fit(self.system, train_dataloaders=loader)
        self.system.net.to(self.device)  # Lightning's teardown moves the module to CPU
        for strategy in self.system.strategies:
            strategy.after_task(ctx)
        t1 = time.time()
        row = evaluate(self.system.net, tests, self.cfg.trainer.eval_batch_size,
                       self.cfg.trainer.precision)
        for metric, scores in row.items():
            self.rows.setdefault(metric, []).append(scores)
        self.per_task.append({
            "task": i, "name": name, "steps": self.system.stream_step - step0,
            "train_time_s": t1 - t0, "eval_time_s": time.time() - t1,
            "peak_rss_mb": _peak_rss_mb(), "peak_gpu_mb": _peak_gpu_mb(),
        })
        self.position = i + 1
        self._save_checkpoint()

    def _context(self, i: int) -> Context:
        cfg = self.cfg

        def make_loader(data, shuffle: bool = True):
            # Reads rank and world size when iterated: under DDP the process group only
            # exists once Lightning's first fit has started.
            return DistLoader(data, cfg.trainer.batch_size, shuffle=shuffle,
                              seed=cfg.seed * 1000 + i)

        return Context(system=self.system, task_id=i, n_tasks=self.n,
                       train_data=self.scenario.train_data, make_loader=make_loader,
                       batch_size=cfg.trainer.batch_size, dist=DIST, seed=cfg.seed)

    def _save_checkpoint(self) -> None:
        states = [s.state_dict() for s in self.system.strategies]  # may be collective
        if self.run_dir is None:
            return
        checkpoint.save(self.run_dir.checkpoint_dir / "last.ckpt", {
            "position": self.position, "net": self.system.net.state_dict(),
            "strategies": states, "rows": self.rows, "baseline": self.baseline,
            "per_task": self.per_task, "stream_step": self.system.stream_step,
            "rng": checkpoint.rng_state(),
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
            "per_task": self.per_task, "env": environment(),
        }


class DistLoader(BatchLoader):
    """A training BatchLoader whose shard is decided when it is iterated.

    ``batch_size`` is the global batch: each of W ranks takes ``batch_size / W`` examples
    from its interleaved shard, so the union of the ranks' k-th batches is exactly the k-th
    batch of a single-process run, and DDP's gradient average equals its gradient.
    """

    def __init__(self, data, batch_size: int, *, shuffle: bool, seed: int):
        super().__init__(data, batch_size, shuffle=shuffle, seed=seed)
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


def environment() -> dict:
    import lightning

    env = {"python": platform.python_version(), "torch": torch.__version__,
           "lightning": lightning.__version__, "host": platform.node(),
           "platform": platform.platform(), "cuda": torch.version.cuda,
           "deterministic_gpu": False if torch.cuda.is_available() else None}
    try:
        env["git_commit"] = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
            cwd=Path(__file__).resolve().parent).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        env["git_commit"] = None
    return env


def _run_device(cfg) -> torch.device:
    acc = cfg.trainer.accelerator
    if acc in ("gpu", "cuda") or (acc == "auto" and torch.cuda.is_available()):
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    return torch.device("cpu")


def _tracker(cfg, run_dir: RunDir, group: str):
    if cfg.logger == "none" or cfg.wandb.mode == "disabled":
        return None
    from harness.tracking import Tracker

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


def _peak_gpu_mb() -> float | None:
    return torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available() else None
