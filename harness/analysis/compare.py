"""``retain compare``: one table per scenario, every number a mean ± 95% CI over seeds.

Runs are grouped by scenario, then by strategy *and* by every other config value that differs
between that strategy's runs (seed excluded): replay with 100 and with 200 buffer slots are two
rows, never one average. Each row is compared with the baseline strategy (default ``naive``)
paired by seed; see ``harness.analysis.stats`` for why Student-t, pairing, Holm, the bootstrap
interval and the seeds a difference needs. Summaries are recomputed from each run's raw numbers
(``harness.analysis.definitions``), so language models are compared on bits per token and every
run on the same definitions. ``--x flops`` (or ``wall``, ``memory``) compares at equal cost
instead of equal epochs: score against the cost, with the Pareto front.

``load_runs`` / ``aggregate`` are shared with ``retain report`` so the HTML shows the same numbers.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from harness.analysis.definitions import current_summary, run_fwt_note, run_summary_metric
from harness.analysis.stats import ALPHA, Paired, Summary, holm, paired_test, summarize
from harness.config import NON_RESULT_KEYS
from harness.core.metrics import LOWER_IS_BETTER
from harness.errors import UserError
from harness.experiment.records import load_results

# (summary key, short header); "{m}" is the scenario's summary metric (accuracy, bits per
# token, ...); "{worst}" / "{wc}" its stability-gap names (min-ACC / WC-ACC for accuracy)
COLUMNS = [("{m}/avg", "{m}"), ("{m}/bwt", "BWT"), ("{m}/fwt", "FWT"),
           ("{m}/forgetting", "forgetting"), ("perplexity/avg", "perplexity"),
           ("{m}/worst", "{worst}"), ("{m}/wc", "{wc}"), ("{m}/gap_depth", "dip"),
           ("{m}/general_delta", "general Δ"),
           ("wall_time_s", "wall s"), ("peak_rss_mb", "peak MB"),
           ("strategy_memory_bytes", "strategy mem"), ("train_flops", "train FLOPs")]
# shown only where some run of the scenario has them (LM runs, evaluation during training)
OPTIONAL = {"perplexity/avg", "{m}/worst", "{m}/wc", "{m}/gap_depth", "train_flops",
            "{m}/general_delta"}
NAMES = {"bits_per_token": "bits/token", "bits_per_byte": "bits/byte"}
GAP_NAMES = {"accuracy": ("min-ACC", "WC-ACC")}
# --test: the score statistics the paired columns may test (the first is the default)
TESTS = ("avg", "bwt", "fwt", "forgetting", "general_delta", "worst", "wc", "gap_depth")
# --x: the cost a view compares at (summary key, label)
X_AXES = {"flops": ("train_flops", "training FLOPs"), "memory": ("strategy_memory_bytes",
          "strategy memory"), "wall": ("wall_time_s", "wall time (s)")}
# Config keys that never split a row: those harness.config.config_hash leaves out, and seeds.
IGNORED_KEYS = {"seed", *NON_RESULT_KEYS}
IGNORED_PREFIXES = tuple(f"{key}." for key in NON_RESULT_KEYS)


@dataclass
class Group:
    """The runs of one row: same scenario, strategy and non-seed hyper-parameters."""

    scenario: str
    strategy: str
    params: dict[str, Any]
    runs: list[dict] = field(default_factory=list)

    @property
    def label(self) -> str:
        extra = ", ".join(f"{self._short_key(k)}={v}" for k, v in self.params.items())
        return f"{self.strategy} ({extra})" if extra else self.strategy

    def _short_key(self, key: str) -> str:
        """strategy.replay.mem_size -> mem_size on a replay row; other keys stay whole."""
        for name in self.strategy.split("+"):
            if key.startswith(f"strategy.{name}."):
                return key.removeprefix(f"strategy.{name}.")
        return key

    @property
    def seeds(self) -> list:
        return [r.get("seed") for r in self.runs]


@dataclass
class Row:
    group: Group
    stats: dict[str, Summary | None]
    paired: dict[str, Paired] = field(default_factory=dict)
    p_holm: dict[str, float | None] = field(default_factory=dict)


@dataclass
class Table:
    scenario: str
    metric: str
    higher_is_better: bool
    baseline: str
    columns: list[tuple[str, str]]
    rows: list[Row]
    notes: list[str] = field(default_factory=list)
    tested: str = "avg"  # the statistic whose paired test the text table shows (--test)


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(
        prog="retain compare",
        description="Aggregate complete runs (results.json) into one table per scenario: mean "
                    "± 95% Student-t CI over seeds, and a seed-paired t-test against the "
                    "baseline strategy.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n  retain compare runs/sweeps/strategies\n"
               "  retain compare runs/sweeps/replay_size --csv table.csv --json table.json\n"
               "  retain compare runs/a runs/b --baseline replay\n"
               "  retain compare runs/sweeps/pretrained_lora --test forgetting")
    p.add_argument("paths", nargs="+", help="run directories, a runs directory or a sweep "
                                            "directory (searched recursively for results.json)")
    p.add_argument("--baseline", default="naive", help="strategy to compare against "
                                                       "(default: naive)")
    p.add_argument("--csv", metavar="FILE", help="also write one CSV row per table row")
    p.add_argument("--json", metavar="FILE", help="also write everything as JSON")
    p.add_argument("--ignore", action="append", default=[], metavar="KEY",
                   help="config key that should not split rows (repeatable)")
    p.add_argument("--metric", default=None, metavar="NAME",
                   help="score the tables on this metric (accuracy, loss, ...) instead of the "
                        "runs' summary metric (bits per token for language models)")
    p.add_argument("--test", metavar="STAT", default="avg",
                   help="the statistic of the score the paired Δ, interval and p are shown for "
                        f"(default avg; {', '.join(TESTS)})")
    p.add_argument("--x", metavar="AXIS", default=None,
                   help="compare at equal cost instead: the score against AXIS with the Pareto "
                        f"front ({', '.join(sorted(X_AXES))})")
    args = p.parse_args(argv)
    if args.x is not None and args.x not in X_AXES:
        raise UserError(f"unknown --x axis '{args.x}'; valid choices: "
                        f"{', '.join(sorted(X_AXES))}")
    if args.test not in TESTS:
        raise UserError(f"unknown --test statistic '{args.test}'; valid choices: "
                        f"{', '.join(TESTS)}")
    runs, notes = load_runs(args.paths)
    tables = aggregate(runs, baseline=args.baseline, ignore=args.ignore, metric=args.metric)
    for table in tables:
        table.tested = args.test
    for note in notes:
        print(f"note: {note}", file=sys.stderr)
    print(format_cost_view(tables, args.x) if args.x else format_tables(tables))
    if args.csv:
        write_output(Path(args.csv), lambda f: write_csv(tables, f), "--csv")
    if args.json:
        write_output(Path(args.json), lambda f: f.write(json.dumps(to_json(tables), indent=2)
                                                         + "\n"), "--json")
    return 0


def write_output(path: Path, write, option: str) -> None:
    """Write an output file the user named; a place that cannot be written is one line."""
    try:
        with open(path, "w", newline="") as f:
            write(f)
    except OSError as err:
        raise UserError(f"{option} {path}: cannot write it ({err.strerror or err})") from None


def load_runs(paths: list[str | Path]) -> tuple[list[dict], list[str]]:
    """Every complete run under ``paths`` (newest wins when two share scenario, strategy,
    hyper-parameters and seed), plus notes on what was left out and why. A results.json that
    cannot be read is an error naming it (``harness.experiment.records.load_results``)."""
    files, notes = [], []
    for raw in paths:
        path = Path(raw)
        if not path.exists():
            raise UserError(f"no such file or directory: {path}")
        files += [path] if path.is_file() else sorted(path.rglob("results.json"))
        notes += _sweep_notes(path)
    runs = []
    for f in dict.fromkeys(files):  # de-duplicate, keep order
        run = load_results(f).to_dict()
        run["_path"] = str(Path(f).parent)
        run["_mtime"] = Path(f).stat().st_mtime
        runs.append(run)
    if not runs:
        raise UserError(f"no complete results.json under {', '.join(map(str, paths))}")
    return runs, notes


def _sweep_notes(path: Path) -> list[str]:
    """Failed sweep runs are invisible in results.json files, so say how many there were."""
    notes = []
    sweep_files = [path] if path.name == "sweep.json" else path.glob("**/sweep.json")
    for sj in sweep_files:
        try:
            summary = json.loads(Path(sj).read_text())
        except (OSError, ValueError, RecursionError):
            continue
        listed = summary.get("runs") if isinstance(summary, dict) else None
        if not isinstance(listed, list) or not all(isinstance(r, dict) for r in listed):
            notes.append(f"{sj}: not a sweep summary retain wrote; ignored")
            continue
        bad = [str(r.get("name")) for r in listed if r.get("status") != "complete"]
        if bad:
            notes.append(f"sweep {summary.get('sweep')}: {len(bad)} run(s) not complete and "
                         f"not included: {', '.join(bad[:5])}{' ...' if len(bad) > 5 else ''}")
    return notes


def flatten(d: Any, prefix: str = "") -> dict[str, Any]:
    """Nested config -> {"a.b.c": value}; lists stay values."""
    if not isinstance(d, dict):
        return {prefix: d}
    out: dict[str, Any] = {}
    for k, v in d.items():
        out.update(flatten(v, f"{prefix}{k}."))
    return {k.rstrip("."): v for k, v in out.items()}


def group_runs(runs: list[dict], ignore: list[str] = ()) -> dict[str, list[Group]]:
    """scenario -> groups. Keys that differ among one strategy's runs split it into rows."""
    by_strategy: dict[tuple[str, str], list[dict]] = {}
    for run in runs:
        key = (str(run.get("scenario", "?")), str(run.get("strategy", "?")))
        by_strategy.setdefault(key, []).append(run)
    scenarios: dict[str, list[Group]] = {}
    for (scenario, strategy), members in sorted(by_strategy.items()):
        flat = [flatten(r.get("config") or {}) for r in members]
        keys = sorted({k for f in flat for k in f})
        # a key splits rows where the runs that have it disagree (another model's options
        # are missing, not different)
        varying = [k for k in keys if _splits(k, ignore)
                   and len({json.dumps(f[k], sort_keys=True, default=str)
                            for f in flat if k in f}) > 1 or k.endswith(".name")
                   and len({json.dumps(f.get(k), default=str) for f in flat}) > 1]
        varying.sort(key=lambda k: not k.endswith(".name"))  # model.name=xl before its options
        rows: dict[str, Group] = {}
        for run, f in zip(members, flat):
            # a key this run's components do not have (another model's option) is not shown
            params = {k: f[k] for k in varying if k in f}
            sig = json.dumps(params, sort_keys=True, default=str)
            rows.setdefault(sig, Group(scenario, strategy, params)).runs.append(run)
        for group in rows.values():
            group.runs = _one_per_seed(group.runs)
        scenarios.setdefault(scenario, []).extend(rows.values())
    return scenarios


