"""What a finished run records in ``results.json``: ``Results`` and its ``RunSummary``.

Written in one place (``RunDir.finish``, through ``Results.to_dict``) and read in one place
(``load_results``: ``retain run``'s "already complete", ``retain compare`` / ``report`` and the
sweep runner). The JSON layout is the one ``docs/architecture.md`` shows, plus ``format``: a
file without it is format 1, the same layout before the field. Reading checks every key, type
and shape, so a damaged or foreign file is one error naming the file, for every reader alike.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from harness.core.general import is_record
from harness.errors import UserError
from harness.experiment.schema import (
    Reader,
    dict_of,
    is_bool,
    is_dict,
    is_int,
    is_number,
    is_str,
    list_of,
    optional,
    table,
)

FORMAT = 2
READS = (1, 2)
REMEDY = "run it again with --restart, or move it out of the way"
COSTS = ("wall_time_s", "train_time_s", "eval_time_s", "peak_rss_mb", "strategy_memory_bytes",
         "parameters")
# Costs a run may not know: no evaluation during training, a task checkpointed before FLOPs
# or before trained parameters were counted
OPTIONAL_COSTS = ("curve_eval_time_s", "train_flops", "trained_parameters")


@dataclasses.dataclass
class RunSummary:
    """The summary metrics (W&B's run summary): scores, then what the run cost."""

    scores: dict[str, float | None]  # "<metric>/avg|bwt|fwt|forgetting" (core.metrics)
    wall_time_s: float
    train_time_s: float
    eval_time_s: float
    peak_rss_mb: float
    strategy_memory_bytes: int
    parameters: int
    curve_eval_time_s: float | None = None  # evaluation during training (eval.every_n_steps)
    train_flops: float | None = None  # forward + backward, harness.core.flops
    trained_parameters: int | None = None  # the most any task's optimizer held (adapters: few)

    def to_dict(self) -> dict:
        """Flat, as results.json holds it: score keys and cost keys side by side."""
        return {**self.scores, **{key: getattr(self, key) for key in COSTS + OPTIONAL_COSTS}}

    @classmethod
    def from_dict(cls, read: Reader, raw: dict) -> RunSummary:
        costs = {key: read.get(raw, key, is_number, "a number", prefix="summary.")
                 for key in COSTS}
        costs.update({key: read.get(raw, key, optional(is_number), "a number or null",
                                    prefix="summary.", default=None) for key in OPTIONAL_COSTS})
        scores = {key: value for key, value in raw.items()
                  if key not in COSTS + OPTIONAL_COSTS}
        for key in scores:
            read.get(scores, key, optional(is_number), "a number or null", prefix="summary.")
        return cls(scores=scores, **costs)


@dataclasses.dataclass
class Results:
    """A completed run: its identity, the score matrices, the summary, where it ran."""

    name: str
    run_dir: str | None
    config_hash: str
    config: dict
    model: str
    strategy: str  # "replay+distill"
    scenario: str
    seed: int
    task_names: list[str]
    setting: str  # class-il | domain-il | task-il
    task: str  # lm | classification
    metric: str  # the primary metric, a key of ``matrices``
    higher_is_better: bool
    matrices: dict[str, list[list[float]]]  # metric -> R[i][j], task_names square
    baseline: dict[str, list[float]] | None  # metric -> the untrained model's scores
    summary: RunSummary
    per_task: list[dict]  # one per task: steps, times, memory
    resumes: list[dict]  # where each resume started
    env: dict  # harness.experiment.environment
    # How the summary reads the scores (harness.core.metrics): LM averages on bits
    summary_metric: str | None = None
    pretrained: bool = False  # the model's weights predate the stream (forward transfer)
    fwt_note: str | None = None  # why forward transfer is n/a in this setting, if it is
    curves: dict | None = None  # evaluation during training (harness.core.curves)
    stability_gap: dict | None = None  # metric -> per task transition (core.stability)
    general: dict | None = None  # a held-out set's scores before and after each task

    def to_dict(self) -> dict:
        data = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        data["summary"] = self.summary.to_dict()
        return {"format": FORMAT, "status": "complete", **data}

    @classmethod
    def from_dict(cls, raw, path: Path) -> Results:
        read = Reader(path, REMEDY)
        raw = read.mapping(raw)
        version = read.get(raw, "format", is_int, "an integer", default=1)
        if version not in READS:
            read.fail(f"written by retain results format {version}; this version reads "
                      f"{READS[0]} to {READS[-1]}")
        read.get(raw, "status", lambda s: s == "complete", "'complete'")

        def get(key, check, what, **default):
            return read.get(raw, key, check, what, **default)

        names = get("task_names", list_of(is_str), "a list of strings")
        n = len(names)
        results = cls(
            name=get("name", is_str, "a string"),
            run_dir=get("run_dir", optional(is_str), "a string or null", default=None),
            config_hash=get("config_hash", is_str, "a string"),
            config=get("config", is_dict, "a mapping"),
            model=get("model", is_str, "a string"),
            strategy=get("strategy", is_str, "a string"),
            scenario=get("scenario", is_str, "a string"),
            seed=get("seed", is_int, "an integer"), task_names=names,
            setting=get("setting", is_str, "a string"), task=get("task", is_str, "a string"),
            metric=get("metric", is_str, "a string"),
            higher_is_better=get("higher_is_better", is_bool, "true or false"),
            matrices=get("matrices", dict_of(table(n, n)),
                         f"a mapping of {n} x {n} score matrices (one row and column per task)"),
            baseline=get("baseline", optional(dict_of(list_of(is_number, n))),
                         f"a mapping of {n} scores per metric, or null"),
            summary=RunSummary.from_dict(read, get("summary", is_dict, "a mapping")),
            per_task=get("per_task", list_of(is_dict, n), f"a list of {n} mappings"),
            resumes=get("resumes", list_of(is_dict), "a list of mappings", default=[]),
            env=get("env", is_dict, "a mapping"),
            summary_metric=get("summary_metric", optional(is_str), "a string or null",
                               default=None),
            pretrained=get("pretrained", is_bool, "true or false", default=False),
            fwt_note=get("fwt_note", optional(is_str), "a string or null", default=None),
            curves=get("curves", optional(is_dict), "a mapping or null", default=None),
            stability_gap=get("stability_gap", optional(dict_of(list_of(is_dict))),
                              "a mapping of lists of mappings, or null", default=None),
            general=get("general", optional(lambda g: is_record(g) and all(
                len(v) == n for v in g["after"].values())),
                f"a general-evaluation record (name, before, {n} scores after) or null",
                default=None))
        if results.metric not in results.matrices:
            read.fail(f"its primary metric {results.metric!r} has no matrix")
        return results


def load_results(path: Path | str) -> Results:
    """The completed run at ``path`` (a results.json or its run directory), checked."""
    path = Path(path)
    path = path / "results.json" if path.is_dir() else path
    try:
        raw = json.loads(path.read_text())
    except OSError as err:
        raise UserError(f"cannot read {path}: {err.strerror or err}") from None
    except (ValueError, RecursionError) as err:  # RecursionError: nested too deeply
        why = "nested too deeply" if isinstance(err, RecursionError) else str(err)
        raise UserError(f"{path}: not valid JSON ({why}); {REMEDY}") from None
    Reader(path, REMEDY).check_depth(raw)
    return Results.from_dict(raw, path)
