"""What a run records about where it ran, and whether its result can be reproduced exactly."""

from __future__ import annotations

import functools
import platform
import subprocess
from pathlib import Path

import torch

from harness.config import processes


def environment(cfg, device: torch.device) -> dict:
    """What a reader needs to reproduce the run, and whether it can be reproduced exactly."""
    env = {"python": platform.python_version(), "host": platform.node(),
           "platform": platform.platform(), "cuda": torch.version.cuda,
           "device": str(device), "torch_threads": torch.get_num_threads()}
    env.update(_versions())
    env.update(_git_state())
    exact, why = _reproducibility(cfg, device)
    env["deterministic"], env["exactly_reproducible"] = cfg.trainer.deterministic, exact
    env["reproducibility_note"] = why
    return env


def _reproducibility(cfg, device: torch.device) -> tuple[bool, str]:
    if not cfg.trainer.deterministic:
        return False, "trainer.deterministic=false: kernels may differ from run to run"
    if device.type == "cuda":
        return False, ("GPU run: some CUDA kernels (scatter_add, index_put, atomics) are "
                       "non-deterministic; scores may differ in the last digits between runs")
    if processes(cfg.trainer) > 1:
        return False, "several processes: all-reduce order may change the last digits"
    return True, "CPU, deterministic: the same config and seed give identical results"


# Looked up once per process (a sweep runs many experiments in one): the packages and the
# code that were imported cannot change under a running process.
@functools.cache
def _versions() -> dict:
    from importlib import metadata

    versions = {}
    for package in ("torch", "lightning", "avalanche-lib", "numpy", "omegaconf", "wandb",
                    "scikit-learn"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    return versions


@functools.cache
def _git_state() -> dict:
    here = Path(__file__).resolve().parent
    state: dict = {"git_commit": None, "git_dirty": None}
    try:
        state["git_commit"] = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
            cwd=here).stdout.strip() or None
        if state["git_commit"]:
            state["git_dirty"] = bool(subprocess.run(
                ["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                text=True, timeout=5, cwd=here).stdout.strip())
    except (OSError, subprocess.SubprocessError):
        pass
    return state
