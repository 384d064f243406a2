"""Cost of evaluation during training, as a share of the training time.

The shipped stability-gap experiment (``configs/experiments/stability_gap.yaml``) scores every
test task on ``eval.subsample`` examples every ``eval.every_n_steps`` steps. This bench runs
the default job (text-domains, gpt: ``retain run`` with no arguments) with those two settings,
and the shipped experiment itself, and prints for each the time spent evaluating during
training against the training time of the same run (the run measures both: its training time
excludes the evaluations). Target: at most 15% on the default job.

With ``--baseline`` it also runs the default job with evaluation off, to show that training
itself is not slowed (same steps, training time alongside). One torch thread, W&B off, the
untrained evaluation on as in the default job.

    python -m bench continual_eval [--baseline] [--jobs default shipped]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from bench.common import print_table

EXPERIMENT = Path(__file__).resolve().parents[1] / "configs" / "experiments" / "stability_gap.yaml"


def shipped_settings() -> list[str]:
    from harness import config

    cfg = config.load(str(EXPERIMENT))
    return [f"eval.every_n_steps={cfg.eval.every_n_steps}", f"eval.subsample={cfg.eval.subsample}"]


def measure(experiment: str | None, overrides: list[str], out: str) -> dict:
    from harness import config
    from harness.experiment.run import run

    cfg = config.load(experiment, ["logger=none", "trainer.progress=false", f"out_dir={out}",
                                   *overrides])
    results = run(cfg)
    s = results["summary"]
    curve = s.get("curve_eval_time_s")
    points = len((results.get("curves") or {}).get("step") or [])
    return {"steps": sum(t["steps"] for t in results["per_task"]), "points": points,
            "train s": f"{s['train_time_s']:.1f}",
            "eval during training s": "–" if curve is None else f"{curve:.1f}",
            "share of training": "–" if curve is None else f"{curve / s['train_time_s']:.1%}",
            "per point ms": "–" if not points else f"{1000 * curve / points:.0f}",
            "end-of-task eval s": f"{s['eval_time_s']:.1f}"}


def main(argv: list[str] | None = None) -> list[dict]:
    p = argparse.ArgumentParser(prog="python -m bench continual_eval")
    p.add_argument("--jobs", nargs="+", default=["default", "shipped"],
                   choices=["default", "shipped"])
    p.add_argument("--baseline", action="store_true",
                   help="also run the default job with evaluation off")
    args = p.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    settings = shipped_settings()
    rows = []
    with tempfile.TemporaryDirectory() as out:
        if args.baseline:
            rows.append({"job": "default job, evaluation off",
                         **measure(None, ["name=off"], out)})
        if "default" in args.jobs:
            rows.append({"job": f"default job, {' '.join(settings)}",
                         **measure(None, [*settings, "name=default"], out)})
        if "shipped" in args.jobs:
            rows.append({"job": "stability_gap.yaml",
                         **measure(str(EXPERIMENT), ["name=shipped"], out)})
    print_table("evaluation during training: its time against the run's training time "
                "(target: <= 15% on the default job)", rows)
    return rows


if __name__ == "__main__":
    main()