def _splits(key: str, ignore) -> bool:
    last = key.rsplit(".", 1)[-1]
    return (key not in IGNORED_KEYS and last != "seed" and key not in ignore
            and not key.startswith(IGNORED_PREFIXES))


def _one_per_seed(runs: list[dict]) -> list[dict]:
    """A repeated seed is a re-run, not a new sample: keep the newest of each seed."""
    newest: dict[str, dict] = {}
    for run in sorted(runs, key=lambda r: r.get("_mtime", 0)):
        newest[json.dumps(run.get("seed"))] = run
    return sorted(newest.values(), key=lambda r: str(r.get("seed")))


def aggregate(runs: list[dict], baseline: str = "naive", ignore: list[str] = (),
              metric: str | None = None) -> list[Table]:
    """One table per scenario, read on ``metric`` (default: the runs' summary metric)."""
    for run in runs:  # today's definitions, whatever wrote the file (definitions.py)
        run["summary"] = current_summary(run)
    if metric is not None and runs and not any(f"{metric}/avg" in r["summary"] for r in runs):
        found = sorted({k[:-4] for r in runs for k in r["summary"] if k.endswith("/avg")})
        raise UserError(f"--metric {metric}: no run reports it; valid choices: "
                        f"{', '.join(found)}")
    chosen = metric
    tables = []
    for scenario, groups in group_runs(runs, ignore).items():
        first = groups[0].runs[0]
        metric = chosen or run_summary_metric(first)
        hib = metric not in LOWER_IS_BETTER
        members = [r for g in groups for r in g.runs]
        groups = sorted(groups, key=lambda g: g.strategy != baseline)  # baseline row first
        rows = [Row(g, {key: summarize(r["summary"].get(key) for r in g.runs)
                        for key in column_keys(metric)}) for g in groups]
        table = Table(scenario, metric, hib, baseline, _columns(metric, members), rows)
        if not chosen and len({run_summary_metric(r) for r in members}) > 1:
            table.notes.append("runs in this scenario report different primary metrics")
        notes = {run_fwt_note(r) for r in members}
        if None not in notes:
            table.notes.append(f"FWT n/a: {'; '.join(sorted(notes))}")
        _compare_to_baseline(table)
        tables.append(table)
    return tables


