"""Collective helpers that are no-ops on a single process.

Strategies and memories call these instead of ``torch.distributed`` directly, so the same code
runs on one CPU process and under Lightning's DDP (gloo or NCCL).

This module also owns how the ranks are started and stopped (``make_strategy``): Lightning's
DDP with a configurable process-group timeout (``trainer.ddp_timeout_s``), and, when Lightning
starts the other ranks of this machine itself, a watchdog in rank zero. Lightning's own
observer SIGKILLs rank zero a few seconds after any other rank dies, so the run directory was
left "running" with no error; the watchdog instead names the rank that failed and its error,
lets rank zero mark the run failed, and stops the remaining ranks. A rank that hangs (instead
of dying) makes the others fail after ``ddp_timeout_s`` in their next collective. See
``docs/distributed.md``.
"""

from __future__ import annotations

import atexit
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from datetime import timedelta
from pathlib import Path

import torch
import torch.distributed as tdist
from torch import Tensor

from harness.config import processes
from harness.errors import Interrupted


class Dist:
    @property
    def active(self) -> bool:
        return tdist.is_available() and tdist.is_initialized()

    @property
    def rank(self) -> int:
        return tdist.get_rank() if self.active else 0

    @property
    def world_size(self) -> int:
        return tdist.get_world_size() if self.active else 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def all_reduce_(self, tensor: Tensor, op: str = "sum") -> Tensor:
        """In-place sum (or mean) over ranks."""
        if self.active and self.world_size > 1:
            tdist.all_reduce(tensor, op=tdist.ReduceOp.SUM)
            if op == "mean":
                tensor /= self.world_size
        return tensor

    def all_gather_object(self, obj) -> list:
        if not (self.active and self.world_size > 1):
            return [obj]
        out = [None] * self.world_size
        tdist.all_gather_object(out, obj)
        return out

    def all_gather_cat(self, tensor: Tensor) -> Tensor:
        """Concatenate a tensor of possibly different lengths (dim 0) from every rank."""
        if not (self.active and self.world_size > 1):
            return tensor
        parts = self.all_gather_object(tensor.cpu())
        return torch.cat(parts).to(tensor.device)

    def barrier(self) -> None:
        if self.active and self.world_size > 1:
            tdist.barrier()


DIST = Dist()


def launch_rank() -> int:
    """This process's global rank, also before the process group exists.

    Lightning's launcher starts the other ranks with ``LOCAL_RANK``/``NODE_RANK`` set (torchrun
    and SLURM set ``RANK``/``SLURM_PROCID``), and the group is only created inside the first
    ``fit``; the task loop must know before that whether it is rank zero (it owns the run
    directory and the W&B run).
    """
    if DIST.active:
        return DIST.rank
    for var in ("RANK", "SLURM_PROCID"):
        if os.environ.get(var):
            return int(os.environ[var])
    local, node = int(os.environ.get("LOCAL_RANK", 0)), int(os.environ.get("NODE_RANK", 0))
    return local + node * 1_000  # only "is it zero" matters before the group exists


# -- starting and stopping the ranks --------------------------------------------------------

FAULT_ENV = "RETAIN_RANK_FAULT"  # test hook: "rank=1,task=2[,mode=raise|hang|exit]"
_ERRORS_ENV = "RETAIN_RANK_ERRORS"  # folder where ranks > 0 leave their error for rank zero


class RankFailure(RuntimeError):
    """Another rank of this run failed; the message names it and its error."""


def fault_point(task: int) -> None:
    """Fail on purpose where ``RETAIN_RANK_FAULT`` says (tests of the failure handling only).

    ``task`` is 0-based; the variable names it 1-based, as the log lines do.
    """
    spec = os.environ.get(FAULT_ENV)
    if not spec:
        return
    want = dict(part.split("=", 1) for part in spec.split(",") if "=" in part)
    if int(want.get("rank", 0)) != launch_rank() or int(want.get("task", 1)) != task + 1:
        return
    mode = want.get("mode", "raise")
    if mode == "hang":
        while True:
            time.sleep(3600)
    if mode == "exit":
        os._exit(3)
    raise RuntimeError(f"injected fault on rank {launch_rank()} at task {task + 1} "
                       f"({FAULT_ENV}={spec})")


