"""Hand-made run directories for the compare and report tests (imported, not a pytest conftest).

``write_run`` writes what ``retain run`` writes for a complete run (architecture.md, "Run
directory"), with summary numbers derived from the matrix the way the harness defines them, so
tests can check aggregation against numbers they control.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

TASKS = ["0-1", "2-3", "4-5", "6-7", "8-9"]


def summary_from_matrix(acc: np.ndarray, base: np.ndarray, metric: str = "accuracy") -> dict:
    """avg = mean of the last row; BWT, FWT and forgetting as in Lopez-Paz & Ranzato / Chaudhry."""
    t = acc.shape[0]
    last = acc[-1]
    return {
        f"{metric}/avg": float(last.mean()),
        f"{metric}/bwt": float(np.mean([last[j] - acc[j, j] for j in range(t - 1)])),
        f"{metric}/fwt": float(np.mean([acc[j - 1, j] - base[j] for j in range(1, t)])),
        f"{metric}/forgetting": float(np.mean([acc[:-1, j].max() - last[j]
                                               for j in range(t - 1)])),
    }


def matrix(strength: float, rng: np.random.Generator, t: int = len(TASKS)) -> np.ndarray:
    """A plausible class-IL accuracy matrix: learned tasks decay by (1 - strength) per step."""
    acc = np.zeros((t, t))
    for i in range(t):
        for j in range(i + 1):
            acc[i, j] = 0.97 * strength ** (i - j) + rng.uniform(-0.02, 0.02)
        for j in range(i + 1, t):
            acc[i, j] = rng.uniform(0.0, 0.05)
    return acc.clip(0, 1)


def curves(acc: np.ndarray, steps: int = 20, every: int = 5) -> dict:
    """Curves of evaluation during training consistent with ``acc``: each old task dips to
    half its score at the first point after a task switch, then is back at its matrix value."""
    t = acc.shape[0]
    out = {"every_n_steps": every, "subsample": 16, "examples": [16] * t, "step": [],
           "task": [], "scores": {"accuracy": []}}
    for i in range(t):
        for k, step in enumerate(range(every, steps + 1, every)):
            row = [float(acc[i, j]) * (0.5 if k == 0 and j < i else 1.0) for j in range(t)]
            out["step"].append(i * steps + step)
            out["task"].append(i)
            out["scores"]["accuracy"].append(row)
    return out


def write_run(root: Path, name: str, strategy: str, seed: int, acc: np.ndarray, *,
              scenario: str = "split-digits", config_extra: dict | None = None,
              summary_extra: dict | None = None, status: str = "complete",
              with_curves: bool = False) -> Path:
    """One run directory with status.json and (when complete) results.json."""
    run_dir = Path(root) / name
    run_dir.mkdir(parents=True, exist_ok=True)
    base = np.full(acc.shape[1], 0.1)
    config = {"seed": seed, "name": name, "out_dir": str(root),
              "scenario": {"name": scenario, "n_experiences": acc.shape[0]},
              "strategy": {"name": strategy.split("+")}, "model": {"name": "mlp"}}
    for key, value in (config_extra or {}).items():  # dotted keys into the nested config
        node = config
        *parents, last = key.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[last] = value
    summary = summary_from_matrix(acc, base)
    summary.update({"wall_time_s": 10.0 + seed, "train_time_s": 8.0, "eval_time_s": 0.5,
                    "peak_rss_mb": 500.0, "strategy_memory_bytes": 0, "parameters": 20000})
    summary.update(summary_extra or {})
    results = {
        "format": 2, "status": "complete", "name": name, "run_dir": str(run_dir),
        "config_hash": f"hash-{name}", "config": config, "model": "mlp",
        "strategy": strategy, "scenario": scenario, "seed": seed,
        "task_names": TASKS[: acc.shape[1]], "setting": "class-il", "task": "classification",
        "metric": "accuracy", "higher_is_better": True,
        "matrices": {"accuracy": acc.tolist(), "loss": (1 - acc).tolist()},
        "baseline": {"accuracy": base.tolist(), "loss": (1 - base).tolist()},
        "summary": summary, "curves": curves(acc) if with_curves else None,
        "per_task": [{"task": i, "name": n, "train_time_s": 1.0, "eval_time_s": 0.1,
                      "steps": 40, "peak_rss_mb": 480.0}
                     for i, n in enumerate(TASKS[: acc.shape[1]])],
        "resumes": [],
        "env": {"python": "3.11", "torch": "x", "git_commit": "abc", "host": "test"},
    }
    (run_dir / "status.json").write_text(json.dumps({"status": status,
                                                      "config_hash": f"hash-{name}"}))
    if status == "complete":
        (run_dir / "results.json").write_text(json.dumps(results))
    return run_dir


def write_strategy_sweep(root: Path, seeds=(0, 1, 2), with_curves: bool = False) -> Path:
    """A small sweep directory: naive, replay at two buffer sizes, ewc; 3 seeds each; training
    FLOPs, and with ``with_curves`` evaluation during training."""
    rng = np.random.default_rng(0)
    plan = [("naive", 0.3, {}, 0), ("ewc", 0.4, {}, 4096),
            ("replay", 0.8, {"strategy.replay.mem_size": 100}, 100 * 64 * 4),
            ("replay", 0.9, {"strategy.replay.mem_size": 200}, 200 * 64 * 4)]
    for strategy, strength, extra, mem in plan:
        for seed in seeds:
            size = extra.get("strategy.replay.mem_size", "")
            write_run(root, f"{strategy}{size}-s{seed}", strategy, seed, matrix(strength, rng),
                      config_extra=extra, with_curves=with_curves,
                      summary_extra={"strategy_memory_bytes": mem,
                                     "wall_time_s": 5.0 + strength * 10,
                                     "train_flops": 1e9 * (1 + strength) + seed})
    return root