def column_keys(metric: str) -> list[str]:
    return [key.format(m=metric) for key, _ in COLUMNS]


def _columns(metric: str, runs: list[dict]) -> list[tuple[str, str]]:
    """The columns a scenario's table shows: optional ones only where some run has them."""
    worst, wc = GAP_NAMES.get(metric, (f"worst {NAMES.get(metric, metric)}", "worst-case"))
    out = []
    for key, head in COLUMNS:
        k = key.format(m=metric)
        if key in OPTIONAL and all(r["summary"].get(k) is None for r in runs):
            continue
        out.append((k, head.format(m=NAMES.get(metric, metric), worst=worst, wc=wc)))
    return out


def _compare_to_baseline(table: Table) -> None:
    bases = [r for r in table.rows if r.group.strategy == table.baseline]
    if not bases:
        table.notes.append(f"no '{table.baseline}' runs: no paired comparison")
        return
    for row in table.rows:
        if row.group.strategy == table.baseline:
            continue
        base = _matching_baseline(row, bases)
        if base is None:
            table.notes.append(f"{row.group.label}: several '{table.baseline}' rows fit; "
                               "not compared")
            continue
        for key, _ in table.columns:
            row.paired[key] = paired_test(_by_seed(row, key), _by_seed(base, key))
    for key, _ in table.columns:
        compared = [r for r in table.rows if key in r.paired]
        for r, p in zip(compared, holm([r.paired[key].p for r in compared])):
            r.p_holm[key] = p