def on_failure(err: BaseException) -> BaseException:
    """Called by the task loop on every rank when the run fails with ``err``.

    A rank other than zero leaves its error where rank zero's watchdog reads it. Rank zero
    stops the other ranks (they would wait in a collective for it) and returns a
    ``RankFailure`` naming the rank that died and its error when that is what made ``err``
    happen (rank zero then sees only a broken connection), else ``err`` itself.
    """
    rank = launch_rank()
    if rank != 0:
        folder = os.environ.get(_ERRORS_ENV)
        if folder:
            try:
                Path(folder, f"rank{rank}.txt").write_text(f"{type(err).__name__}: {err}")
            except OSError:
                pass
        return err
    if not WATCHDOG.procs:
        return err
    quick = isinstance(err, KeyboardInterrupt) or "timed out" in str(err).lower()
    failure = WATCHDOG.peer_failure(wait_s=0 if quick else 5.0)
    alive = [i + 1 for i, p in enumerate(WATCHDOG.procs) if p.poll() is None]
    WATCHDOG.stop_ranks()
    stopped = not isinstance(err, Exception) or isinstance(err, Interrupted)
    if stopped or isinstance(err, RankFailure):
        return err
    first = str(err).strip().splitlines()[0] if str(err).strip() else ""
    if failure is not None:
        return RankFailure(f"{failure} (rank 0 then failed with {type(err).__name__}: {first})")
    if alive and "timed out" in first.lower():
        ranks = ", ".join(map(str, alive))
        return RankFailure(f"rank(s) {ranks} did not join a collective within "
                           f"trainer.ddp_timeout_s={WATCHDOG.timeout_s:g} s and were stopped "
                           f"(rank 0: {type(err).__name__}: {first})")
    return err


class Watchdog:
    """Rank zero's view of the ranks Lightning started on this machine.

    A thread polls them. When one exits with an error it is reported at once on stderr and
    ``failure`` is set; rank zero's own collective then fails (gloo notices the closed
    connection) and the task loop marks the run failed with ``failure`` as the reason. If rank
    zero is still running ``grace_s`` later (stuck in a collective that does not notice), the
    watchdog calls the ``on_fatal`` callbacks (which mark the run failed), stops the other
    ranks and ends the process with exit code 1.
    """

    def __init__(self):
        self.procs: list[subprocess.Popen] = []
        self.failure: str | None = None
        self.grace_s = 30.0
        self.timeout_s = 1800.0
        self.errors_dir: str | None = None
        self.on_fatal: list = []
        self._stopping = False
        self._thread: threading.Thread | None = None

    def watch(self, procs: list[subprocess.Popen]) -> None:
        self.procs = procs
        self._thread = threading.Thread(target=self._loop, name="retain-rank-watchdog",
                                        daemon=True)
        self._thread.start()
        atexit.register(self._at_exit)

    def _at_exit(self, wait_s: float = 10.0) -> None:
        """Rank zero is exiting: let the other ranks finish (they end with it), then stop any
        that are left, so that no process outlives the run."""
        deadline = time.monotonic() + wait_s
        while any(p.poll() is None for p in self.procs) and time.monotonic() < deadline:
            time.sleep(0.1)
        self.stop_ranks()

    def _loop(self) -> None:
        while not self._stopping:
            time.sleep(0.5)
            codes = [p.poll() for p in self.procs]
            if all(c == 0 for c in codes):
                return
            if self._stopping:
                return
            dead = [(i + 1, p) for i, p in enumerate(self.procs) if p.returncode]
            if dead:
                self._fail(*dead[0])
                return

    def describe(self, rank: int, proc: subprocess.Popen) -> str:
        code = proc.returncode
        how = f"was killed by signal {-code}" if code < 0 else f"exited with code {code}"
        error = ""
        if self.errors_dir:
            path = Path(self.errors_dir, f"rank{rank}.txt")
            if path.is_file():
                error = f": {path.read_text().strip()}"
        return f"rank {rank} (pid {proc.pid}) {how}{error}"

    def _fail(self, rank: int, proc: subprocess.Popen) -> None:
        self.failure = self.describe(rank, proc)
        print(f"retain: {self.failure}; stopping the run", file=sys.stderr, flush=True)
        deadline = time.monotonic() + self.grace_s
        while time.monotonic() < deadline and threading.main_thread().is_alive():
            time.sleep(0.2)
        if not threading.main_thread().is_alive():
            return
        # Rank zero did not notice by itself (e.g. NCCL waiting out its timeout): end it.
        for callback in self.on_fatal:
            try:
                callback(f"RankFailure: {self.failure}")
            except Exception:  # noqa: BLE001 - the process ends either way
                pass
        self.stop_ranks()
        print(f"retain: error: {self.failure}", file=sys.stderr, flush=True)
        os._exit(1)

    def peer_failure(self, wait_s: float = 5.0) -> str | None:
        """The failure of another rank, waiting a little for its process to be seen ending."""
        deadline = time.monotonic() + wait_s
        while self.failure is None and self.procs and time.monotonic() < deadline:
            dead = [(i + 1, p) for i, p in enumerate(self.procs) if p.poll()]
            if dead:
                self.failure = self.describe(*dead[0])
                break
            time.sleep(0.1)
        return self.failure

    def stop_ranks(self, grace_s: float = 3.0) -> None:
        """Stop the ranks still running: SIGTERM, then SIGKILL (a rank blocked in a collective
        never returns to Python to handle SIGTERM)."""
        self._stopping = True
        alive = [p for p in self.procs if p.poll() is None]
        for p in alive:
            p.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        while alive and time.monotonic() < deadline:
            time.sleep(0.05)
            alive = [p for p in alive if p.poll() is None]
        for p in alive:
            p.kill()
            p.wait()


