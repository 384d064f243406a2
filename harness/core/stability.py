"""Stability-gap metrics from the curves of evaluation during training (``harness.core.curves``).

De Lange, van de Ven and Tuytelaars (ICLR 2023) showed that an old task's score falls sharply
right after a new task starts and then recovers, invisible in the end-of-task matrix. From
the curves ``a_j(s)`` (score on test task j after s optimizer steps; the points of task k are
those taken while task k trained, its last one at its last step, the *boundary*)::

    worst_j  = worst a_j(s) over every point after task j's boundary
    min-ACC  = mean_{j < T-1} worst_j                          ("worst" = highest bits)
    WC-ACC   = a_{T-1}(end) / T + (1 - 1/T) * min-ACC

and for each transition to task k >= 1 and each old task j < k, with ``b`` = a_j at task
k-1's boundary and ``w`` = its worst value during task k:

    depth         = b - w  (w - b for bits), at least 0
    worst_steps   = steps into task k at which w was reached
    recovery      = steps into task k until a_j first regains half the dip after w (None if
                    it does not within task k; 0 for no dip)
    recovered     = share of the dip regained at task k's boundary

min-ACC and WC-ACC are De Lange et al.'s for accuracy; for bits per token the same formulas
read "worst" as highest. The summary averages depth over every (transition, old task) pair
(an old task already forgotten cannot dip: its depth is 0, and min-ACC shows the loss), gives
the deepest dip, and averages the recovery steps over the pairs that dipped and recovered,
with the counts of both. All of it is plain Python: ``retain compare`` reads it without
torch.
"""

from __future__ import annotations

import math

RECOVERY = 0.5  # share of a dip regained to count as recovered: defined for partial recovery
GAP_METRICS = ("accuracy", "bits_per_token", "bits_per_byte")  # what curves are summarised on


def transitions(curves: dict, metric: str, higher_is_better: bool) -> list[dict]:
    """One record per (transition to task k, old task j)."""
    steps, tasks, rows = curves["step"], curves["task"], curves["scores"].get(metric) or []
    sign = 1.0 if higher_is_better else -1.0
    ends = _boundaries(tasks)
    out = []
    for k in sorted(ends):
        if k == 0 or k - 1 not in ends:
            continue
        start = steps[ends[k - 1]]
        during = [p for p, t in enumerate(tasks) if t == k]
        for j in range(k):
            before = rows[ends[k - 1]][j]
            points = [(steps[p] - start, rows[p][j]) for p in during if _ok(rows[p][j])]
            if not _ok(before) or not points:
                continue
            w_at, worst = min(points, key=lambda sv: sign * sv[1])
            depth = max(0.0, sign * (before - worst))
            end = points[-1][1]
            out.append({"task": k, "old_task": j, "boundary": before, "worst": worst,
                        "worst_steps": w_at, "depth": depth, "end": end,
                        "recovery_steps": _recovery(points, w_at, worst, depth, sign),
                        "recovered": 1.0 if depth == 0 else sign * (end - worst) / depth})
    return out


def worst_case(curves: dict, metric: str, higher_is_better: bool) -> dict:
    """min-ACC and WC-ACC (De Lange et al.); None when fewer than two tasks have points."""
    tasks, rows = curves["task"], curves["scores"].get(metric) or []
    ends = _boundaries(tasks)
    if len(ends) < 2:
        return {"worst": None, "wc": None}
    pick = min if higher_is_better else max
    worst = []
    for j in sorted(ends)[:-1]:
        after = [rows[p][j] for p, t in enumerate(tasks) if t > j and _ok(rows[p][j])]
        if after:
            worst.append(pick(after))
    last = max(ends)
    n = last + 1
    final = rows[ends[last]][last]
    if not worst or not _ok(final):
        return {"worst": None, "wc": None}
    mean_worst = sum(worst) / len(worst)
    return {"worst": mean_worst, "wc": final / n + (1 - 1 / n) * mean_worst}


def gap_summary(curves: dict | None, lower_is_better: set[str]) -> tuple[dict, dict]:
    """``({"<metric>/worst", "/wc", "/gap_depth", "/gap_depth_max", "/gap_recovery_steps",
    "/gap_dips", "/gap_recovered_dips"}, {metric: transitions})`` for the metrics of
    ``GAP_METRICS`` the curves hold; empty without curves."""
    summary, detail = {}, {}
    if not curves or not curves.get("step"):
        return summary, detail
    for metric in GAP_METRICS:
        if metric not in curves["scores"]:
            continue
        hib = metric not in lower_is_better
        pairs = transitions(curves, metric, hib)
        dips = [p for p in pairs if p["depth"] > 0]
        recovered = [p["recovery_steps"] for p in dips if p["recovery_steps"] is not None]
        summary.update({f"{metric}/{k}": v for k, v in worst_case(curves, metric, hib).items()})
        summary[f"{metric}/gap_depth"] = _mean([p["depth"] for p in pairs])
        summary[f"{metric}/gap_depth_max"] = max((p["depth"] for p in pairs), default=None)
        summary[f"{metric}/gap_recovery_steps"] = _mean(recovered)
        summary[f"{metric}/gap_dips"] = len(dips) if pairs else None
        summary[f"{metric}/gap_recovered_dips"] = len(recovered) if pairs else None
        detail[metric] = pairs
    return summary, detail


def _recovery(points, w_at, worst, depth, sign) -> int | None:
    if depth == 0:
        return 0
    target = worst + sign * RECOVERY * depth
    for at, value in points:
        if at > w_at and sign * (value - target) >= 0:
            return at
    return None


def _boundaries(tasks: list[int]) -> dict[int, int]:
    """Task -> index of its last point (its boundary)."""
    return {t: p for p, t in enumerate(tasks)}


def _ok(value) -> bool:
    return value is not None and not math.isnan(value)


def _mean(values: list) -> float | None:
    return sum(values) / len(values) if values else None