def _matching_baseline(row: Row, bases: list[Row]) -> Row | None:
    """The baseline row whose hyper-parameters agree with ``row`` on every shared key."""
    if len(bases) == 1:
        return bases[0]
    fits = [b for b in bases if all(row.group.params.get(k, v) == v
                                    for k, v in b.group.params.items())]
    return fits[0] if len(fits) == 1 else None


def _by_seed(row: Row, key: str) -> dict:
    return {json.dumps(r.get("seed")): r.get("summary", {}).get(key) for r in row.group.runs}


def better_when_higher(key: str, higher_is_better: bool) -> bool:
    """Direction of "better" for a column: costs, forgetting and dips are better low."""
    if key.endswith(("/forgetting", "/gap_depth")) or not key.count("/"):
        return False
    if key.endswith("/general_delta"):  # a change of the metric itself: its own direction
        return key.split("/")[0] not in LOWER_IS_BETTER
    return higher_is_better


# ---------------------------------------------------------------- text, CSV and JSON output

def fmt_value(key: str, x: float | None, like: float | None = None) -> str:
    """One number for a table. ``like``: format with the precision that value would get, so
    a mean and its interval show the same number of decimals."""
    if x is None:
        return "–"
    if key == "train_flops":  # 5.82e8
        return f"{x:.3g}".replace("e+0", "e").replace("e+", "e")
    if key == "strategy_memory_bytes":
        ref = abs(like if like is not None else x)
        for unit, size in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
            if ref >= size:
                return f"{x / size:.1f} {unit}"
        return f"{x:.0f} B"
    ref = abs(like if like is not None else x)
    if key.endswith("_s") or key.endswith("_mb") or ref >= 100:
        return f"{x:.1f}"
    return f"{x:.2f}" if ref >= 10 else f"{x:.3f}"