WATCHDOG = Watchdog()


def make_strategy(cfg):
    """The Lightning strategy for ``TrainerConfig``: its name, or a watched DDP strategy."""
    name = cfg.strategy
    if name == "ddp_spawn":
        from harness.errors import UserError

        raise UserError("trainer.strategy=ddp_spawn is not supported: it runs each task's fit in "
                        "new processes, so what strategies accumulate during training (SI's "
                        "path integral, step counts) is lost; use trainer.strategy=ddp")
    if name != "ddp" and not (name == "auto" and processes(cfg) > 1):
        return name
    WATCHDOG.timeout_s = float(cfg.ddp_timeout_s)
    WATCHDOG.grace_s = min(30.0, WATCHDOG.timeout_s)
    return _watched_ddp_class()(timeout=timedelta(seconds=cfg.ddp_timeout_s))


_WATCHED_DDP = None


def _watched_ddp_class():
    """``DDPStrategy`` whose launcher runs ``WATCHDOG`` instead of Lightning's observer.

    Built lazily so that importing this module never imports Lightning.
    """
    global _WATCHED_DDP
    if _WATCHED_DDP is not None:
        return _WATCHED_DDP
    from lightning.fabric.utilities.distributed import _set_num_threads_if_needed
    from lightning.pytorch.strategies import DDPStrategy
    from lightning.pytorch.strategies.launchers import _SubprocessScriptLauncher

    class WatchedLauncher(_SubprocessScriptLauncher):
        # Lightning's launch() minus its _ChildProcessObserver (which SIGKILLs rank zero).
        def launch(self, function, *args, trainer=None, **kwargs):
            env = self.cluster_environment
            env.validate_settings(num_devices=self.num_processes, num_nodes=self.num_nodes)
            if not env.creates_processes_externally:
                WATCHDOG.errors_dir = tempfile.mkdtemp(prefix="retain-ranks-")
                os.environ[_ERRORS_ENV] = WATCHDOG.errors_dir  # inherited by the ranks
                self._call_children_scripts()
                WATCHDOG.watch(self.procs)
            _set_num_threads_if_needed(num_processes=self.num_processes)
            return function(*args, **kwargs)

    class WatchedDDPStrategy(DDPStrategy):
        def _configure_launcher(self) -> None:
            super()._configure_launcher()
            if type(self._launcher) is _SubprocessScriptLauncher:
                self._launcher = WatchedLauncher(self.cluster_environment, self.num_processes,
                                                 self.num_nodes)

    _WATCHED_DDP = WatchedDDPStrategy
    return WatchedDDPStrategy
