"""The report's general-ability section: a held-out set that is no task (``scenario.general``,
``harness.core.general``), its score untrained and after each task, one line per row."""

from __future__ import annotations

from harness.analysis import compare
from harness.analysis import report_assets as svg
from harness.analysis.stats import summarize


def general_section(t: compare.Table, colors: dict) -> str:
    """Mean ± 95% CI over seeds of the general set's score before training and after each
    task; empty when no run of the scenario scored one."""
    series, labels, names = [], None, set()
    for row in t.rows:
        records = [r.get("general") for r in row.group.runs]
        if not all(g and t.metric in g["after"] and g.get("before") for g in records):
            continue
        points = [[g["before"][t.metric], *g["after"][t.metric]] for g in records]
        stats = [summarize(list(col)) for col in zip(*points)]
        series.append({"label": row.group.label, "color": colors[id(row)],
                       "ys": [s.mean if s else None for s in stats],
                       "err": [s.ci95 if s else None for s in stats]})
        names |= {g["name"] for g in records}
        tasks = row.group.runs[0].get("task_names") or []
        labels = labels or ["untrained", *[str(n)[:12] for n in tasks]]
    if not series:
        return ""
    metric = compare.NAMES.get(t.metric, t.metric)
    chart = svg.line_chart(series, labels, f"{metric} on the general set",
                           metric, xlabel="after", log_y=not t.higher_is_better)
    return (f'<h3>General ability</h3><p class="explain">{svg.esc(metric)} on '
            f'{svg.esc(", ".join(sorted(names)))}, a held-out set the stream never trains on, '
            'before training and after each task (error bars: 95% CI over seeds); “general Δ” in '
            f'the table is the last point minus the first.</p><div class="grid">{chart}</div>')