def fmt_summary(key: str, s: Summary | None) -> str:
    if s is None:
        return "–"
    if s.ci95 is None:
        return fmt_value(key, s.mean)
    return f"{fmt_value(key, s.mean)} ± {fmt_value(key, s.ci95, like=s.mean)}"


def significant(row: Row, key: str) -> bool:
    """Whether a comparison is significant: its Holm-adjusted p is below ALPHA."""
    adjusted = row.p_holm.get(key)
    return adjusted is not None and adjusted < ALPHA


def fmt_paired(key: str, row: Row, hib: bool) -> tuple[str, str, str, str]:
    """(Δ, bootstrap interval, p, seeds needed) for the table; '*' marks a Holm-adjusted
    p < 0.05 and says better or worse."""
    pr = row.paired.get(key)
    if pr is None:
        return "", "", "", ""
    if pr.mean_diff is None:
        return "–", "", pr.note, ""
    delta = f"{pr.mean_diff:+.3g}" + (f" ± {pr.ci95:.2g}" if pr.ci95 else "")
    if pr.p is None:
        return delta, "", pr.note, ""
    boot = (f"[{pr.boot_low:+.3g}, {pr.boot_high:+.3g}]" if pr.boot_low is not None else "–")
    better = (pr.mean_diff > 0) == better_when_higher(key, hib)
    mark = f" * {'better' if better else 'worse'}" if significant(row, key) else ""
    adjusted = row.p_holm.get(key)
    holm_text = f" (Holm {adjusted:.3g})" if adjusted is not None else ""
    return delta, boot, f"{pr.p:.3g}{holm_text}{mark}", fmt_seeds(pr)


def fmt_seeds(pr: Paired) -> str:
    """Seeds a paired t-test needs to resolve the observed difference (80% power)."""
    if pr.p is None:
        return ""
    return str(pr.seeds_needed) if pr.seeds_needed is not None else ">1000"


def format_tables(tables: list[Table]) -> str:
    blocks = []
    for t in tables:
        direction = "higher" if t.higher_is_better else "lower"
        head = (f"== {t.scenario} · {NAMES.get(t.metric, t.metric)} ({direction} is better) · "
                f"baseline {t.baseline} ==")
        tested = [(k, h) for k, h in t.columns if k == f"{t.metric}/{t.tested}"]
        notes = list(t.notes)
        if not tested:
            notes.append(f"no run reports {t.tested}: the paired columns test the average")
        key, name = tested[0] if tested else t.columns[0]
        header = ["strategy", "n", *[h for _, h in t.columns],
                  f"Δ {name} vs {t.baseline}", "bootstrap 95% CI", "p (paired t)",
                  "seeds for 80% power"]
        lines = [header]
        for row in t.rows:
            lines.append([row.group.label, str(len(row.group.runs)),
                          *[fmt_summary(k, row.stats[k]) for k, _ in t.columns],
                          *fmt_paired(key, row, t.higher_is_better)])
        widths = [max(len(r[i]) for r in lines) for i in range(len(header))]
        text = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in lines]
        blocks.append("\n".join([head, *text, *[f"note: {n}" for n in notes]]))
    blocks.append("± is the 95% Student-t CI over seeds (none when n = 1). Δ, its paired "
                  "bootstrap CI and p: paired by seed, two-sided paired t-test, Holm-adjusted p "
                  "in parentheses; * marks Holm-adjusted p < 0.05. Seeds for 80% power: paired "
                  "seeds a t-test needs to resolve the observed difference.")
    return "\n\n".join(blocks)


