"""``retain report``: one self-contained HTML file that explains a set of runs.

The numbers come from ``harness.analysis.compare`` (same grouping, same statistics, same
metric definitions as ``retain compare``); this module only lays them out: the comparison
table, mean score matrices (one colour scale per scenario and metric), score curves over the
stream, the curves of evaluation during training with the task boundaries marked (the
stability gap), forgetting per task, score versus cost (wall time, memory, training FLOPs) with
the Pareto front, and the configuration behind every row. No script and no network: charts
are inline SVG, the file opens from ``file://`` or any static host, and every string from a
config or a run name is escaped.
"""

from __future__ import annotations

import argparse
import json
import os
from datetime import datetime, timezone
from pathlib import Path
from string import Template

import numpy as np

from harness.analysis import compare
from harness.analysis import report_assets as svg
from harness.analysis.report_general import general_section
from harness.errors import UserError

esc, plural = svg.esc, svg.plural
TEMPLATE = Path(__file__).with_name("report_template") / "report.html"


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(
        prog="retain report",
        description="Write one self-contained HTML report (tables, heatmaps, curves, Pareto "
                    "plots, configs) for runs or a sweep directory; optionally publish the "
                    "comparison to W&B.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n  retain report runs/sweeps/strategies -o strategies.html\n"
               "  retain report runs/sweeps/strategies -o s.html --wandb --project retain")
    p.add_argument("paths", nargs="+", help="run directories, a runs directory or a sweep "
                                            "directory (searched for results.json)")
    p.add_argument("-o", "--output", default="report.html", help="HTML file to write "
                                                                  "(default: report.html)")
    p.add_argument("--baseline", default="naive", help="strategy the others are compared "
                                                       "with (default: naive)")
    p.add_argument("--title", default=None, help="page title (default: from the paths)")
    p.add_argument("--wandb", action="store_true",
                   help="also publish the comparison table and matrices to W&B as a summary "
                        "run; when offline, explain how to sync instead")
    p.add_argument("--project", default=None, help="W&B project for --wandb (default: the "
                                                   "runs' wandb.project)")
    p.add_argument("--entity", default=None, help="W&B entity for --wandb")
    args = p.parse_args(argv)
    runs, notes = compare.load_runs(args.paths)
    tables = compare.aggregate(runs, baseline=args.baseline)
    title = args.title or "retain report: " + ", ".join(Path(x).name or str(x)
                                                        for x in args.paths)
    page = render(tables, notes, title, [str(x) for x in args.paths])
    out = Path(args.output)
    if out.is_dir():
        raise UserError(f"-o {out} is a directory; give a file name such as {out}/report.html")
    try:
        write_atomic(out, page)
    except OSError as err:
        raise UserError(f"-o {out}: cannot write it ({err.strerror or err})") from None
    print(f"report: {out} ({len(runs)} runs, {sum(len(t.rows) for t in tables)} rows)")
    if args.wandb:
        from harness.analysis.report_wandb import publish_wandb

        return publish_wandb(tables, runs, args.paths, project=args.project, entity=args.entity)
    return 0


