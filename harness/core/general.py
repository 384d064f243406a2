"""General-ability retention: a held-out set that is no task of the stream (a scenario's
``general``, e.g. ``scenario.general_eval`` of text-domains), scored before training and after
every task, as TRACE (Wang et al. 2023) reports the change of general ability beside forgetting.

Its record, in checkpoints and results.json::

    {"name": "bible", "before": {metric: score}, "after": {metric: [score after task i, ...]}}

and its summary (``summary``): ``<metric>/general`` after the last task and
``<metric>/general_delta``, that minus before (for perplexity and bits, above 0 is a loss).
"""

from __future__ import annotations

from harness.api import TaskData
from harness.core.evaluate import evaluate


class GeneralEval:
    """The general set's scores so far: before training, and after each finished task."""

    def __init__(self, name: str, data: TaskData):
        self.name, self.data = name, data
        self.before: dict[str, float] | None = None
        self.after: dict[str, list[float]] = {}

    def score(self, net, batch_size: int, precision: str, token_bytes=None,
              ticker=None) -> dict[str, float]:
        """The network's scores on the general set, ``{metric: score}``."""
        row = evaluate(net, [self.data], batch_size, precision, token_bytes, ticker)
        return {metric: scores[0] for metric, scores in row.items()}

    def add(self, scores: dict[str, float]) -> None:
        """Scores after the next task (``before`` first, if not yet scored)."""
        if self.before is None:
            self.before = scores
            return
        for metric, value in scores.items():
            self.after.setdefault(metric, []).append(value)

    def record(self) -> dict:
        return {"name": self.name, "before": self.before, "after": self.after}

    def load(self, record: dict | None) -> None:
        if record is not None:
            self.before, self.after = record["before"], record["after"]


def summary(record: dict | None) -> dict[str, float]:
    """``<metric>/general`` (after the last task) and ``<metric>/general_delta`` (minus
    before) for every metric the record holds; nothing before the first task ends."""
    if not record or not record.get("before"):
        return {}
    out = {}
    for metric, scores in (record.get("after") or {}).items():
        if scores and metric in record["before"]:
            out[f"{metric}/general"] = scores[-1]
            out[f"{metric}/general_delta"] = scores[-1] - record["before"][metric]
    return out


def is_record(value) -> bool:
    """The record's shape, for the checkpoint and results readers."""
    def scores(d, each):
        return isinstance(d, dict) and all(isinstance(k, str) and each(v) for k, v in d.items())

    def number(v):
        return isinstance(v, (int, float)) and not isinstance(v, bool)

    return (isinstance(value, dict) and isinstance(value.get("name"), str)
            and (value.get("before") is None or scores(value["before"], number))
            and scores(value.get("after"), lambda v: isinstance(v, (list, tuple))
                       and all(number(x) for x in v)))