def format_cost_view(tables: list[Table], axis: str) -> str:
    """``--x``: each row's score against a cost, cheapest first, with the Pareto front (no
    other row is both cheaper and better) and the cost relative to the baseline."""
    from harness.analysis.report_assets import pareto_front

    key, label = X_AXES[axis]
    blocks = []
    for t in tables:
        primary, head = t.columns[0]
        rows = [r for r in t.rows if r.stats.get(key) and r.stats.get(primary)]
        rows.sort(key=lambda r: r.stats[key].mean)
        front = set(pareto_front([(r.stats[key].mean, r.stats[primary].mean) for r in rows],
                                 t.higher_is_better))
        base = next((r.stats[key].mean for r in rows if r.group.strategy == t.baseline), None)
        lines = [["strategy", "n", label, f"× {t.baseline}", head, "Pareto front"]]
        for i, r in enumerate(rows):
            ratio = f"{r.stats[key].mean / base:.2f}" if base else "–"
            lines.append([r.group.label, str(len(r.group.runs)), fmt_summary(key, r.stats[key]),
                          ratio, fmt_summary(primary, r.stats[primary]),
                          "yes" if i in front else ""])
        widths = [max(len(x[i]) for x in lines) for i in range(len(lines[0]))]
        text = ["  ".join(c.ljust(w) for c, w in zip(x, widths)).rstrip() for x in lines]
        missing = len(t.rows) - len(rows)
        notes = [f"note: {missing} row(s) without {label} (runs from before it was recorded)"
                 ] if missing else []
        blocks.append("\n".join([f"== {t.scenario} · {head} against {label} "
                                  f"({'higher' if t.higher_is_better else 'lower'} is better) ==",
                                  *text, *notes]))
    blocks.append("Rows sorted by cost; mean ± 95% Student-t CI over seeds. On the Pareto "
                  "front: no other row is both cheaper and better.")
    return "\n\n".join(blocks)


def to_json(tables: list[Table]) -> dict:
    out = []
    for t in tables:
        groups = []
        for row in t.rows:
            g = row.group
            groups.append({
                "label": g.label, "strategy": g.strategy, "params": g.params,
                "n": len(g.runs), "seeds": g.seeds, "runs": [r.get("_path") for r in g.runs],
                "metrics": {k: _summary_json(s) for k, s in row.stats.items()},
                "vs_baseline": {k: {**asdict(p), "p_holm": row.p_holm.get(k),
                                    "significant": significant(row, k)}
                                for k, p in row.paired.items()},
            })
        out.append({"scenario": t.scenario, "metric": t.metric, "columns": t.columns,
                    "higher_is_better": t.higher_is_better, "baseline": t.baseline,
                    "notes": t.notes, "groups": groups})
    return {"confidence": 0.95, "test": "paired t-test by seed, two-sided",
            "significance": "Holm-adjusted p < 0.05", "scenarios": out}


def _summary_json(s: Summary | None) -> dict | None:
    return None if s is None else {**asdict(s), "low": s.low, "high": s.high}


def write_csv(tables: list[Table], f) -> None:
    """One CSV row per table row, to the open text file ``f``."""
    import csv

    w = csv.writer(f)
    keys = [k.replace("{m}/", "metric/") for k, _ in COLUMNS]
    w.writerow(["scenario", "metric", "higher_is_better", "strategy", "params", "n", "seeds",
                *[f"{k}_{s}" for k in keys for s in ("mean", "ci95", "sd", "n")],
                "delta_vs_baseline", "delta_ci95", "p", "p_holm", "n_pairs",
                "delta_bootstrap_low", "delta_bootstrap_high", "seeds_needed"])
    for t in tables:
        primary = t.columns[0][0]
        for row in t.rows:
            stats = [row.stats.get(k) for k in column_keys(t.metric)]
            pr = row.paired.get(primary)
            w.writerow([t.scenario, t.metric, t.higher_is_better, row.group.strategy,
                        json.dumps(row.group.params, default=str), len(row.group.runs),
                        " ".join(map(str, row.group.seeds)),
                        *[_cell(getattr(s, a, None) if s else None)
                          for s in stats for a in ("mean", "ci95", "sd", "n")],
                        *([_cell(pr.mean_diff), _cell(pr.ci95), _cell(pr.p),
                           _cell(row.p_holm.get(primary)), pr.n, _cell(pr.boot_low),
                           _cell(pr.boot_high), _cell(pr.seeds_needed)]
                          if pr else [""] * 8)])


def _cell(x) -> str:
    return "" if x is None else repr(x) if isinstance(x, float) else str(x)