def write_atomic(path: Path, text: str) -> None:
    """Temp file in the same directory, then rename: a reader never sees half a report."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)  # after a failed write; after the rename it is gone


def render(tables: list[compare.Table], notes: list[str], title: str, sources: list[str]) -> str:
    n_runs = sum(len(r.group.runs) for t in tables for r in t.rows)
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    nav = "".join(f'<a href="#{_anchor(t.scenario)}">{esc(t.scenario)}</a>' for t in tables)
    header = (f"<h1>{esc(title)}</h1><p>{plural(n_runs, 'complete run')} · "
              f"{plural(len(tables), 'scenario')} · from {esc(', '.join(sources))} · "
              f"generated {esc(stamp)}</p><nav>{nav}</nav>")
    body = "".join(scenario_section(t) for t in tables)
    if notes:
        items = "".join(f"<li>{esc(n)}</li>" for n in notes)
        body = f'<h3>Left out</h3><ul class="notes">{items}</ul>' + body
    footer = ("Every value is the mean over seeds ± the 95% Student-t confidence half-width "
              "(no interval with one seed). Δ, its paired bootstrap 95% interval and p compare "
              "each row with the baseline paired by seed (two-sided paired t-test; the "
              "Holm-adjusted p is its own column). Green or red bold marks a Holm-adjusted "
              "p &lt; 0.05, better or worse. “Seeds needed”: paired seeds a t-test needs to "
              "resolve the observed difference with 80% power. Generated by retain.")
    page = Template(TEMPLATE.read_text(encoding="utf-8"))
    return page.substitute(title=esc(title), header=header, body=body, footer=footer)


def scenario_section(t: compare.Table) -> str:
    colors = {id(r): svg.color(i) for i, r in enumerate(t.rows)}
    direction = "higher" if t.higher_is_better else "lower"
    metric = compare.NAMES.get(t.metric, t.metric)
    parts = [f'<section class="scenario" id="{_anchor(t.scenario)}">',
             f"<h2>{esc(t.scenario)} <small>· {esc(metric)}, {direction} is better</small></h2>",
             comparison_table(t, colors)]
    if t.notes:
        parts.append("".join(f'<p class="note">note: {esc(n)}</p>' for n in t.notes))
    parts += [stream_section(t, colors), general_section(t, colors), heatmap_section(t),
              stability_section(t),
              forgetting_section(t, colors), pareto_section(t, colors), config_section(t),
              "</section>"]
    return "".join(parts)


def comparison_table(t: compare.Table, colors: dict) -> str:
    primary = t.columns[0][0]
    head = "".join(f"<th>{esc(h)}</th>" for _, h in t.columns)
    rows = []
    for row in t.rows:
        cells = "".join(f"<td>{_cell(k, row.stats[k])}</td>" for k, _ in t.columns)
        base = ' class="baseline"' if row.group.strategy == t.baseline else ""
        rows.append(f'<tr{base}><td><span class="swatch" style="background:{colors[id(row)]}">'
                    f'</span>{esc(row.group.label)}</td><td>{len(row.group.runs)}</td>{cells}'
                    f'{_paired_cells(row, primary, t.higher_is_better)}</tr>')
    return (f'<h3>Comparison</h3><p class="explain">Final scores after the whole stream, mean '
            f'± 95% CI over n seeds; Δ and p against <b>{esc(t.baseline)}</b> paired by seed '
            '(green: significantly better, red: significantly worse, Holm-adjusted p &lt; '
            '0.05).</p>'
            f'<div class="table-wrap"><table class="comparison"><thead><tr><th>strategy</th>'
            f'<th>n</th>{head}<th>Δ vs {esc(t.baseline)}</th><th>bootstrap 95% CI</th>'
            f'<th>p</th><th>p Holm</th><th>seeds needed</th></tr></thead>'
            f'<tbody>{"".join(rows)}</tbody></table></div>')


def _paired_cells(row: compare.Row, key: str, higher_is_better: bool) -> str:
    pr = row.paired.get(key)
    if pr is None:
        return "<td></td>" * 5
    delta = "–" if pr.mean_diff is None else f"{pr.mean_diff:+.3g}"
    if pr.ci95:
        delta += f' <span class="ci">± {pr.ci95:.2g}</span>'
    if pr.p is None:
        return (f'<td>{delta}</td><td></td><td title="{esc(pr.note)}">n/a</td>'
                f'<td class="note">{esc(pr.note)}</td><td></td>')
    cls = ""
    if compare.significant(row, key):
        better = (pr.mean_diff > 0) == compare.better_when_higher(key, higher_is_better)
        cls = "better" if better else "worse"
    holm = row.p_holm.get(key)
    holm_text = "" if holm is None else f"{holm:.2g}"
    boot = ("–" if pr.boot_low is None else f"[{pr.boot_low:+.3g}, {pr.boot_high:+.3g}]")
    return (f'<td class="{cls}">{delta}</td><td>{boot}</td><td>{pr.p:.2g}</td>'
            f'<td class="{cls}">{holm_text}</td><td>{esc(compare.fmt_seeds(pr))}</td>')


def _cell(key: str, s) -> str:
    if s is None:
        return "–"
    if s.ci95 is None:
        return esc(compare.fmt_value(key, s.mean))
    return (f'{esc(compare.fmt_value(key, s.mean))} <span class="ci">± '
            f'{esc(compare.fmt_value(key, s.ci95, like=s.mean))}</span>')


# ------------------------------------------------------------- matrices and derived curves

def matrices(row: compare.Row, metric: str) -> np.ndarray | None:
    """Stack of the rows' per-seed score matrices (seeds × T × T), None if absent/mismatched."""
    mats = []
    for run in row.group.runs:
        m = (run.get("matrices") or {}).get(metric)
        if m:
            mats.append(np.array([[np.nan if v is None else v for v in r] for r in m], float))
    shapes = {m.shape for m in mats}
    return np.stack(mats) if mats and len(shapes) == 1 else None


