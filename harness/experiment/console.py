"""What a run prints at its end: the score matrix and the summary, as plain tables."""

from __future__ import annotations

SUMMARY_ROWS = [("avg", "average"), ("bwt", "backward transfer"), ("fwt", "forward transfer"),
                ("forgetting", "forgetting")]


def format_matrix(R: list[list[float]], names: list[str], metric: str,
                  baseline: list[float] | None = None) -> str:
    width = max(9, *(len(n) for n in names))
    head = f"{metric + ' after task':<{width + 12}}" + "".join(f"{n:>{width + 2}}" for n in names)
    lines = [head, "-" * len(head)]
    if baseline:
        lines.append(f"{'untrained':<{width + 12}}" + _cells(baseline, width))
    for i, row in enumerate(R):
        label = f"{i + 1}: {names[i]}"
        lines.append(f"{label:<{width + 12}}" + _cells(row, width))
    return "\n".join(lines)


def format_summary(results: dict) -> str:
    s = results["summary"]
    metrics = [results["metric"]] + [m for m in ("accuracy",) if m != results["metric"]]
    lines = []
    for metric in metrics:
        if f"{metric}/avg" not in s:
            continue
        cells = [f"{label} {_num(s[f'{metric}/{key}'])}" for key, label in SUMMARY_ROWS]
        lines.append(f"{metric:<11}" + " | ".join(cells))
    cost = (f"{'cost':<11}wall {s['wall_time_s']:.1f} s | train {s['train_time_s']:.1f} s | "
            f"eval {s['eval_time_s']:.1f} s | peak RSS {s['peak_rss_mb']:.0f} MB | "
            f"strategy memory {s['strategy_memory_bytes'] / 2**20:.2f} MB | "
            f"{s['parameters'] / 1e6:.2f} M parameters")
    return "\n".join(lines + [cost])


def print_report(results: dict) -> None:
    metric, names = results["metric"], results["task_names"]
    print()
    print(format_matrix(results["matrices"][metric], names, metric,
                        (results.get("baseline") or {}).get(metric)))
    if metric != "accuracy" and "accuracy" in results["matrices"]:
        print()
        print(format_matrix(results["matrices"]["accuracy"], names, "accuracy"))
    print()
    print(format_summary(results))
    print()
    print(f"results: {results['run_dir']}/results.json")
    if results.get("wandb_dir"):
        print(f"W&B run: {results['wandb_dir']}  (publish with: wandb sync {results['wandb_dir']})")


def _cells(values, width: int) -> str:
    return "".join(f"{_num(v):>{width + 2}}" for v in values)


def _num(v) -> str:
    if v is None:
        return "n/a"
    return f"{v:.3f}" if abs(v) < 1000 else f"{v:.1f}"
