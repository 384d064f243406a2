"""Weights & Biases through Lightning's ``WandbLogger``: offline unless the user is online.

Mode, in order: ``wandb.mode`` in the config, then ``WANDB_MODE`` in the environment, then
"online" if the user is logged in (``WANDB_API_KEY`` or a netrc entry), else "offline".
Offline runs land in ``<run dir>/wandb/offline-run-*``; ``wandb sync <that dir>`` publishes
them later. Only rank zero creates a logger, so one experiment is one W&B run.
"""

from __future__ import annotations

import netrc
import os
import warnings
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


class Tracker:
    """Logs a run's config, per-step metrics, score matrices and summary to W&B."""

    def __init__(self, cfg, run_dir: Path, config_dict: dict, group: str):
        from lightning.pytorch.loggers import WandbLogger

        mode = wandb_mode(cfg.wandb.mode)
        os.environ.setdefault("WANDB_SILENT", "true")
        self.logger = WandbLogger(
            project=cfg.wandb.project, entity=cfg.wandb.entity, name=run_dir.name,
            save_dir=str(run_dir), group=cfg.wandb.group or group, tags=list(cfg.wandb.tags),
            mode=mode, dir=str(run_dir),
        )
        self.mode = mode
        self.logger.log_hyperparams(config_dict)

    def log_metrics(self, step: int, metrics: dict) -> None:
        self.logger.log_metrics(metrics, step=step)

    def log_results(self, results: dict, step: int) -> None:
        names = results["task_names"]
        for metric, R in results["matrices"].items():
            rows = [[f"after {i + 1}: {names[i]}", *row] for i, row in enumerate(R)]
            self.logger.log_table(f"matrix/{metric}", columns=["trained", *names], data=rows,
                                  step=step)
        summary = {k: v for k, v in results["summary"].items() if v is not None}
        self.logger.experiment.summary.update(summary)

    def finish(self, status: str = "complete") -> str | None:
        """Close the W&B run; returns the local run directory for `wandb sync`."""
        try:
            run_dir = getattr(self.logger.experiment, "dir", None)
            self.logger.experiment.finish(exit_code=0 if status == "complete" else 1)
            return str(Path(run_dir).parent) if run_dir else None
        except Exception as err:  # a broken W&B must never lose the results
            warnings.warn(f"W&B could not finish cleanly: {err}", stacklevel=2)
            return None