def task_names(row: compare.Row, n: int) -> list[str]:
    names = row.group.runs[0].get("task_names") or []
    return [str(x) for x in names] if len(names) == n else [f"task {i}" for i in range(n)]


def _mean_ci(stack: np.ndarray) -> tuple[list, list]:
    """Mean and Student-t half-width over axis 0, as lists with None for missing values."""
    from harness.analysis.stats import summarize

    means, errs = [], []
    for col in stack.reshape(stack.shape[0], -1).T:
        s = summarize(col.tolist())
        means.append(None if s is None else s.mean)
        errs.append(None if s is None else s.ci95)
    return means, errs


def stream_section(t: compare.Table, colors: dict) -> str:
    """Average score over the tasks seen so far after each experience, one line per row."""
    series, labels = [], None
    for row in t.rows:
        stack = matrices(row, t.metric)
        if stack is None:
            continue
        n = stack.shape[1]
        seen = np.stack([[np.nanmean(m[i, : i + 1]) for i in range(n)] for m in stack])
        ys, err = _mean_ci(seen)
        series.append({"label": row.group.label, "ys": ys, "err": err, "color": colors[id(row)]})
        labels = labels or task_names(row, n)
    if not series:
        return ""
    chart = svg.line_chart(series, [_short(x) for x in labels], f"average {t.metric} on tasks "
                           "seen so far", t.metric, log_y=not t.higher_is_better,
                           y_max=share_max(t.metric))
    curves = "".join(_task_curves(row, t, colors) for row in t.rows)
    return ('<h3>Score over the stream</h3><p class="explain">Left: mean over the tasks trained '
            'so far, after each experience (error bars: 95% CI over seeds). Then, per strategy, '
            'the score on each task after each experience (dashed before the task is trained).'
            f'</p><div class="grid">{chart}{curves}</div>')


def _task_curves(row: compare.Row, t: compare.Table, colors: dict) -> str:
    stack = matrices(row, t.metric)
    if stack is None:
        return ""
    mean = np.nanmean(stack, axis=0)
    names = task_names(row, mean.shape[0])
    series = [{"label": _short(names[j], 18), "color": svg.color(j),
               "ys": [float(mean[i, j]) if i >= j else None for i in range(len(names))]}
              for j in range(len(names))]
    series += [{"label": "", "color": svg.color(j), "dashed": True,
                "ys": [float(mean[i, j]) if i <= j else None for i in range(len(names))]}
               for j in range(len(names))]
    return svg.line_chart(series, [_short(x) for x in names],
                          f"{row.group.label}: per-task {t.metric}", t.metric,
                          log_y=not t.higher_is_better, y_max=share_max(t.metric))


