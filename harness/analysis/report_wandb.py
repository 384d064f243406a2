"""``retain report --wandb``: the comparison published to W&B as a summary run.

Online, every scenario's comparison table and every row's mean matrix are logged to one run
(job type "report"). Offline, nothing is sent: it prints the ``wandb sync`` command of every
run's own offline log, with its real path, and succeeds (the HTML report is complete alone).
"""

from __future__ import annotations

import os
import shlex
import sys
from pathlib import Path

import numpy as np

from harness.analysis import compare
from harness.analysis.report_assets import plural


def publish_wandb(tables: list[compare.Table], runs: list[dict], paths, project: str | None,
                  entity: str | None) -> int:
    """Log the comparison (one wandb.Table per scenario) and every row's mean matrix to a
    summary run. Offline (no API key, or WANDB_MODE offline/disabled) it explains how to
    publish later and still succeeds: the HTML report is already written."""
    cfg = (runs[0].get("config") or {}).get("wandb") or {}
    project = project or cfg.get("project") or "retain"
    entity = entity or cfg.get("entity")
    if not wandb_online():
        print(offline_instructions(runs, paths), file=sys.stderr)
        return 0
    import wandb

    try:
        run = wandb.init(project=project, entity=entity, job_type="report",
                         name=f"report-{'-'.join(t.scenario for t in tables)}"[:120],
                         config={"sources": [str(p) for p in paths], "n_runs": len(runs)})
    except Exception as err:  # noqa: BLE001 - any failure to reach W&B means "offline"
        print(f"W&B is unreachable ({err}).\n{offline_instructions(runs, paths)}",
              file=sys.stderr)
        return 0
    from harness.analysis.report import matrices, task_names

    for t in tables:
        run.log({f"{t.scenario}/comparison": wandb_table(t)})
        for row in t.rows:
            stack = matrices(row, t.metric)
            if stack is not None:
                names = task_names(row, stack.shape[1])
                mean = np.nanmean(stack, axis=0)
                run.log({f"{t.scenario}/matrix/{row.group.label}": wandb.Table(
                    columns=["after task", *names],
                    data=[[names[i], *map(float, mean[i])] for i in range(len(names))])})
    print(f"published the comparison to W&B: {run.url}")
    run.finish()
    return 0


def wandb_table(t: compare.Table):
    import wandb

    keys = [k for k, _ in t.columns]
    cols = ["strategy", "n", *[f"{k} mean" for k in keys], *[f"{k} ci95" for k in keys],
            f"delta vs {t.baseline}", "delta bootstrap low", "delta bootstrap high", "p",
            "p Holm", "significant (Holm p < 0.05)", "seeds needed"]
    data = []
    for row in t.rows:
        pr = row.paired.get(keys[0])
        data.append([row.group.label, len(row.group.runs),
                     *[row.stats[k].mean if row.stats[k] else None for k in keys],
                     *[row.stats[k].ci95 if row.stats[k] else None for k in keys],
                     *([pr.mean_diff, pr.boot_low, pr.boot_high, pr.p, row.p_holm.get(keys[0]),
                        compare.significant(row, keys[0]), pr.seeds_needed] if pr
                       else [None] * 7)])
    return wandb.Table(columns=cols, data=data)


def wandb_online() -> bool:
    """Logged in and not forced offline; decided without touching the network."""
    if os.environ.get("WANDB_MODE", "").lower() in ("offline", "dryrun", "disabled"):
        return False
    if os.environ.get("WANDB_API_KEY"):
        return True
    import netrc
    from urllib.parse import urlparse

    host = urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")).hostname
    try:
        return netrc.netrc().authenticators(host) is not None
    except (OSError, netrc.NetrcParseError):
        return False


def offline_instructions(runs: list[dict], paths) -> str:
    offline = sorted({str(d) for r in runs
                      for d in Path(r.get("_path", ".")).glob("wandb/offline-run-*")})
    lines = ["W&B is offline (not logged in, or WANDB_MODE=offline): nothing was published; "
             "the HTML report is complete on its own.",
             "To publish from a machine with network access:",
             "  wandb login"]
    if offline:
        lines.append(f"  # the runs' own offline logs ({plural(len(offline), 'run')}):")
        lines += [f"  wandb sync {shlex.quote(path)}" for path in offline]
    else:
        lines.append("  (no offline W&B runs were found under these runs: they ran with "
                     "logger=none or were synced already)")
    lines.append(f"  retain report {' '.join(str(p) for p in paths)} --wandb    "
                 "# then publishes this comparison")
    return "\n".join(lines)
