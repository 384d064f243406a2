"""One set of metric definitions for ``retain run``, ``compare`` and ``report``.

A results.json keeps its raw numbers (score matrices, the untrained row, the curves of
evaluation during training) beside the summary computed when the run ended. ``compare`` and
``report`` recompute the summary from those raw numbers with today's definitions
(``harness.core.metrics`` and ``harness.core.stability``), so runs written before a definition
changed are read the way new runs are: an old language-model run's arithmetic perplexity
average becomes the exponential of its mean log-loss, and a forward transfer that its setting
makes meaningless becomes n/a. Costs (times, memory, FLOPs) are taken as recorded.
"""

from __future__ import annotations

from harness.core.general import summary as general_summary
from harness.core.metrics import LOWER_IS_BETTER, fwt_note, summarize, summary_metric
from harness.core.stability import gap_summary

DERIVED = ("/avg", "/bwt", "/fwt", "/forgetting", "/worst", "/wc")  # and every "/gap_*"


def current_summary(run: dict) -> dict:
    """``run["summary"]`` with every metric recomputed from the run's raw numbers."""
    summary = dict(run.get("summary") or {})
    matrices = run.get("matrices")
    if not matrices:
        return summary
    for key in [k for k in summary if k.split("/")[0] in matrices
                and (k.endswith(DERIVED) or "/gap_" in k)]:
        del summary[key]  # e.g. perplexity/bwt, which today's definitions no longer give
    summary.update(summarize(matrices, run.get("baseline"), str(run.get("task")),
                             str(run.get("setting")), bool(run.get("pretrained"))))
    summary.update(gap_summary(run.get("curves"), LOWER_IS_BETTER)[0])
    summary.update(general_summary(run.get("general")))
    return summary


def run_summary_metric(run: dict) -> str:
    """What a run's summary is read on (bits per token for language models)."""
    metric = str(run.get("metric", "accuracy"))
    task = run.get("task") or ("lm" if metric in LOWER_IS_BETTER else "classification")
    per_byte = "bits_per_byte" in (run.get("matrices") or {})
    return run.get("summary_metric") or summary_metric(task, metric, per_byte)


def run_fwt_note(run: dict) -> str | None:
    """The stored note, or the one its task and setting imply (runs from before the note)."""
    if run.get("fwt_note"):
        return run["fwt_note"]
    return fwt_note(str(run.get("task")), str(run.get("setting")), bool(run.get("pretrained")))