def heatmap_section(t: compare.Table) -> str:
    means = []
    for row in t.rows:
        stack = matrices(row, t.metric)
        if stack is not None:
            means.append((row, np.nanmean(stack, axis=0), stack.shape[0]))
    if not means:
        return ""
    # one colour scale for every matrix of the scenario: a colour means one value throughout
    values = np.concatenate([m[np.isfinite(m)] for _, m, _ in means])
    vrange = (float(values.min()), float(values.max())) if values.size else None
    maps = []
    for row, mean, n in means:
        names = task_names(row, mean.shape[0])
        data = [[None if np.isnan(v) else float(v) for v in r] for r in mean]
        maps.append(svg.heatmap(data, names, names, f"{row.group.label} (n={n})",
                                t.higher_is_better, vrange=vrange))
    return (f'<h3>Score matrices</h3><p class="explain">{esc(t.metric)} on test task (column) '
            'after training on task (row), mean over seeds, on one colour scale for all '
            'strategies. The diagonal is what was just learned; below it is what was kept.</p>'
            f'<div class="grid">{"".join(maps)}</div>')


def curve_stack(row: compare.Row, metric: str) -> tuple[dict, np.ndarray] | None:
    """The row's curves of evaluation during training (the first run's steps and tasks) and
    the per-seed scores (seeds x points x tasks) of the seeds evaluated at the same steps."""
    runs = [r for r in row.group.runs if (r.get("curves") or {}).get("scores", {}).get(metric)]
    if not runs:
        return None
    first = runs[0]["curves"]
    same = [r["curves"]["scores"][metric] for r in runs
            if r["curves"]["step"] == first["step"]]
    stack = np.array([[[np.nan if v is None else v for v in p] for p in s] for s in same], float)
    return first, stack


def stability_section(t: compare.Table) -> str:
    """Each row's per-task scores over the stream's steps, task boundaries marked: where the
    stability gap shows (it is invisible in the end-of-task matrices above)."""
    charts, seen = [], 0
    for row in t.rows:
        found = curve_stack(row, t.metric)
        if found is None:
            continue
        curves, stack = found
        seen += 1
        mean = np.nanmean(stack, axis=0)
        names = task_names(row, mean.shape[1])
        ends = {task: step for step, task in zip(curves["step"], curves["task"])}
        short = svg.strip_common_prefix(names)
        boundaries = [(ends[k], f"→{short[k + 1]}") for k in sorted(ends) if k + 1 in ends]
        series = [{"label": _short(names[j], 18), "color": svg.color(j), "xs": curves["step"],
                   "ys": [None if np.isnan(v) else float(v) for v in mean[:, j]]}
                  for j in range(mean.shape[1])]
        every, size = curves.get("every_n_steps"), curves.get("subsample")
        title = (f"{row.group.label}: {t.metric} during training "
                 f"(n={stack.shape[0]}, every {every} steps, "
                 f"{size or 'all'} examples per task)")
        charts.append(svg.step_chart(series, boundaries, title, t.metric, width=900,
                                     y_max=share_max(t.metric)))
    if not charts:
        return ""
    return ('<h3>Stability during training</h3><p class="explain">Each task\'s score on a fixed '
            'subsample of its test set, evaluated during training (mean over the seeds '
            'evaluated at the same steps); dashed lines mark where the next task starts. A '
            'sharp fall of an old task right after a boundary that then recovers is the '
            'stability gap (De Lange et al., ICLR 2023); min-ACC and WC-ACC in the table '
            f'summarise it. {plural(seen, "row")} of {len(t.rows)} evaluated during training.'
            f'</p><div class="grid">{"".join(charts)}</div>')


