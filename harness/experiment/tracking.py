"""Weights & Biases: offline unless the user is online.

Mode, in order: ``wandb.mode`` in the config, then ``WANDB_MODE`` in the environment, then
"online" if the user is logged in (``WANDB_API_KEY`` or a netrc entry), else "offline".
Offline runs land in ``<run dir>/wandb/offline-run-*``; ``wandb sync <that dir>`` publishes
them later. Only rank zero creates a logger, so one experiment is one W&B run.
"""

from __future__ import annotations

import netrc
import os
from pathlib import Path


def wandb_mode(configured: str | None) -> str:
    if configured:
        return configured
    if os.environ.get("WANDB_MODE"):
        return os.environ["WANDB_MODE"]
    return "online" if _logged_in() else "offline"


def _logged_in() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        return netrc.netrc().authenticators("api.wandb.ai") is not None
    except (OSError, netrc.NetrcParseError):
        return False


INIT_TIMEOUT_S = 30.0  # a bounded wait for the W&B server; RETAIN_WANDB_INIT_TIMEOUT overrides


class WandbRun:
    """A W&B run logged as Lightning's ``WandbLogger`` logs (so dashboards read the same):
    every metric is plotted against ``trainer/global_step``, retain's stream-wide step.
    W&B is used directly: importing Lightning for its logger would cost every run seconds."""

    STEP = "trainer/global_step"

    def __init__(self, experiment):
        self.experiment = experiment
        experiment.define_metric(self.STEP)
        experiment.define_metric("*", step_metric=self.STEP, step_sync=True)

    def log_hyperparams(self, params: dict) -> None:
        self.experiment.config.update(params, allow_val_change=True)

    def log_metrics(self, metrics: dict, step: int) -> None:
        self.experiment.log({**metrics, self.STEP: step})

    def log_table(self, key: str, columns: list[str], data: list[list], step: int) -> None:
        import wandb

        self.log_metrics({key: wandb.Table(columns=columns, data=data)}, step)


class Tracker:
    """Logs a run's config, per-step metrics, score matrices and summary to W&B.

    W&B trouble never stops a run: an online start that fails or takes longer than
    ``INIT_TIMEOUT_S`` falls back to offline mode, an offline start that fails disables
    logging, and an error while logging disables logging for the rest of the run; each with a
    warning on stderr. A resumed run logs to the same W&B run (its id is kept in the run dir).
    """

    def __init__(self, cfg, run_dir: Path, config_dict: dict, group: str):
        os.environ.setdefault("WANDB_SILENT", "true")
        self.logger, self.mode = None, wandb_mode(cfg.wandb.mode)
        for attempt, mode in enumerate(dict.fromkeys([self.mode, "offline"])):
            try:
                # a failed online start keeps its id busy in the W&B service: take a new one
                run_id = _run_id(Path(run_dir), fresh=attempt > 0)
                self.logger = self._start(cfg, Path(run_dir), group, mode, run_id)
                self.logger.log_hyperparams(config_dict)
                self.mode = mode
                return
            except Exception as err:
                self._abandon()
                then = "switching to offline mode" if mode == "online" else "W&B logging is off"
                _warn(f"W&B could not start in {mode} mode ({_first_line(err)}); {then}")

    @staticmethod
    def _start(cfg, run_dir: Path, group: str, mode: str, run_id: str) -> WandbRun:
        import wandb

        timeout = float(os.environ.get("RETAIN_WANDB_INIT_TIMEOUT", INIT_TIMEOUT_S))
        return WandbRun(wandb.init(
            project=cfg.wandb.project, entity=cfg.wandb.entity, name=run_dir.name, mode=mode,
            dir=str(run_dir), id=run_id, resume="allow",
            settings=wandb.Settings(init_timeout=timeout), **identity(cfg.wandb, group),
        ))

    def _abandon(self) -> None:
        self.logger = None
        try:
            import wandb

            if wandb.run is not None:
                wandb.run.finish(exit_code=1)
        except Exception:
            pass

    def _guard(self, what: str, call) -> None:
        if self.logger is None:
            return
        try:
            call()
        except Exception as err:
            _warn(f"W&B failed while {what} ({_first_line(err)}); W&B logging is off from now "
                  "on, the run goes on")
            self._abandon()

    def log_metrics(self, step: int, metrics: dict) -> None:
        self._guard("logging metrics", lambda: self.logger.log_metrics(metrics, step=step))

    def log_results(self, results: dict, step: int) -> None:
        self._guard("logging results", lambda: self._log_results(results, step))

    def _log_results(self, results: dict, step: int) -> None:
        names = results["task_names"]
        for metric, R in results["matrices"].items():
            rows = [[f"after {i + 1}: {names[i]}", *row] for i, row in enumerate(R)]
            self.logger.log_table(f"matrix/{metric}", columns=["trained", *names], data=rows,
                                  step=step)
        general = results.get("general")
        if general:  # the held-out set's scores, untrained then after each task
            metrics = list(general["after"])
            rows = [["untrained", *[general["before"][m] for m in metrics]]]
            rows += [[f"after {i + 1}: {names[i]}", *[general["after"][m][i] for m in metrics]]
                     for i in range(len(names))]
            self.logger.log_table(f"general/{general['name']}", columns=["trained", *metrics],
                                  data=rows, step=step)
        summary = {k: v for k, v in results["summary"].items() if v is not None}
        self.logger.experiment.summary.update(summary)

    def finish(self, status: str = "complete") -> str | None:
        """Close the W&B run; returns the local run directory for `wandb sync`."""
        if self.logger is None:
            return None
        try:
            run_dir = getattr(self.logger.experiment, "dir", None)
            self.logger.experiment.finish(exit_code=0 if status == "complete" else 1)
            import wandb

            wandb.teardown()  # waits for the writer: the offline run is complete on disk now
            return str(Path(run_dir).parent) if run_dir else None
        except Exception as err:  # a broken W&B must never lose the results
            _warn(f"W&B could not finish cleanly: {_first_line(err)}")
            return None


def identity(cfg, strategy: str) -> dict:
    """Group, job type and tags of a run. A sweep's runs (``wandb.sweep``, set by ``retain
    sweep``) form one group named after the sweep, with job type "sweep" and a ``sweep:<name>``
    tag, so synced sweeps do not mix inside strategy groups; other runs are grouped by
    strategy. ``wandb.group`` overrides the group either way."""
    tags = list(cfg.tags)
    if cfg.sweep:
        tags.append(f"sweep:{cfg.sweep}")
    return {"group": cfg.group or cfg.sweep or strategy,
            "job_type": "sweep" if cfg.sweep else "run", "tags": tags}


def _run_id(run_dir: Path, fresh: bool = False) -> str:
    """The W&B run id of this run directory, created once, so a resume continues that run."""
    import secrets

    path = run_dir / ".wandb-id"
    if not fresh and path.is_file():
        return path.read_text().strip()
    run_id = secrets.token_hex(4)
    from harness.experiment.results import atomic_write_text

    atomic_write_text(path, run_id)
    return run_id


def _first_line(err: Exception) -> str:
    text = str(err).strip()
    return f"{type(err).__name__}: {text.splitlines()[0]}" if text else type(err).__name__


def _warn(message: str) -> None:
    from harness.runtime.progress import say

    say(f"warning: {message}")
