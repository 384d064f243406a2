"""What a run prints at its end: the score matrix and the summary, as plain tables."""

from __future__ import annotations

SUMMARY_ROWS = [("avg", "average"), ("bwt", "backward transfer"), ("fwt", "forward transfer"),
                ("forgetting", "forgetting")]


def format_matrix(R: list[list[float]], names: list[str], metric: str,
                  baseline: list[float] | None = None, general: dict | None = None) -> str:
    """The score matrix; ``general`` (harness.core.general's record) adds its column, a
    held-out set that is no task, headed ``general:<name>``."""
    extra = [f"general:{general['name']}"] if general and metric in general["after"] else []
    width = max(9, *(len(n) for n in [*names, *extra]))
    head = f"{metric + ' after task':<{width + 12}}" + "".join(
        f"{n:>{width + 2}}" for n in [*names, *extra])
    lines = [head, "-" * len(head)]
    if baseline or extra:
        before = [general["before"].get(metric)] if extra else []
        lines.append(f"{'untrained':<{width + 12}}"
                     + _cells([*(baseline or [None] * len(names)), *before], width))
    for i, row in enumerate(R):
        label = f"{i + 1}: {names[i]}"
        after = [general["after"][metric][i]] if extra else []
        lines.append(f"{label:<{width + 12}}" + _cells([*row, *after], width))
    return "\n".join(lines)


LABELS = {"bits_per_token": "bits/token", "bits_per_byte": "bits/byte"}


def format_summary(results: dict) -> str:
    s = results["summary"]
    primary = results.get("summary_metric") or results["metric"]
    metrics = [primary] + [m for m in ("bits_per_token", "accuracy") if m != primary]
    lines = []
    for metric in metrics:
        if f"{metric}/avg" not in s:
            continue
        cells = [f"{label} {_num(s.get(f'{metric}/{key}'))}" for key, label in SUMMARY_ROWS]
        if metric == primary and primary.startswith("bits") and s.get("perplexity/avg"):
            cells.append(f"perplexity {_num(s['perplexity/avg'])} (exp of the mean log-loss)")
        lines.append(f"{LABELS.get(metric, metric):<11}" + " | ".join(cells))
    lines += _stability_lines(s)
    general = results.get("general")
    if general and s.get(f"{primary}/general_delta") is not None:
        name = LABELS.get(primary, primary)
        lines.append(f"{'general':<11}{name} on {general['name']} (no task): before "
                     f"{_num(general['before'][primary])}, after the last task "
                     f"{_num(s[f'{primary}/general'])}, general Δ "
                     f"{s[f'{primary}/general_delta']:+.3f}")
    cost = (f"{'cost':<11}wall {s['wall_time_s']:.1f} s | train {s['train_time_s']:.1f} s | "
            f"eval {s['eval_time_s']:.1f} s | peak RSS {s['peak_rss_mb']:.0f} MB | "
            f"strategy memory {s['strategy_memory_bytes'] / 2**20:.2f} MB | "
            f"{s['parameters'] / 1e6:.2f} M parameters")
    if s.get("trained_parameters") is not None and s["trained_parameters"] < s["parameters"]:
        cost += f" ({s['trained_parameters'] / 1e6:.2f} M trained)"
    if s.get("train_flops"):
        cost += f" | {s['train_flops']:.3g} training FLOPs"
    if s.get("curve_eval_time_s") is not None:
        share = s["curve_eval_time_s"] / max(s["train_time_s"], 1e-9)
        cost += (f"\n{'':<11}evaluation during training {s['curve_eval_time_s']:.1f} s "
                 f"({share:.0%} of the training time)")
    lines.append(cost)
    if results.get("fwt_note"):
        lines.append(f"note: forward transfer n/a: {results['fwt_note']}")
    return "\n".join(lines)


def _stability_lines(s: dict) -> list[str]:
    """min-ACC, WC-ACC and the dips, from evaluation during training (harness.core.stability)."""
    lines = []
    for metric, worst, wc in (("accuracy", "min-ACC", "WC-ACC"),
                              ("bits_per_token", "worst", "worst-case"),
                              ("bits_per_byte", "worst", "worst-case")):
        if s.get(f"{metric}/worst") is None:
            continue
        depth, dips = s.get(f"{metric}/gap_depth"), s.get(f"{metric}/gap_dips")
        recovered = s.get(f"{metric}/gap_recovered_dips")
        cells = [f"{worst} {_num(s[f'{metric}/worst'])}", f"{wc} {_num(s[f'{metric}/wc'])}"]
        if depth is not None:
            cells.append(f"dip {_num(depth)} (deepest {_num(s[f'{metric}/gap_depth_max'])})")
            steps = s.get(f"{metric}/gap_recovery_steps")
            cells.append(f"half regained in {steps:.1f} steps ({recovered} of {dips} dips)"
                         if recovered else f"no dip regained half its depth ({dips} dips)")
        label = "stability" if not lines else ""
        lines.append(f"{label:<11}{LABELS.get(metric, metric)} " + " | ".join(cells))
    return lines


def print_report(results: dict) -> None:
    metric, names = results["metric"], results["task_names"]
    print()
    general = results.get("general")
    print(format_matrix(results["matrices"][metric], names, metric,
                        (results.get("baseline") or {}).get(metric), general))
    if metric != "accuracy" and "accuracy" in results["matrices"]:
        print()
        print(format_matrix(results["matrices"]["accuracy"], names, "accuracy",
                            (results.get("baseline") or {}).get("accuracy"), general))
    print()
    print(format_summary(results))
    print()
    print(f"results: {results['run_dir']}/results.json")
    if results.get("wandb_dir"):
        offline = results.get("wandb_mode", "offline") == "offline"
        hint = f"  (publish with: wandb sync {results['wandb_dir']})" if offline else ""
        print(f"W&B run: {results['wandb_dir']}{hint}")


def _cells(values, width: int) -> str:
    return "".join(f"{_num(v):>{width + 2}}" for v in values)


def _num(v) -> str:
    if v is None:
        return "n/a"
    return f"{v:.3f}" if abs(v) < 1000 else f"{v:.1f}"