def forgetting_per_task(stack: np.ndarray, higher_is_better: bool) -> np.ndarray:
    """seeds × (T-1): best score on task j after learning it, minus the final score
    (sign flipped for lower-is-better metrics so that positive always means forgot)."""
    n = stack.shape[1]
    out = np.full((stack.shape[0], max(n - 1, 0)), np.nan)
    for s, m in enumerate(stack):
        for j in range(n - 1):
            earlier = m[j: n - 1, j]
            if higher_is_better:
                out[s, j] = np.nanmax(earlier) - m[-1, j]
            else:
                out[s, j] = m[-1, j] - np.nanmin(earlier)
    return out


def forgetting_section(t: compare.Table, colors: dict) -> str:
    series, names = [], None
    for row in t.rows:
        stack = matrices(row, t.metric)
        if stack is None or stack.shape[1] < 2:
            continue
        ys, err = _mean_ci(forgetting_per_task(stack, t.higher_is_better))
        series.append({"label": row.group.label, "ys": ys, "err": err, "color": colors[id(row)]})
        names = names or task_names(row, stack.shape[1])[:-1]
    if not series:
        return ""
    chart = svg.bar_chart([_short(x) for x in names], series, f"forgetting per task "
                          f"({t.metric})", "forgetting")
    return ('<h3>Forgetting per task</h3><p class="explain">Best score on a task after learning '
            'it minus its final score (positive = forgotten), mean ± 95% CI over seeds. The last '
            f'task cannot be forgotten yet.</p><div class="grid">{chart}</div>')


def pareto_section(t: compare.Table, colors: dict) -> str:
    primary = t.columns[0][0]
    charts = []
    for key, label in (("wall_time_s", "wall time (s)"), ("train_flops", "training FLOPs"),
                       ("strategy_memory_bytes", "strategy memory")):
        points = []
        for row in t.rows:
            y, x = row.stats.get(primary), row.stats.get(key)
            if x is None or y is None:
                continue
            points.append({"label": row.group.label, "x": x.mean, "y": y.mean, "xerr": x.ci95,
                           "yerr": y.ci95, "color": colors[id(row)]})
        if points:
            charts.append(svg.scatter(points, f"{t.metric} vs {label}", label, t.metric,
                                      t.higher_is_better, y_max=share_max(t.metric),
                                      xfmt=lambda x, k=key: compare.fmt_value(k, x)))
    if not charts:
        return ""
    return ('<h3>Score versus cost</h3><p class="explain">Each point is a row of the table '
            '(bars: 95% CI). Outlined points are on the Pareto front: nothing else is both '
            'cheaper and better. Training FLOPs (forward and backward of a sample step per '
            'task, strategies\' extra passes included) compare strategies at equal compute '
            f'rather than equal epochs.</p><div class="grid">{"".join(charts)}</div>')


def config_section(t: compare.Table) -> str:
    blocks = []
    for row in t.rows:
        runs = "".join(
            f"<details><summary>{esc(r.get('name', '?'))} · seed {esc(r.get('seed'))}</summary>"
            f"<p class=\"note\">{esc(r.get('_path', ''))} · config hash "
            f"{esc(r.get('config_hash', ''))}</p><pre>{esc(_json(r.get('config')))}</pre>"
            f"<pre>{esc(_json(r.get('summary')))}</pre></details>" for r in row.group.runs)
        blocks.append(f"<details><summary>{esc(row.group.label)} · "
                      f"{plural(len(row.group.runs), 'run')}</summary>{runs}</details>")
    return ('<h3>Configurations</h3><p class="explain">The resolved config and summary of every '
            f'run behind each row.</p>{"".join(blocks)}')


def share_max(metric: str) -> float | None:
    """1 for scores that are shares (accuracy, macro-F1): no axis tick above it."""
    return 1.0 if metric in ("accuracy", "macro_f1") else None


def _json(data) -> str:
    return json.dumps(data, indent=2, sort_keys=True, default=str)


def _anchor(text: str) -> str:
    return "s-" + "".join(c if c.isalnum() else "-" for c in str(text))


def _short(text: str, n: int = 12) -> str:
    text = str(text)
    return text if len(text) <= n else text[: n - 1] + "…"
